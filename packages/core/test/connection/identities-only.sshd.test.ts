/**
 * IdentitiesOnly against a real ssh-agent and a real sshd: an agent full of keys must not be offered key by key
 * when the host's config names the one to use (each refused key counts against the server's MaxAuthTries).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { type ClientKey, makeClientKey, SSHD_LOG, type SshdServer, startSshd, until } from '../../src/testing/index.js'
import { clearKeyCache, loadIdentity } from '../../src/trust/keys.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

let dir: string
let sock: string
let agent: ChildProcess
/** Not authorized on the server; added to the agent first, so the agent offers it first. */
const others: ClientKey[] = []
/** Authorized; its file is passphrase-protected, so it can only be used through the agent. */
let wanted: ClientKey
let sshd: SshdServer

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, ...env } }, (err, _o, stderr) =>
      err ? reject(new Error(`${cmd}: ${stderr || err.message}`)) : resolve(),
    )
  })
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-idonly-'))
  sock = join(dir, 'agent.sock')
  agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' })
  await until('agent socket', () => existsSync(sock), 5000)
  for (const name of ['other1', 'other2', 'other3']) {
    const k = await makeClientKey(dir, name)
    await run('ssh-add', ['-q', k.privateKeyPath], { SSH_AUTH_SOCK: sock })
    others.push(k)
  }
  wanted = await makeClientKey(dir, 'wanted')
  await run('ssh-add', ['-q', wanted.privateKeyPath], { SSH_AUTH_SOCK: sock })
  await run('ssh-keygen', ['-q', '-p', '-N', 'secret', '-f', wanted.privateKeyPath])
  clearKeyCache()
  sshd = await startSshd({ authorizedKeys: [wanted.publicKey] })
})

afterAll(async () => {
  await sshd?.stop()
  if (agent?.pid && agent.exitCode === null) agent.kill('SIGTERM')
  await rm(dir, { recursive: true, force: true })
})

async function login(identitiesOnly: boolean): Promise<{ failed: number; accepted: number }> {
  const failed0 = await sshd.count(SSHD_LOG.failedAuth)
  const accepted0 = await sshd.count(SSHD_LOG.acceptedPublickey)
  const identity = await loadIdentity({
    username: sshd.user,
    identityFiles: [wanted.privateKeyPath],
    agent: sock,
    identitiesOnly,
  })
  expect(identity.keys).toHaveLength(0) // passphrase-protected: only the agent can sign with it
  const a = new HostActor({
    target: { id: 'h', hostname: sshd.host, port: sshd.port, user: sshd.user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
  })
  try {
    a.start()
    await waitForState(a, 'ready')
    expect((await a.run('echo ok')).stdout).toBe('ok\n')
  } finally {
    await a.close()
  }
  const accepted = (await sshd.waitForCount(SSHD_LOG.acceptedPublickey, accepted0 + 1)) - accepted0
  return { failed: (await sshd.count(SSHD_LOG.failedAuth)) - failed0, accepted }
}

describe('IdentitiesOnly with ssh-agent, real sshd', () => {
  it('offers every agent key without it: the refused ones show in the sshd log', async () => {
    const r = await login(false)
    expect(r.accepted).toBe(1)
    expect(r.failed).toBe(others.length)
  })

  it('offers only the agent key matching the IdentityFile (through its .pub) with it', async () => {
    const identity = await loadIdentity({
      username: sshd.user,
      identityFiles: [wanted.privateKeyPath],
      agent: sock,
      identitiesOnly: true,
    })
    expect(identity.agentKeys).toHaveLength(1)
    const r = await login(true)
    expect(r.accepted).toBe(1)
    expect(r.failed).toBe(0)
  })

  it('offers no agent key when no configured file matches one', async () => {
    const identity = await loadIdentity({
      username: sshd.user,
      identityFiles: [join(dir, 'no-such-key')],
      skipMissing: true,
      agent: sock,
      identitiesOnly: true,
    })
    expect(identity.agentKeys).toEqual([])
    const a = new HostActor({
      target: { id: 'h2', hostname: sshd.host, port: sshd.port, user: sshd.user },
      identity,
      verifier: memoryVerifier(),
      dialGate: new LocalDialGate(),
      backoff: { baseMs: 60_000, capMs: 60_000 },
    })
    try {
      a.start()
      await waitForState(a, 'backoff')
      expect(a.status().lastError?.code).toBe('KAY_AUTH_FAILED')
      expect(a.status().lastError?.details).toMatchObject({ keysTried: [] })
    } finally {
      await a.close()
    }
  })
})
