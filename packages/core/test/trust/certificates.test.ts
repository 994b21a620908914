/**
 * OpenSSH certificates as ssh-keygen makes them: parsed, CA signatures verified for ed25519, ECDSA and RSA CAs, and
 * host certificates checked as sshkey_cert_check_host() does (principal, validity at an injected time, critical
 * options, CA signature algorithm).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import ssh2 from 'ssh2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type KeyFiles, keygen, signCert } from '../../src/testing/index.js'
import {
  checkHostCertificate,
  formatValidity,
  isWellFormedKeyBlob,
  keyTypeOfAlgorithm,
  parseCertificate,
  plainName,
  verifyCertificate,
} from '../../src/trust/certificates.js'
import { buildCertificate, memoryCa } from '../support/ssh-keys.js'

let dir: string
let host: KeyFiles
let hostEc: KeyFiles
let hostRsa: KeyFiles
const cas: Record<'ed25519' | 'ecdsa' | 'ecdsa384' | 'rsa', KeyFiles> = {} as never

/** 2030-01-01T00:00:00Z .. 2030-02-01T00:00:00Z (signCert runs ssh-keygen in UTC). */
const WINDOW = '20300101000000:20300201000000'
const IN_WINDOW = Date.UTC(2030, 0, 15)

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-cert-'))
  host = await keygen(dir, 'host_ed25519')
  hostEc = await keygen(dir, 'host_ecdsa', 'ecdsa')
  hostRsa = await keygen(dir, 'host_rsa', 'rsa')
  for (const t of ['ed25519', 'ecdsa', 'ecdsa384', 'rsa'] as const) cas[t] = await keygen(dir, `ca_${t}`, t)
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('certificate names', () => {
  it('maps certificate types and algorithms to the plain key type that signs', () => {
    expect(plainName('ssh-ed25519-cert-v01@openssh.com')).toBe('ssh-ed25519')
    expect(plainName('ssh-ed25519')).toBe('ssh-ed25519')
    expect(keyTypeOfAlgorithm('rsa-sha2-512-cert-v01@openssh.com')).toBe('ssh-rsa')
    expect(keyTypeOfAlgorithm('rsa-sha2-256')).toBe('ssh-rsa')
    expect(keyTypeOfAlgorithm('ecdsa-sha2-nistp384-cert-v01@openssh.com')).toBe('ecdsa-sha2-nistp384')
  })
})

describe('parsing and verifying certificates made by ssh-keygen', () => {
  it.each([
    ['ed25519', 'ed25519'],
    ['ecdsa', 'ecdsa'],
    ['rsa', 'rsa'],
    ['ed25519', 'ecdsa384'],
    ['ecdsa', 'rsa'],
  ] as const)('reads a %s host certificate signed by a %s CA and verifies the CA signature', async (k, ca) => {
    const key = { ed25519: host, ecdsa: hostEc, rsa: hostRsa }[k]
    const cert = await signCert(cas[ca], key, { principals: 'web1.example.com,web1', validity: WINDOW, serial: 42 })
    const c = parseCertificate(cert.blob)
    expect(c).toMatchObject({
      type: `${key.type}-cert-v01@openssh.com`,
      keyType: key.type,
      certType: 'host',
      keyId: 'kay-test',
      serial: 42n,
      principals: ['web1.example.com', 'web1'],
      criticalOptions: [],
    })
    expect(c?.key.equals(key.blob)).toBe(true)
    expect(c?.signatureKey.equals(cas[ca].blob)).toBe(true)
    expect(verifyCertificate(c!)).toBe(true)
    expect(isWellFormedKeyBlob(cert.blob)).toBe(true)
    expect(checkHostCertificate(c!, { name: 'web1', nowMs: IN_WINDOW })).toBeUndefined()
    expect(formatValidity(c!)).toBe('from 2030-01-01T00:00:00Z to 2030-02-01T00:00:00Z')
    // The patched ssh2 reads the same blob as the certified key (what verifies the kex signature).
    const parsed = ssh2.utils.parseKey(cert.blob)
    expect(parsed instanceof Error ? parsed.message : parsed.type).toBe(c?.type)
    if (!(parsed instanceof Error)) expect(parsed.getPublicSSH().equals(cert.blob)).toBe(true)
  })

  it('refuses a certificate whose body or signature was altered', async () => {
    const cert = await signCert(cas.ed25519, host, { principals: 'web1' })
    fc.assert(
      fc.property(fc.integer({ min: 0, max: cert.blob.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const b = Buffer.from(cert.blob)
        b[i] = (b[i] as number) ^ x
        const c = parseCertificate(b)
        // Either it no longer parses, or its signature no longer verifies (or the change hit nothing signed).
        if (c !== undefined && verifyCertificate(c))
          expect(b.subarray(0, c.signedLength).equals(cert.blob.subarray(0, c.signedLength))).toBe(true)
      }),
      { numRuns: 300 },
    )
  })

  it('never throws on truncated or random blobs', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const b = Buffer.from(bytes)
        expect(() => parseCertificate(b)).not.toThrow()
        expect(() => isWellFormedKeyBlob(b)).not.toThrow()
      }),
      { numRuns: 500 },
    )
  })
})

describe('checking host certificates (sshkey_cert_check_host)', () => {
  it('compares the name with the principals exactly, and accepts any name when there are none', async () => {
    const named = parseCertificate((await signCert(cas.ed25519, host, { principals: 'web1,*.corp' })).blob)!
    expect(checkHostCertificate(named, { name: 'web1', nowMs: IN_WINDOW })).toBeUndefined()
    expect(checkHostCertificate(named, { name: 'web2', nowMs: IN_WINDOW })).toBe('principal')
    // Principals are not patterns for host certificates.
    expect(checkHostCertificate(named, { name: 'a.corp', nowMs: IN_WINDOW })).toBe('principal')
    const any = parseCertificate((await signCert(cas.ed25519, host, {})).blob)!
    expect(checkHostCertificate(any, { name: 'whatever', nowMs: IN_WINDOW })).toBeUndefined()
  })

  it('checks the validity window at the injected time: valid after ≤ now < valid before', async () => {
    const c = parseCertificate((await signCert(cas.ed25519, host, { principals: 'web1', validity: WINDOW })).blob)!
    const check = (ms: number) => checkHostCertificate(c, { name: 'web1', nowMs: ms })
    expect(check(Date.UTC(2029, 11, 31, 23, 59, 59))).toBe('not-yet-valid')
    expect(check(Date.UTC(2030, 0, 1))).toBeUndefined()
    expect(check(Date.UTC(2030, 1, 1) - 1000)).toBeUndefined()
    expect(check(Date.UTC(2030, 1, 1))).toBe('expired')
  })

  it('refuses a user certificate, critical options, a CA that is a certificate, and a SHA-1 CA signature', async () => {
    const user = parseCertificate((await signCert(cas.ed25519, host, { host: false, principals: 'web1' })).blob)!
    expect(checkHostCertificate(user, { name: 'web1', nowMs: IN_WINDOW })).toBe('not-host-certificate')
    const ca = memoryCa()
    const crit = parseCertificate(buildCertificate(host.blob, ca, { critical: [['force-command', 'true']] }))!
    expect(verifyCertificate(crit)).toBe(true)
    expect(checkHostCertificate(crit, { name: 'x', nowMs: IN_WINDOW })).toBe('critical-options')
    const viaCert = parseCertificate(
      buildCertificate(host.blob, ca, { signatureKey: (await signCert(cas.ed25519, host, {})).blob }),
    )!
    expect(checkHostCertificate(viaCert, { name: 'x', nowMs: IN_WINDOW })).toBe('signature')
    const sha1 = parseCertificate((await signCert(cas.rsa, host, { sigAlg: 'ssh-rsa' })).blob)!
    expect(sha1.signatureAlgorithm).toBe('ssh-rsa')
    expect(verifyCertificate(sha1)).toBe(true)
    expect(checkHostCertificate(sha1, { name: 'x', nowMs: IN_WINDOW })).toBe('signature-algorithm')
    expect(
      checkHostCertificate(sha1, { name: 'x', nowMs: IN_WINDOW, caSignatureAlgorithms: ['ssh-rsa'] }),
    ).toBeUndefined()
  })
})
