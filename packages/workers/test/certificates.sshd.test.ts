/**
 * Certificates through the supervisor against real OpenSSH sshd: hosts whose ssh_config gives CertificateFile
 * (kept away from the key, signed by the fleet's `-i` key), HostKeyAlias (the principal checked) and their own
 * known_hosts lists (a `@cert-authority` line) reach ready in a worker thread, log in with the certificate, and
 * nothing is pinned.
 */
import { copyFile, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { keygen, requireSshd, type SshdServer, signCert, startSshd, until } from '@kay/core/testing'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { Supervisor } from '../src/supervisor.js'

let dir: string
let sshd: SshdServer
let keyPath: string
let certPath: string
let caFile: string

beforeAll(async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-sup-cert-'))
  const hostCa = await keygen(dir, 'host_ca')
  const userCa = await keygen(dir, 'user_ca')
  const hostKey = await keygen(dir, 'host_ed25519')
  const hostCert = await signCert(hostCa, hostKey, { principals: 'web1.example', validity: '-5m:+1d' })
  await mkdir(join(dir, 'user'))
  const user = await keygen(join(dir, 'user'), 'id_ecdsa', 'ecdsa')
  const cert = await signCert(userCa, user, { host: false, principals: 'kaytest', validity: '-5m:+1h', id: 'sup-user' })
  // CertificateFile: the certificate lives elsewhere, so only the host's config can name it.
  certPath = join(dir, 'elsewhere-cert.pub')
  await copyFile(cert.path, certPath)
  await rm(cert.path)
  keyPath = user.path
  caFile = join(dir, 'ca_known_hosts')
  await writeFile(caFile, `@cert-authority web1.example ${hostCa.line}\n`)
  sshd = await startSshd({
    extraConfig: [`HostKey ${hostKey.path}`, `HostCertificate ${hostCert.path}`, `TrustedUserCAKeys ${userCa.pubPath}`],
  })
}, 60_000)

afterAll(async () => {
  await sshd?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

it('logs in with a CertificateFile, trusts the host through its CA under HostKeyAlias, and pins nothing', async () => {
  const pins = join(dir, 'pins')
  const sup = await Supervisor.start({
    hosts: [
      {
        id: 'web1',
        hostname: sshd.host,
        port: sshd.port,
        user: sshd.user,
        hostKeyAlias: 'web1.example',
        certificateFiles: [certPath],
        userKnownHostsFiles: [caFile],
        globalKnownHostsFiles: [],
      },
    ],
    threads: 1,
    identity: { username: 'kaytest', keyFiles: [keyPath] },
    trust: { knownHostsPath: pins, policy: 'accept-new' },
  })
  try {
    await until('the host ready', () => sup.statuses()[0]?.state === 'ready', 20_000)
    expect(sup.statuses()[0]).toMatchObject({ state: 'ready' })
    expect(await sshd.log()).toContain('Accepted certificate ID "sup-user"')
    await expect(stat(pins)).rejects.toMatchObject({ code: 'ENOENT' })
  } finally {
    await sup.stop()
  }
})
