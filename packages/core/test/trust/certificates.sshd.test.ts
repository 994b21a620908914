/**
 * SSH certificates against real OpenSSH sshd on loopback, through the actor kay runs per host:
 * - host certificates (sshd HostCertificate) trusted through `@cert-authority` with no pin written;
 * - user certificates (sshd TrustedUserCAKeys) from a file beside the key, from CertificateFile, and from a real
 *   ssh-agent (the certificate in the agent, or only its key), for ED25519, ECDSA and RSA keys;
 * - a plain key still logs in beside them.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import {
  type ClientKey,
  type KeyFiles,
  keygen,
  lineOf,
  makeClientKey,
  requireSshd,
  type SshdServer,
  signCert,
  startSshd,
  until,
} from '../../src/testing/index.js'
import { clearKeyCache, type LoadIdentityOptions, loadIdentity } from '../../src/trust/keys.js'
import { fingerprint, KnownHostsStore } from '../../src/trust/known-hosts.js'
import type { HostKeyVerifier, HostStatus, HostTarget } from '../../src/types.js'
import { waitForStatus } from '../support/fixtures.js'

let dir: string
let hostCa: KeyFiles
let userCa: KeyFiles
/** Authorized in authorized_keys: the plain-key login. */
let plainKey: ClientKey
let sshd: SshdServer
let agent: ChildProcess | undefined
let agentSock: string

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, ...env } }, (err, _o, stderr) =>
      err ? reject(new Error(`${cmd}: ${stderr || err.message}`)) : resolve(),
    )
  })
}

/** A fresh user key in its own directory, with a user certificate for `kaytest` beside it (`<key>-cert.pub`). */
async function certifiedUserKey(name: string, type: 'ed25519' | 'ecdsa' | 'rsa', principals = 'kaytest') {
  const sub = join(dir, name)
  await mkdir(sub)
  const key = await keygen(sub, 'id', type)
  const cert = await signCert(userCa, key, { host: false, principals, validity: '-5m:+1h', id: `user-${name}` })
  return { key, cert }
}

const target = (): HostTarget => ({ id: 'certhost', hostname: sshd.host, port: sshd.port, user: sshd.user })

/** Dial once with this identity and store; the status it settles in, and the sshd log lines it added. */
async function dial(
  identity: LoadIdentityOptions,
  store: HostKeyVerifier = new KnownHostsStore({
    path: join(dir, 'unused-pins'),
    userFiles: [caFile()],
    globalFiles: [],
  }),
): Promise<{ status: HostStatus; log: string }> {
  const before = (await sshd.log()).length
  const a = new HostActor({
    target: target(),
    identity: loadIdentity(identity),
    verifier: store,
    dialGate: new LocalDialGate(),
    backoff: { baseMs: 60_000, capMs: 60_000 },
  })
  try {
    a.start()
    const status = await waitForStatus(a, (s) => s.state !== 'dialing' && s.state !== 'idle', 20_000, 'a decision')
    if (status.state === 'ready') expect((await a.run('echo ok')).stdout).toBe('ok\n')
    return { status, log: (await sshd.log()).slice(before) }
  } finally {
    await a.close()
  }
}

const caFile = () => join(dir, 'ca_known_hosts')

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-cert-sshd-'))
  hostCa = await keygen(dir, 'host_ca')
  userCa = await keygen(dir, 'user_ca', 'ecdsa')
  plainKey = await makeClientKey(dir, 'plain')
  const hostKey = await keygen(dir, 'host_ed25519')
  const hostCert = await signCert(hostCa, hostKey, { principals: '127.0.0.1', validity: '-5m:+1d', id: 'host' })
  sshd = await startSshd({
    authorizedKeys: [plainKey.publicKey],
    extraConfig: [`HostKey ${hostKey.path}`, `HostCertificate ${hostCert.path}`, `TrustedUserCAKeys ${userCa.pubPath}`],
  })
  await writeFile(caFile(), `@cert-authority * ${hostCa.line}\n`)
  agentSock = join(dir, 'agent.sock')
  agent = spawn('ssh-agent', ['-D', '-a', agentSock], { stdio: 'ignore' })
  await until('agent socket', () => existsSync(agentSock), 5000)
})

afterAll(async () => {
  await sshd?.stop()
  if (agent?.pid && agent.exitCode === null) process.kill(agent.pid, 'SIGTERM')
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('host certificates against real sshd (HostCertificate)', { timeout: 60_000 }, () => {
  it('connects through @cert-authority under accept-new and writes no pin', async () => {
    const pins = join(dir, 'pins-ca', 'known_hosts')
    const store = new KnownHostsStore({ path: pins, userFiles: [caFile()], globalFiles: [], policy: 'accept-new' })
    const verdicts: string[] = []
    const spy: HostKeyVerifier = {
      verify: async (t, key) => {
        const v = await store.verify(t, key)
        verdicts.push(v.kind === 'trusted' ? `trusted:${v.source?.kind}` : v.kind)
        return v
      },
      preferredHostKeyAlgorithms: (t) => store.preferredHostKeyAlgorithms(t),
    }
    const { status } = await dial({ username: 'kaytest', identityFiles: [plainKey.privateKeyPath], agent: 'none' }, spy)
    expect(status.state).toBe('ready')
    expect(verdicts).toEqual(['trusted:ca'])
    await expect(stat(pins)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('with no CA line, pins the certified key (as ssh does) and trusts it next time', async () => {
    const pins = join(dir, 'pins-noca', 'known_hosts')
    const store = () => new KnownHostsStore({ path: pins, userFiles: [], globalFiles: [], policy: 'accept-new' })
    const id = { username: 'kaytest', identityFiles: [plainKey.privateKeyPath], agent: 'none' }
    expect((await dial(id, store())).status.state).toBe('ready')
    const pinned = await readFile(pins, 'utf8')
    const hostKey = lineOf(await readFile(join(dir, 'host_ed25519.pub'), 'utf8'))
    expect(pinned).toBe(`certhost,[${sshd.host}]:${sshd.port} ${hostKey.line}\n`)
    expect((await dial(id, store())).status.state).toBe('ready')
    expect(await readFile(pins, 'utf8')).toBe(pinned)
    expect(fingerprint(hostKey.blob)).toMatch(/^SHA256:/)
  })
})

describe('user certificates against real sshd (TrustedUserCAKeys)', { timeout: 60_000 }, () => {
  it.each(['ed25519', 'ecdsa', 'rsa'] as const)('logs in with a %s certificate beside its key file', async (type) => {
    clearKeyCache()
    const { key } = await certifiedUserKey(`beside-${type}`, type)
    const { status, log } = await dial({ username: 'kaytest', identityFiles: [key.path], agent: 'none' })
    expect(status.state).toBe('ready')
    expect(log).toContain(`Accepted certificate ID "user-beside-${type}"`)
  })

  it('logs in with a CertificateFile kept elsewhere, offered before the plain keys', async () => {
    clearKeyCache()
    const { key, cert } = await certifiedUserKey('certfile', 'ed25519')
    const elsewhere = join(dir, 'certs-elsewhere.pub')
    await copyFile(cert.path, elsewhere)
    await rm(cert.path)
    const { status, log } = await dial({
      username: 'kaytest',
      identityFiles: [plainKey.privateKeyPath, key.path],
      certificateFiles: [elsewhere],
      agent: 'none',
    })
    // The plain key is authorized and listed first: the certificate logging in shows it was offered before it.
    expect(status.state).toBe('ready')
    expect(log).toContain('Accepted certificate ID "user-certfile"')
    expect(log).toMatch(/Accepted publickey for kaytest .* ED25519-CERT /)
  })

  it('logs in from ssh-agent holding a key and its certificate (no key file at all)', async () => {
    clearKeyCache()
    const { key } = await certifiedUserKey('agent-both', 'ecdsa')
    await run('ssh-add', ['-q', key.path], { SSH_AUTH_SOCK: agentSock })
    try {
      const { status, log } = await dial({
        username: 'kaytest',
        identityFiles: [],
        defaultIdentityFiles: [],
        agent: agentSock,
      })
      expect(status.state).toBe('ready')
      expect(log).toContain('Accepted certificate ID "user-agent-both"')
    } finally {
      await run('ssh-add', ['-q', '-D'], { SSH_AUTH_SOCK: agentSock })
    }
  })

  it('logs in with the certificate beside a passphrase-protected key whose key only the agent holds', async () => {
    clearKeyCache()
    const { key } = await certifiedUserKey('agent-key', 'rsa')
    // The agent gets the key alone (a copy without its certificate beside it); the file gets a passphrase.
    const bare = join(dir, 'agent-key-bare')
    await copyFile(key.path, bare)
    await run('ssh-add', ['-q', bare], { SSH_AUTH_SOCK: agentSock })
    await run('ssh-keygen', ['-q', '-p', '-N', 'secret', '-f', key.path])
    try {
      const id = await loadIdentity({ username: 'kaytest', identityFiles: [key.path], agent: agentSock })
      expect(id.keys).toHaveLength(0)
      expect(id.agentCertificates).toHaveLength(1)
      const { status, log } = await dial({ username: 'kaytest', identityFiles: [key.path], agent: agentSock })
      expect(status.state).toBe('ready')
      expect(log).toContain('Accepted certificate ID "user-agent-key"')
    } finally {
      await run('ssh-add', ['-q', '-D'], { SSH_AUTH_SOCK: agentSock })
    }
  })

  it('still logs in with a plain key beside them; a certificate for another user is refused by sshd', async () => {
    clearKeyCache()
    const plain = await dial({ username: 'kaytest', identityFiles: [plainKey.privateKeyPath], agent: 'none' })
    expect(plain.status.state).toBe('ready')
    expect(plain.log).toMatch(/Accepted publickey for kaytest .* ED25519 /)
    const { key } = await certifiedUserKey('wrong-user', 'ed25519', 'someone-else')
    const refused = await dial({ username: 'kaytest', identityFiles: [key.path], agent: 'none' })
    expect(refused.status.state).toBe('backoff')
    expect(refused.status.lastError?.code).toBe('KAY_AUTH_FAILED')
    expect(refused.status.lastError?.details).toMatchObject({ keysTried: [key.path, `${key.path}-cert.pub`] })
  })
})
