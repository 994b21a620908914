/**
 * Options precedence as in OpenSSH, end to end against real sshd: `--connect-timeout` wins over ssh_config's
 * ConnectTimeout (as `ssh -o ConnectTimeout=` does), the config's value holds when the flag is absent, and a host
 * that never completes its handshake reports KAY_HANDSHAKE_TIMEOUT in collect, in the fleet table and in JSON —
 * never KAY_NOT_READY. The hanging host is a real sshd stopped with SIGSTOP: the kernel still accepts its TCP
 * connections, and sshd never speaks.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type ClientKey, makeClientKey, requireSshd, type SshdServer, startSshd } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { killRunning, ndjson, runKay } from './support/kay.js'

let dir: string
let key: ClientKey
let good: SshdServer
let hang: SshdServer
let hangPid = 0

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-connect-timeout-'))
  key = await makeClientKey(dir)
  good = await startSshd({ authorizedKeys: [key.publicKey] })
  hang = await startSshd({ authorizedKeys: [key.publicKey] })
  hangPid = hang.pid
  process.kill(hangPid, 'SIGSTOP') // our own child, by pid
})

afterAll(async () => {
  killRunning()
  if (hangPid) process.kill(hangPid, 'SIGCONT')
  await good?.stop()
  await hang?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** An ssh_config naming both hosts; the hanging one with `ConnectTimeout <hangSeconds>`. */
async function config(hangSeconds: number): Promise<string> {
  const path = join(dir, `ssh_config_${hangSeconds}`)
  const host = (name: string, s: SshdServer, extra = '') =>
    `Host ${name}\n  HostName ${s.host}\n  Port ${s.port}\n  User kaytest\n${extra}`
  await writeFile(path, `${host('good', good)}\n${host('hang', hang, `  ConnectTimeout ${hangSeconds}\n`)}`, {
    mode: 0o600,
  })
  return path
}

const conn = (cfg: string) => ['--ssh-config', cfg, '-i', key.privateKeyPath, '--known-hosts', join(dir, 'pins')]

type HostLine = { host: string; ok: boolean; error?: { code: string; message: string } }

function byHost(stdout: string): Map<string, HostLine> {
  const lines = ndjson(stdout).filter((o) => typeof o.host === 'string') as unknown as HostLine[]
  return new Map(lines.map((l) => [`${l.host}#${lines.filter((x) => x.host === l.host).indexOf(l)}`, l]))
}

describe('the dial deadline of a host that never completes its handshake', { timeout: 120_000 }, () => {
  it('--connect-timeout wins over ssh_config ConnectTimeout; collect reports KAY_HANDSHAKE_TIMEOUT', async () => {
    const cfg = await config(30)
    const r = await runKay(['collect', '--json', 'good', 'hang', ...conn(cfg), '--connect-timeout', '1s'], {
      timeoutMs: 60_000,
    })
    const hosts = byHost(r.stdout)
    expect(hosts.get('good#0')).toMatchObject({ ok: true })
    expect(hosts.get('hang#0')?.error?.code).toBe('KAY_HANDSHAKE_TIMEOUT')
    // The flag's deadline, not the config's 30 s.
    expect(hosts.get('hang#0')?.error?.message).toContain('within 1000 ms')
    expect(r.code).toBe(2)
  })

  it('without the flag, the host gets its ConnectTimeout and collect waits for it: KAY_HANDSHAKE_TIMEOUT', async () => {
    // collect waits out the longest dial deadline of its hosts (here the config's 12 s, past the 10 s default it
    // used to wait whatever the config said) before its first sample, so the hanging host's own error is known.
    const cfg = await config(12)
    const r = await runKay(['collect', '--json', 'good', 'hang', ...conn(cfg)], { timeoutMs: 60_000 })
    const hosts = byHost(r.stdout)
    expect(hosts.get('good#0')).toMatchObject({ ok: true })
    expect(hosts.get('hang#0')?.error?.code).toBe('KAY_HANDSHAKE_TIMEOUT')
    expect(hosts.get('hang#0')?.error?.message).toContain('within 12000 ms')
  })

  it('fleet --json reports KAY_HANDSHAKE_TIMEOUT on every tick, and the table shows the deadline', async () => {
    const cfg = await config(30)
    const json = await runKay(
      ['fleet', '--json', '--ticks', '3', '--interval', '1s', 'good', 'hang', ...conn(cfg), '--connect-timeout', '1s'],
      { timeoutMs: 60_000 },
    )
    const hosts = byHost(json.stdout)
    for (let tick = 0; tick < 3; tick++) {
      expect(hosts.get(`good#${tick}`)).toMatchObject({ ok: true })
      expect(hosts.get(`hang#${tick}`)?.error?.code).toBe('KAY_HANDSHAKE_TIMEOUT')
    }
    const table = await runKay(['fleet', '--ticks', '1', 'good', 'hang', ...conn(cfg), '--connect-timeout', '1s'], {
      timeoutMs: 60_000,
    })
    const row = table.stdout.split('\n').find((l) => l.startsWith('hang'))
    expect(row).toContain('handshake not done within 1000 ms')
  })
})
