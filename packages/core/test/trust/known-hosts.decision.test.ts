/**
 * The known_hosts decision as OpenSSH 9.2 makes it (check_host_key, order_hostkeyalgs), with certificates from
 * ssh-keygen and an injected clock. The same cases against real `ssh` are in known-hosts.ssh.test.ts.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type KeyFiles, keygen, signCert } from '../../src/testing/index.js'
import {
  DEFAULT_HOST_KEY_ALGORITHMS,
  fingerprint,
  hashKnownHostsName,
  KnownHostsStore,
  type KnownHostsStoreOptions,
  type KnownHostsTarget,
  parseKnownHosts,
  verdictError,
} from '../../src/trust/known-hosts.js'

let dir: string
let ed: KeyFiles
let ed2: KeyFiles
let ec: KeyFiles
let rsa: KeyFiles
let ca: KeyFiles
let ca2: KeyFiles
let n = 0

const WINDOW = '20300101000000:20300201000000'
const IN_WINDOW = Date.UTC(2030, 0, 15)

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-khd-'))
  ed = await keygen(dir, 'ed')
  ed2 = await keygen(dir, 'ed2')
  ec = await keygen(dir, 'ec', 'ecdsa')
  rsa = await keygen(dir, 'rsa', 'rsa')
  ca = await keygen(dir, 'ca')
  ca2 = await keygen(dir, 'ca2', 'ecdsa')
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** A store over one user known_hosts file holding `lines`, an empty pin file, the clock at IN_WINDOW. */
async function storeWith(lines: string[], opts: KnownHostsStoreOptions = {}) {
  const base = join(dir, `c${n++}`)
  await mkdir(base)
  const user = join(base, 'known_hosts')
  await writeFile(user, lines.map((l) => `${l}\n`).join(''))
  const store = new KnownHostsStore({
    path: join(base, 'pins'),
    userFiles: [user],
    globalFiles: [],
    clock: { now: () => IN_WINDOW },
    ...opts,
  })
  return { store, base, user }
}

const t = (hostname: string, port = 22, extra: Partial<KnownHostsTarget> = {}): KnownHostsTarget => ({
  id: `${hostname}:${port}`,
  hostname,
  port,
  ...extra,
})

describe('names and files, as ssh reads them', () => {
  it('on a port other than 22 accepts a port-less entry holding the key, and pins nothing', async () => {
    const { store } = await storeWith([`web1 ${ed.line}`])
    expect(await store.verify(t('web1', 2222), ed.blob)).toMatchObject({
      kind: 'trusted',
      source: { kind: 'known-hosts', hosts: ['web1'] },
    })
    await expect(stat(store.path)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('a port-less entry with another key does not vouch: [host]:port is new (pinned under accept-new)', async () => {
    const { store } = await storeWith([`web1 ${ed2.line}`])
    expect((await store.verify(t('web1', 2222, { strictHostKeyChecking: 'yes' }), ed.blob)).kind).toBe('unknown')
    expect((await store.verify(t('web1', 2222), ed.blob)).kind).toBe('pinned')
  })

  it('HostKeyAlias replaces the name, is lower-cased, and turns the port-less fallback off', async () => {
    const { store } = await storeWith([`web1 ${ed.line}`, `myalias ${ec.line}`])
    const strict = { strictHostKeyChecking: 'yes' as const }
    expect((await store.verify(t('web1', 2222, { ...strict, hostKeyAlias: 'other' }), ed.blob)).kind).toBe('unknown')
    expect((await store.verify(t('10.0.0.9', 2222, { ...strict, hostKeyAlias: 'MyAlias' }), ec.blob)).kind).toBe(
      'trusted',
    )
  })

  it('ignores a line that a byte-order mark starts, as ssh does', async () => {
    const { store } = await storeWith([`\ufeffweb1 ${ed.line}`, `# fine`])
    expect((await store.verify(t('web1', 22, { strictHostKeyChecking: 'yes' }), ed.blob)).kind).toBe('unknown')
    const { store: s2 } = await storeWith([`# first`, `web1 ${ed.line}`])
    expect((await s2.verify(t('web1'), ed.blob)).kind).toBe('trusted')
  })

  it('reads CRLF files, tab-separated fields and uppercase patterns; skips keys ssh cannot read', async () => {
    const badEd = `ssh-ed25519 ${Buffer.concat([ed.blob, Buffer.from([0])]).toString('base64')}`
    const parsed = parseKnownHosts(`WEB1\t${ed.line}\r\nweb2 ${badEd}\n@cert-authority\t* ${ca.line}\n`)
    expect(parsed.entries.map((e) => e.patterns[0])).toEqual(['WEB1'])
    expect(parsed.malformed).toBe(2)
    const { store } = await storeWith([`WEB1\t${ed.line}\r`])
    expect((await store.verify(t('web1'), ed.blob)).kind).toBe('trusted')
  })

  it('reads ~/.ssh/known_hosts2 and /etc-style global files by default, each as ssh names them', async () => {
    const home = join(dir, `home${n++}`)
    await mkdir(join(home, '.ssh'), { recursive: true })
    await writeFile(join(home, '.ssh', 'known_hosts2'), `[h2]:2200 ${ed.line}\n`)
    const global = join(home, 'ssh_known_hosts')
    await writeFile(global, `g1 ${ec.line}\n`)
    const store = new KnownHostsStore({ path: join(home, 'pins'), homeDir: home, globalFiles: [global] })
    expect(await store.verify(t('h2', 2200), ed.blob)).toMatchObject({
      kind: 'trusted',
      source: { file: join(home, '.ssh', 'known_hosts2') },
    })
    expect(await store.verify(t('g1'), ec.blob)).toMatchObject({ kind: 'trusted', source: { file: global } })
    // The host's own lists (ssh_config UserKnownHostsFile / GlobalKnownHostsFile) replace the defaults.
    expect(
      (await store.verify(t('g1', 22, { globalKnownHostsFiles: [], strictHostKeyChecking: 'yes' }), ec.blob)).kind,
    ).toBe('unknown')
  })
})

describe('keys of other types and revocation', () => {
  it('refuses a key of a type not known when another type is, whatever the policy but no', async () => {
    const { store } = await storeWith([`web1 ${rsa.line}`])
    const v = await store.verify(t('web1'), ed.blob)
    expect(v).toEqual({ kind: 'unknown', fingerprint: fingerprint(ed.blob), pinnedTypes: ['ssh-rsa'] })
    await expect(stat(store.path)).rejects.toMatchObject({ code: 'ENOENT' })
    expect((await store.verify(t('web1', 22, { strictHostKeyChecking: 'no' }), ed.blob)).kind).toBe('trusted')
  })

  it('refuses a key @revoked for the host, and (stricter than ssh) one @revoked under the port-less name', async () => {
    const { store } = await storeWith([`@revoked * ${ed.line}`, `web1 ${ed.line}`])
    expect(await store.verify(t('web1'), ed.blob)).toEqual({ kind: 'revoked', offered: fingerprint(ed.blob) })
    const { store: s2 } = await storeWith([`@revoked web1 ${ed.line}`])
    expect((await s2.verify(t('web1', 2222), ed.blob)).kind).toBe('revoked')
    await expect(stat(s2.path)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('matches hashed [host]:port names and hashed port-less names', async () => {
    const { store } = await storeWith([`${hashKnownHostsName('web9')} ${ed.line}`])
    expect((await store.verify(t('web9', 2222), ed.blob)).kind).toBe('trusted')
    const { store: s2 } = await storeWith([`${hashKnownHostsName('[web9]:2222')} ${ec.line}`])
    expect((await s2.verify(t('web9', 2222), ec.blob)).kind).toBe('trusted')
  })
})

describe('host certificates', () => {
  it('trusts a valid certificate through a matching @cert-authority line and pins nothing', async () => {
    const cert = await signCert(ca, ed, { principals: 'web1.corp', validity: WINDOW, serial: 7, id: 'web1' })
    const { store, user } = await storeWith([`@cert-authority *.corp ${ca.line}`])
    const v = await store.verify(t('web1.corp'), cert.blob)
    expect(v).toEqual({
      kind: 'trusted',
      source: {
        kind: 'ca',
        file: user,
        line: 1,
        hosts: ['*.corp'],
        caKeyType: 'ssh-ed25519',
        caFingerprint: fingerprint(ca.blob),
        keyId: 'web1',
        serial: '7',
        principals: ['web1.corp'],
        validity: 'from 2030-01-01T00:00:00Z to 2030-02-01T00:00:00Z',
      },
    })
    await expect(stat(store.path)).rejects.toMatchObject({ code: 'ENOENT' })
    // The CA line matches the port-less name on another port (ssh's fallback), HostKeyAlias is the principal.
    expect((await store.verify(t('web1.corp', 2222), cert.blob)).kind).toBe('trusted')
    expect((await store.verify(t('10.1.1.1', 22, { hostKeyAlias: 'web1.corp' }), cert.blob)).kind).toBe('trusted')
  })

  it('refuses an expired, not-yet-valid, misnamed certificate with its problem, and never pins its key', async () => {
    const cert = await signCert(ca, ed, { principals: 'web1.corp', validity: WINDOW })
    const lines = [`@cert-authority * ${ca.line}`]
    const at = async (ms: number, host = 'web1.corp') => {
      const { store } = await storeWith(lines, { clock: { now: () => ms } })
      const v = await store.verify(t(host), cert.blob)
      await expect(stat(store.path)).rejects.toMatchObject({ code: 'ENOENT' })
      return v
    }
    const expired = await at(Date.UTC(2030, 1, 2))
    expect(expired).toMatchObject({ kind: 'certificate', problem: 'expired', ca: fingerprint(ca.blob) })
    expect(verdictError(t('web1.corp'), expired)?.code).toBe('KAY_HOST_CERT_EXPIRED')
    const early = await at(Date.UTC(2029, 0, 1))
    expect(verdictError(t('web1.corp'), early)?.code).toBe('KAY_HOST_CERT_INVALID')
    const wrong = await at(IN_WINDOW, 'web2.corp')
    expect(wrong).toMatchObject({ kind: 'certificate', problem: 'principal', name: 'web2.corp' })
    expect(verdictError(t('web2.corp'), wrong)?.code).toBe('KAY_HOST_CERT_PRINCIPAL')
  })

  it('falls back to the plain key when no CA matches or the certificate fails, as ssh does', async () => {
    const cert = await signCert(ca, ed, { principals: 'web1', validity: WINDOW })
    // Another CA only: the certificate is judged by its key, which is pinned on first use.
    const { store } = await storeWith([`@cert-authority * ${ca2.line}`])
    expect(await store.verify(t('web1'), cert.blob)).toEqual({ kind: 'pinned', fingerprint: fingerprint(ed.blob) })
    expect(await readFile(store.path, 'utf8')).toBe(`web1 ${ed.line}\n`)
    expect((await store.verify(t('web1'), cert.blob)).kind).toBe('trusted')
    // A known plain key trusts a host whose certificate has expired.
    const { store: s2 } = await storeWith([`@cert-authority * ${ca.line}`, `web1 ${ed.line}`], {
      clock: { now: () => Date.UTC(2031, 0, 1) },
    })
    expect(await s2.verify(t('web1'), cert.blob)).toMatchObject({ kind: 'trusted', source: { kind: 'known-hosts' } })
  })

  it('refuses a certificate whose CA is @revoked, or whose key is', async () => {
    const cert = await signCert(ca, ed, { principals: 'web1', validity: WINDOW })
    const { store } = await storeWith([`@cert-authority * ${ca.line}`, `@revoked * ${ca.line}`])
    const v = await store.verify(t('web1'), cert.blob)
    expect(v).toEqual({ kind: 'revoked', offered: fingerprint(cert.blob), ca: fingerprint(ca.blob) })
    expect(verdictError(t('web1'), v)?.code).toBe('KAY_HOST_CA_REVOKED')
    const { store: s2 } = await storeWith([`@cert-authority * ${ca.line}`, `@revoked * ${ed.line}`])
    expect(verdictError(t('web1'), await s2.verify(t('web1'), cert.blob))?.code).toBe('KAY_HOST_KEY_REVOKED')
    const { store: s3 } = await storeWith([`@cert-authority * ${ca.line}`, `@revoked * ${cert.line}`])
    expect((await s3.verify(t('web1'), cert.blob)).kind).toBe('revoked')
  })
})

describe('host-key algorithm order (order_hostkeyalgs)', () => {
  const all = [...DEFAULT_HOST_KEY_ALGORITHMS]

  it('keeps OpenSSH’s order for a new host and when the first type is known', async () => {
    const { store } = await storeWith([`web1 ${ed.line}`])
    expect(await store.preferredHostKeyAlgorithms(t('new'))).toEqual(all)
    expect(await store.preferredHostKeyAlgorithms(t('web1'))).toEqual(all)
  })

  it('puts the known types first, keeping their order, and certificates first when a CA line matches', async () => {
    const { store } = await storeWith([`web1 ${rsa.line}`, `web1 ${ec.line}`, `@cert-authority *.corp ${ca.line}`])
    expect(await store.preferredHostKeyAlgorithms(t('web1'))).toEqual([
      'ecdsa-sha2-nistp256-cert-v01@openssh.com',
      'rsa-sha2-512-cert-v01@openssh.com',
      'rsa-sha2-256-cert-v01@openssh.com',
      'ecdsa-sha2-nistp256',
      'rsa-sha2-512',
      'rsa-sha2-256',
      ...all.filter((a) => !/nistp256|rsa-sha2/.test(a)),
    ])
    const certsFirst = await store.preferredHostKeyAlgorithms(t('db.corp'))
    expect(certsFirst.slice(0, 6).every((a) => a.endsWith('-cert-v01@openssh.com'))).toBe(true)
  })

  it('orders by the [host]:port name only, not the port-less fallback', async () => {
    const { store } = await storeWith([`web1 ${rsa.line}`])
    expect(await store.preferredHostKeyAlgorithms(t('web1', 2222))).toEqual(all)
    expect((await store.preferredHostKeyAlgorithms(t('web1', 22)))[0]).toBe('rsa-sha2-512-cert-v01@openssh.com')
  })
})

describe('explain (kay trust list HOST)', () => {
  it('names every pin, known_hosts entry, CA and revocation that bears on a host, with the CA fingerprint', async () => {
    const { store, user } = await storeWith([
      `web1 ${ed.line}`,
      `@cert-authority * ${ca.line}`,
      `@revoked * ${ed2.line}`,
    ])
    await store.repin([{ target: { id: 'web1', hostname: 'web1', port: 2222 }, key: ec.blob }])
    const e = await store.explain({ id: 'web1', hostname: 'web1', port: 2222 })
    expect(e.map((x) => [x.source, x.file === user ? 'user' : 'pins', x.line, x.fingerprint, x.name])).toEqual([
      ['pin', 'pins', 1, fingerprint(ec.blob), '[web1]:2222'],
      ['ca', 'user', 2, fingerprint(ca.blob), '[web1]:2222'],
      ['revoked', 'user', 3, fingerprint(ed2.blob), '[web1]:2222'],
      ['known-hosts', 'user', 1, fingerprint(ed.blob), 'web1'],
    ])
  })
})
