/**
 * probeHostKey (what `kay trust repin` shows): the key a real sshd presents, in the order kay asks, without a login;
 * a certificate when the host has one and certificates are asked for first; clear errors otherwise.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { probeHostKey } from '../../src/connection/probe.js'
import {
  type KeyFiles,
  keygen,
  lineOf,
  requireSshd,
  SSHD_LOG,
  type SshdServer,
  signCert,
  startSshd,
} from '../../src/testing/index.js'
import { DEFAULT_HOST_KEY_ALGORITHMS } from '../../src/trust/known-hosts.js'
import type { HostTarget } from '../../src/types.js'

let dir: string
let sshd: SshdServer
let ecdsa: KeyFiles
let cert: { blob: Buffer }

beforeAll(async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-probe-'))
  const ca = await keygen(dir, 'ca')
  ecdsa = await keygen(dir, 'host_ecdsa', 'ecdsa')
  cert = await signCert(ca, ecdsa, { principals: '127.0.0.1' })
  sshd = await startSshd({ extraConfig: [`HostKey ${ecdsa.path}`, `HostCertificate ${ecdsa.path}-cert.pub`] })
}, 30_000)

afterAll(async () => {
  await sshd?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

const target = (extra: Partial<HostTarget> = {}): HostTarget => ({
  id: 'probe',
  hostname: sshd.host,
  port: sshd.port,
  user: sshd.user,
  ...extra,
})

describe('probeHostKey against real sshd', () => {
  it('returns the key presented for the algorithms asked, and never logs in', async () => {
    const ed = await probeHostKey(target(), { hostKeyAlgorithms: ['ssh-ed25519'] })
    expect(ed.equals(lineOf(sshd.hostKeyPublic).blob)).toBe(true)
    const ec = await probeHostKey(target(), { hostKeyAlgorithms: ['ecdsa-sha2-nistp256'] })
    expect(ec.equals(ecdsa.blob)).toBe(true)
    const certified = await probeHostKey(target(), { hostKeyAlgorithms: [...DEFAULT_HOST_KEY_ALGORITHMS] })
    expect(certified.equals(cert.blob)).toBe(true)
    expect(await sshd.count(SSHD_LOG.acceptedPublickey)).toBe(0)
    expect(await sshd.count(SSHD_LOG.failedAuth)).toBe(0)
  })

  it('fails with KAY_CONNECT_FAILED, KAY_HANDSHAKE_TIMEOUT or KAY_CONFIG, never hangs', async () => {
    const closed = createServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const port = (closed.address() as { port: number }).port
    await new Promise<void>((r) => closed.close(() => r()))
    await expect(probeHostKey(target({ port }))).rejects.toMatchObject({ code: 'KAY_CONNECT_FAILED' })
    // A listener that never speaks SSH.
    const mute = createServer(() => {})
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r))
    try {
      const mutePort = (mute.address() as { port: number }).port
      await expect(probeHostKey(target({ port: mutePort }), { timeoutMs: 300 })).rejects.toMatchObject({
        code: 'KAY_HANDSHAKE_TIMEOUT',
      })
    } finally {
      mute.close()
    }
    await expect(
      probeHostKey(target({ jump: [{ id: 'j', hostname: sshd.host, port: sshd.port, user: sshd.user }] })),
    ).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })
})
