/**
 * kay's host-key decision side by side with OpenSSH's own, over real handshakes: for every case the same
 * known_hosts files are given to `ssh -o BatchMode=yes` (OpenSSH 9.2) and to kay (a HostActor with its
 * KnownHostsStore), both dial the same real sshd on loopback, and their accept/refuse decisions — and, under
 * accept-new, whether each recorded the key — must be equal. The host keys the server offers depend on the order
 * each client asks for them in, so this also checks kay's order_hostkeyalgs.
 */
import { execFile } from 'node:child_process'
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
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import { hashKnownHostsName, KnownHostsStore } from '../../src/trust/known-hosts.js'
import type { HostStatus, Identity, StrictHostKeyChecking } from '../../src/types.js'
import { waitForStatus } from '../support/fixtures.js'

let dir: string
let client: ClientKey
let identity: Identity
/** Plain host keys only: the harness's ed25519 key plus ECDSA and RSA. */
let plain: SshdServer
/** ECDSA, RSA and a second ED25519 key, each with a host certificate from `ca` for the name 127.0.0.1. */
let certs: SshdServer
/** The same keys with certificates that expired. */
let expired: SshdServer
let k: {
  ed: string
  ec: string
  rsa: string
  otherEd: string
  otherEc: string
  ca: string
  otherCa: string
  certEc: string
  certEd: string
  certRsa: string
}

/** Lines of each file a case writes: user files (UserKnownHostsFile, in order) and global ones. */
interface Files {
  user?: string[]
  user2?: string[]
  global?: string[]
  global2?: string[]
}

interface Case {
  name: string
  server?: 'plain' | 'certs' | 'expired'
  files: (host: { h: string; a: string }) => Files
  policy?: StrictHostKeyChecking
  hostKeyAlias?: string
  /** Raw file contents instead of lines (BOM, CRLF). */
  raw?: (host: { h: string; a: string }) => string
}

async function sshDecision(s: SshdServer, c: Case, paths: Record<keyof Files, string>): Promise<boolean> {
  const args = [
    '-F',
    '/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'UpdateHostKeys=no',
    '-o',
    'CheckHostIP=no',
    '-o',
    `StrictHostKeyChecking=${c.policy ?? 'yes'}`,
    '-o',
    `UserKnownHostsFile=${paths.user} ${paths.user2}`,
    '-o',
    `GlobalKnownHostsFile=${paths.global} ${paths.global2}`,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'ConnectTimeout=20',
    '-i',
    client.privateKeyPath,
    '-p',
    String(s.port),
    ...(c.hostKeyAlias ? ['-o', `HostKeyAlias=${c.hostKeyAlias}`] : []),
    `${s.user}@${s.host}`,
    'true',
  ]
  return new Promise((resolve, reject) => {
    execFile('ssh', args, { timeout: 30_000 }, (err) => {
      if (!err) return resolve(true)
      const code = (err as { code?: unknown }).code
      // 255: ssh refused (host key); anything else (a timeout, a signal) is a broken test, not a decision.
      if (code === 255) resolve(false)
      else reject(err)
    })
  })
}

async function kayDecision(
  s: SshdServer,
  c: Case,
  paths: Record<keyof Files, string>,
  pins: string,
): Promise<HostStatus> {
  const store = new KnownHostsStore({
    path: pins,
    userFiles: [paths.user, paths.user2],
    globalFiles: [paths.global, paths.global2],
    policy: c.policy ?? 'yes',
  })
  const actor = new HostActor({
    target: {
      id: `case-${s.port}`,
      hostname: s.host,
      port: s.port,
      user: s.user,
      ...(c.hostKeyAlias ? { hostKeyAlias: c.hostKeyAlias } : {}),
    },
    identity,
    verifier: store,
    dialGate: new LocalDialGate(),
    backoff: { baseMs: 60_000, capMs: 60_000 },
    handshakeTimeoutMs: 20_000,
  })
  try {
    actor.start()
    return await waitForStatus(
      actor,
      (st) => st.state === 'ready' || st.state === 'quarantined' || st.state === 'backoff',
      30_000,
      'a decision',
    )
  } finally {
    await actor.close()
  }
}

let caseNo = 0

/** Run one case through both clients; returns both outcomes. */
async function compare(c: Case) {
  const s = { plain, certs, expired }[c.server ?? 'plain']
  const host = { h: `[${s.host}]:${s.port}`, a: s.host }
  const base = join(dir, `case${caseNo++}`)
  const files = c.files(host)
  const sides: Record<'ssh' | 'kay', Record<keyof Files, string>> = { ssh: {} as never, kay: {} as never }
  for (const side of ['ssh', 'kay'] as const) {
    await mkdir(join(base, side), { recursive: true })
    for (const f of ['user', 'user2', 'global', 'global2'] as const) {
      const p = join(base, side, f)
      const text = f === 'user' && c.raw ? c.raw(host) : (files[f] ?? []).map((l) => `${l}\n`).join('')
      await writeFile(p, text)
      sides[side][f] = p
    }
  }
  const before = await readFile(sides.ssh.user)
  const pins = join(base, 'kay', 'pins')
  const [sshOk, kay] = await Promise.all([sshDecision(s, c, sides.ssh), kayDecision(s, c, sides.kay, pins)])
  const sshWrote = !(await readFile(sides.ssh.user)).equals(before)
  const kayWrote = await stat(pins).then(
    (st) => st.size > 0,
    () => false,
  )
  return { sshOk, kayOk: kay.state === 'ready', kayError: kay.lastError?.code, sshWrote, kayWrote }
}

const line = (name: string, key: string) => `${name} ${key}`

/** Every case; ssh's answer is what kay must give. Comments say what ssh does. */
const CASES: Case[] = [
  { name: 'no entry at all', files: () => ({}) },
  { name: '[host]:port holds the ED25519 key', files: ({ h }) => ({ user: [line(h, k.ed)] }) },
  { name: '[host]:port holds another ED25519 key', files: ({ h }) => ({ user: [line(h, k.otherEd)] }) },
  { name: 'only the port-less name holds the key (fallback)', files: ({ a }) => ({ user: [line(a, k.ed)] }) },
  { name: 'the port-less name holds another key', files: ({ a }) => ({ user: [line(a, k.otherEd)] }) },
  {
    name: 'the port-less name holds the ECDSA key (ordering looks at [host]:port only)',
    files: ({ a }) => ({ user: [line(a, k.ec)] }),
  },
  { name: 'only the ECDSA key is known: asked for first', files: ({ h }) => ({ user: [line(h, k.ec)] }) },
  { name: 'only the RSA key is known: asked for first', files: ({ h }) => ({ user: [line(h, k.rsa)] }) },
  { name: 'only another host’s ECDSA key is known', files: ({ h }) => ({ user: [line(h, k.otherEc)] }) },
  {
    name: 'the RSA key and a wrong ED25519 key (ED25519 asked for: changed)',
    files: ({ h }) => ({ user: [line(h, k.rsa), line(h, k.otherEd)] }),
  },
  {
    name: 'the ED25519 key and a wrong ECDSA key',
    files: ({ h }) => ({ user: [line(h, k.otherEc), line(h, k.ed)] }),
  },
  { name: 'hashed [host]:port', files: ({ h }) => ({ user: [line(hashKnownHostsName(h), k.ed)] }) },
  { name: 'hashed port-less name', files: ({ a }) => ({ user: [line(hashKnownHostsName(a), k.ed)] }) },
  {
    name: 'hashed [host]:port with another key',
    files: ({ h }) => ({ user: [line(hashKnownHostsName(h), k.otherEd)] }),
  },
  { name: 'a byte-order mark before the first entry', files: () => ({}), raw: ({ h }) => `\ufeff${line(h, k.ed)}\n` },
  {
    name: 'a byte-order mark before a comment, the entry after it',
    files: () => ({}),
    raw: ({ h }) => `\ufeff# known hosts\n${line(h, k.ed)}\n`,
  },
  { name: 'CRLF line ends', files: () => ({}), raw: ({ h }) => `# crlf\r\n${line(h, k.ed)}\r\n` },
  { name: 'tab-separated fields', files: () => ({}), raw: ({ h }) => `${h}\t${k.ed.replace(' ', '\t')}\n` },
  {
    name: '@revoked * for the key, and a plain entry',
    files: ({ h }) => ({ user: [`@revoked * ${k.ed}`, line(h, k.ed)] }),
  },
  { name: '@revoked for another key', files: ({ h }) => ({ user: [`@revoked * ${k.otherEd}`, line(h, k.ed)] }) },
  { name: '@revoked under the port-less name, strict', files: ({ a }) => ({ user: [`@revoked ${a} ${k.ed}`] }) },
  { name: 'the second user file (known_hosts2)', files: ({ h }) => ({ user2: [line(h, k.ed)] }) },
  { name: 'the global file', files: ({ h }) => ({ global: [line(h, k.ed)] }) },
  { name: 'the second global file (ssh_known_hosts2)', files: ({ h }) => ({ global2: [line(h, k.ed)] }) },
  {
    name: 'a wrong key in the user file, the right one in the global file',
    files: ({ h }) => ({ user: [line(h, k.otherEd)], global: [line(h, k.ed)] }),
  },
  { name: 'HostKeyAlias names the entry', hostKeyAlias: 'web1', files: () => ({ user: [line('web1', k.ed)] }) },
  {
    name: 'HostKeyAlias: the [host]:port entry no longer counts',
    hostKeyAlias: 'web1',
    files: ({ h }) => ({ user: [line(h, k.ed)] }),
  },
  {
    name: 'HostKeyAlias matches an upper-case entry',
    hostKeyAlias: 'Web1',
    files: () => ({ user: [line('WEB1', k.ed)] }),
  },
  {
    name: 'HostKeyAlias: the ECDSA key known under the alias is asked for first',
    hostKeyAlias: 'web1',
    files: () => ({ user: [line('web1', k.ec)] }),
  },
  {
    name: 'HostKeyAlias: no port-less fallback',
    hostKeyAlias: 'web1',
    files: ({ a }) => ({ user: [line(a, k.ed)] }),
  },
  { name: 'a wildcard [127.0.0.*]:*', files: () => ({ user: [line('[127.0.0.*]:*', k.ed)] }) },
  {
    name: 'a negated pattern excludes the host',
    files: ({ h }) => ({ user: [line(`[127.0.0.*]:*,!${h}`, k.ed)] }),
  },
  { name: '@cert-authority is not a host key', files: () => ({ user: [`@cert-authority * ${k.ed}`] }) },
  {
    name: 'a key type field that does not match the key',
    files: ({ h }) => ({ user: [`${h} ssh-rsa ${k.ed.split(' ')[1]}`] }),
  },
  { name: 'accept-new, nothing known: both record the key', policy: 'accept-new', files: () => ({}) },
  {
    name: 'accept-new, known under the port-less name: neither records a duplicate',
    policy: 'accept-new',
    files: ({ a }) => ({ user: [line(a, k.ed)] }),
  },
  {
    name: 'accept-new, known in the global file: nothing recorded',
    policy: 'accept-new',
    files: ({ h }) => ({ global: [line(h, k.ed)] }),
  },
  {
    name: 'accept-new, another key under the port-less name: [host]:port is new',
    policy: 'accept-new',
    files: ({ a }) => ({ user: [line(a, k.otherEd)] }),
  },
  { name: 'accept-new, a changed key', policy: 'accept-new', files: ({ h }) => ({ user: [line(h, k.otherEd)] }) },
  {
    name: 'accept-new, another type known only: changed, not new',
    policy: 'accept-new',
    files: ({ h }) => ({ user: [line(h, k.otherEc)] }),
  },
  // Host certificates.
  {
    name: 'certificate: @cert-authority * holds its CA',
    server: 'certs',
    policy: 'accept-new',
    files: () => ({ user: [`@cert-authority * ${k.ca}`] }),
  },
  {
    name: 'certificate: the CA line names the port-less host',
    server: 'certs',
    files: ({ a }) => ({ user: [`@cert-authority ${a} ${k.ca}`] }),
  },
  {
    name: 'certificate: the CA line names another host',
    server: 'certs',
    files: () => ({ user: [`@cert-authority *.example.com ${k.ca}`] }),
  },
  {
    name: 'certificate: another CA, strict',
    server: 'certs',
    files: () => ({ user: [`@cert-authority * ${k.otherCa}`] }),
  },
  {
    name: 'certificate: another CA, accept-new records the plain key',
    server: 'certs',
    policy: 'accept-new',
    files: () => ({ user: [`@cert-authority * ${k.otherCa}`] }),
  },
  {
    name: 'certificate: the name (HostKeyAlias) is not a principal',
    server: 'certs',
    hostKeyAlias: 'web1',
    files: () => ({ user: [`@cert-authority * ${k.ca}`] }),
  },
  {
    name: 'certificate: the CA is @revoked',
    server: 'certs',
    files: () => ({ user: [`@cert-authority * ${k.ca}`, `@revoked * ${k.ca}`] }),
  },
  {
    name: 'certificate: the host’s key is @revoked',
    server: 'certs',
    files: () => ({ user: [`@cert-authority * ${k.ca}`, `@revoked * ${k.certEd}`] }),
  },
  {
    name: 'certificate: expired',
    server: 'expired',
    files: () => ({ user: [`@cert-authority * ${k.ca}`] }),
  },
  {
    name: 'certificate: expired, but the plain key is known',
    server: 'expired',
    files: ({ h }) => ({ user: [`@cert-authority * ${k.ca}`, line(h, k.certEd)] }),
  },
]

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-kh-ssh-'))
  client = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [client.privateKeyPath], agent: 'none' })
  const gen = (name: string, type: 'ed25519' | 'ecdsa' | 'rsa' = 'ed25519') => keygen(dir, name, type)
  const [ec, rsa, otherEd, otherEc, ca, otherCa, certEd, certEc, certRsa] = await Promise.all([
    gen('host_ecdsa', 'ecdsa'),
    gen('host_rsa', 'rsa'),
    gen('other_ed25519'),
    gen('other_ecdsa', 'ecdsa'),
    gen('ca'),
    gen('other_ca'),
    gen('cert_ed25519'),
    gen('cert_ecdsa', 'ecdsa'),
    gen('cert_rsa', 'rsa'),
  ])
  plain = await startSshd({
    authorizedKeys: [client.publicKey],
    extraConfig: [`HostKey ${ec.path}`, `HostKey ${rsa.path}`],
  })
  // Valid certificates and expired ones for the same keys, in two directories.
  const certFiles = async (sub: string, validity: string) => {
    await mkdir(join(dir, sub))
    const out: string[] = []
    for (const key of [certEc, certRsa, certEd] as KeyFiles[]) {
      const copy = join(dir, sub, key.path.split('/').pop() as string)
      await copyFile(key.path, copy)
      await copyFile(key.pubPath, `${copy}.pub`)
      const cert = await signCert(
        ca,
        { ...key, path: copy, pubPath: `${copy}.pub` },
        { principals: '127.0.0.1', validity },
      )
      out.push(`HostKey ${copy}`, `HostCertificate ${cert.path}`)
    }
    return out
  }
  certs = await startSshd({ authorizedKeys: [client.publicKey], extraConfig: await certFiles('valid', '-5m:+1d') })
  expired = await startSshd({
    authorizedKeys: [client.publicKey],
    extraConfig: await certFiles('expired', '20200101000000:20200102000000'),
  })
  k = {
    ed: lineOf(plain.hostKeyPublic).line,
    ec: ec.line,
    rsa: rsa.line,
    otherEd: otherEd.line,
    otherEc: otherEc.line,
    ca: ca.line,
    otherCa: otherCa.line,
    certEd: certEd.line,
    certEc: certEc.line,
    certRsa: certRsa.line,
  }
}, 60_000)

afterAll(async () => {
  await Promise.all([plain?.stop(), certs?.stop(), expired?.stop()])
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('kay decides as ssh does (OpenSSH 9.2, BatchMode, real handshakes)', { timeout: 120_000 }, () => {
  it('has at least 25 cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(25)
  })

  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const r = await compare(c)
    expect({ accepted: r.kayOk, recorded: r.kayWrote }).toEqual({ accepted: r.sshOk, recorded: r.sshWrote })
    // A refusal is a host-key refusal, never a connection or auth problem.
    if (!r.kayOk) expect(r.kayError).toMatch(/^KAY_HOST_(KEY|CERT|CA)_/)
  })

  it('refuses a certificate problem with its own typed error', async () => {
    const codes = await Promise.all(
      [
        CASES.find((c) => c.name === 'certificate: expired'),
        CASES.find((c) => c.name === 'certificate: the name (HostKeyAlias) is not a principal'),
        CASES.find((c) => c.name === 'certificate: the CA is @revoked'),
      ].map(async (c) => (await compare(c as Case)).kayError),
    )
    expect(codes).toEqual(['KAY_HOST_CERT_EXPIRED', 'KAY_HOST_CERT_PRINCIPAL', 'KAY_HOST_CA_REVOKED'])
  })
})

describe('where kay is stricter than ssh (documented in known-hosts.ts)', { timeout: 120_000 }, () => {
  it('a key @revoked under the port-less name: ssh under accept-new records it, kay refuses', async () => {
    const r = await compare({
      name: 'revoked port-less, accept-new',
      policy: 'accept-new',
      files: ({ a }) => ({ user: [`@revoked ${a} ${k.ed}`] }),
    })
    expect(r).toMatchObject({ sshOk: true, sshWrote: true, kayOk: false, kayWrote: false })
    expect(r.kayError).toBe('KAY_HOST_KEY_REVOKED')
  })

  it('an expired certificate from a trusted CA: ssh under accept-new records the plain key, kay refuses', async () => {
    const r = await compare({
      name: 'expired, accept-new',
      server: 'expired',
      policy: 'accept-new',
      files: () => ({ user: [`@cert-authority * ${k.ca}`] }),
    })
    expect(r).toMatchObject({ sshOk: true, sshWrote: true, kayOk: false, kayWrote: false })
    expect(r.kayError).toBe('KAY_HOST_CERT_EXPIRED')
  })
})
