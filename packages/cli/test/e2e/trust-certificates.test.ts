/**
 * Certificates through the CLI against real OpenSSH sshd on loopback: a fleet whose host keys are signed by a CA
 * (`HostCertificate`) is collected with `@cert-authority` in UserKnownHostsFile and no pin is written; a user
 * certificate beside the `-i` key logs in (sshd `TrustedUserCAKeys`, nothing in authorized_keys); an expired
 * certificate, a certificate for other names and a revoked CA are refused with their own codes and exit 3;
 * `kay trust list HOST` names the CA and its fingerprint.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fingerprint } from '@kay/core'
import { keygen, requireSshd, type SshdServer, signCert, startSshd } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { killRunning, ndjson, runKay } from './support/kay.js'

let dir: string
const servers: Record<'good' | 'expired' | 'misnamed' | 'revoked', SshdServer> = {} as never
let caLine: string
let caFingerprint: string
let userKey: string
let sshConfig: string
let pins: string

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-e2e-cert-'))
  const hostCa = await keygen(dir, 'host_ca')
  const revokedCa = await keygen(dir, 'revoked_ca')
  const userCa = await keygen(dir, 'user_ca')
  caLine = hostCa.line
  caFingerprint = fingerprint(hostCa.blob)
  // The user logs in with a certificate only: authorized_keys stays empty.
  await mkdir(join(dir, 'user'))
  const user = await keygen(join(dir, 'user'), 'id_ed25519')
  await signCert(userCa, user, { host: false, principals: 'kaytest', validity: '-5m:+1h', id: 'e2e-user' })
  userKey = user.path
  const host = async (name: string, ca: typeof hostCa, principals: string, validity: string) => {
    await mkdir(join(dir, name))
    const key = await keygen(join(dir, name), 'host_ecdsa', 'ecdsa')
    const cert = await signCert(ca, key, { principals, validity, id: name })
    return startSshd({
      extraConfig: [`HostKey ${key.path}`, `HostCertificate ${cert.path}`, `TrustedUserCAKeys ${userCa.pubPath}`],
    })
  }
  servers.good = await host('good', hostCa, '127.0.0.1', '-5m:+1d')
  servers.expired = await host('expired', hostCa, '127.0.0.1', '20200101000000:20200102000000')
  servers.misnamed = await host('misnamed', hostCa, 'db.example.com', '-5m:+1d')
  servers.revoked = await host('revoked', revokedCa, '127.0.0.1', '-5m:+1d')
  const knownHosts = join(dir, 'known_hosts')
  await writeFile(
    knownHosts,
    `@cert-authority * ${hostCa.line}\n@cert-authority * ${revokedCa.line}\n@revoked * ${revokedCa.line}\n`,
  )
  sshConfig = join(dir, 'ssh_config')
  await writeFile(
    sshConfig,
    Object.entries(servers)
      .map(
        ([name, s]) =>
          `Host ${name}\n  HostName ${s.host}\n  Port ${s.port}\n  User ${s.user}\n  UserKnownHostsFile ${knownHosts}\n`,
      )
      .join('\n'),
  )
  pins = join(dir, 'pins', 'known_hosts')
}, 60_000)

afterAll(async () => {
  killRunning()
  await Promise.all(Object.values(servers).map((s) => s?.stop()))
  if (dir) await rm(dir, { recursive: true, force: true })
})

const kay = (...args: string[]) =>
  runKay([...args, '--ssh-config', sshConfig, '--known-hosts', pins, '-i', userKey], { timeoutMs: 40_000 })

describe('certificates through the CLI, against real sshd', { timeout: 120_000 }, () => {
  test('a CA-signed host is collected with a user certificate, and no pin is written', async () => {
    const r = await kay('collect', '--json', 'good', '--connect-timeout', '15s', '--sample-gap', '100ms')
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(ndjson(r.stdout).find((o) => o.host === 'good')).toMatchObject({ ok: true })
    await expect(stat(pins)).rejects.toMatchObject({ code: 'ENOENT' })
    expect(await readFile(servers.good.logPath, 'utf8')).toContain('Accepted certificate ID "e2e-user"')
  })

  test('an expired certificate, other names and a revoked CA: each its own code, exit 3, nothing pinned', async () => {
    const r = await kay('collect', '--json', 'expired,misnamed,revoked', '--connect-timeout', '15s')
    expect(r.code).toBe(3)
    const objs = ndjson(r.stdout)
    const code = (h: string) => (objs.find((o) => o.host === h)?.error as { code?: string } | undefined)?.code
    expect([code('expired'), code('misnamed'), code('revoked')]).toEqual([
      'KAY_HOST_CERT_EXPIRED',
      'KAY_HOST_CERT_PRINCIPAL',
      'KAY_HOST_CA_REVOKED',
    ])
    await expect(stat(pins)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  test('trust list HOST names the CA line and the CA fingerprint', async () => {
    const r = await kay('trust', 'list', 'good')
    expect(r.code).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines[0]).toBe(`good  ca  ssh-ed25519  ${caFingerprint}  ${join(dir, 'known_hosts')}:1  (@cert-authority *)`)
    expect(r.stdout).toContain('  revoked  ')
    expect(caLine).toContain('ssh-ed25519 ')
  })
})
