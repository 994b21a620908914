/**
 * Host-key trust end to end: the first collect pins every host, a host that comes back with a new key is refused
 * (exit 3, KAY_HOST_KEY_MISMATCH) without the pin file being touched, and `kay trust list|forget` manage the pins.
 */
import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type FleetFixture, killRunning, ndjson, runKay, startFixture } from './support/kay.js'

let fx: FleetFixture
/** Fingerprints before sim0002 got a new host key. */
let oldFingerprints: string[] = []

beforeAll(async () => {
  fx = await startFixture(3)
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

const collect = () =>
  runKay(['collect', '--json', 'sim[0001-0003]', ...fx.connArgs, '--connect-timeout', '10s', '--sample-gap', '100ms'], {
    timeoutMs: 40_000,
  })

// Several CLI runs per test; the bound is for an overloaded machine, a normal run takes a few seconds.
describe('host-key pinning through the CLI', { timeout: 120_000 }, () => {
  test('a changed host key is refused with exit 3 and KAY_HOST_KEY_MISMATCH, and the pin file is not rewritten', async () => {
    const first = await collect()
    expect(first.code).toBe(0)
    const pinsBefore = await readFile(fx.knownHosts)
    expect(pinsBefore.toString().trim().split('\n')).toHaveLength(3)
    for (const h of fx.fleet.hosts)
      expect(pinsBefore.toString()).toContain(`${h.name},[${h.host}]:${h.port} ssh-ed25519 `)

    oldFingerprints = fx.fleet.hosts.map((h) => h.fingerprint)
    const oldFingerprint = oldFingerprints[1]
    const info = await fx.fleet.restart(1, { newHostKey: true })
    expect(info.fingerprint).not.toBe(oldFingerprint)

    // sim0003 is unreachable at the same time: a host-key refusal (3) outranks an unreachable host (2).
    fx.fleet.setFault(2, { refuse: true })
    const second = await collect().finally(() => fx.fleet.setFault(2, { refuse: false }))
    const objs = ndjson(second.stdout)
    expect(objs.find((o) => o.host === 'sim0002')).toMatchObject({
      ok: false,
      error: { code: 'KAY_HOST_KEY_MISMATCH' },
    })
    expect(objs.find((o) => o.host === 'sim0003')).toMatchObject({ ok: false, error: { code: 'KAY_CONNECT_FAILED' } })
    expect(objs.find((o) => o.host === 'sim0001')).toMatchObject({ ok: true, state: 'ready' })
    expect(objs.at(-1)).toMatchObject({ summary: true, hosts: 3, ok: 1, failed: 2 })
    expect(second.code).toBe(3)
    expect(second.stderr).not.toContain('pinned host key of sim0002')
    expect(Buffer.compare(await readFile(fx.knownHosts), pinsBefore)).toBe(0)
  })

  test('trust list shows the pins and trust forget removes a host’s pin', async () => {
    const list = await runKay(['trust', 'list', '--known-hosts', fx.knownHosts], { timeoutMs: 15_000 })
    expect(list.code).toBe(0)
    const lines = list.stdout.trim().split('\n')
    expect(lines).toHaveLength(3)
    for (const line of lines)
      expect(line).toMatch(/^sim000\d,\[127\.0\.0\.1\]:\d+ {2}ssh-ed25519 {2}SHA256:[A-Za-z0-9+/]{43}$/)
    // The listing shows the pinned (old) keys, not what sim0002 offers now.
    for (const [i, fp] of oldFingerprints.entries())
      expect(lines.find((l) => l.startsWith(`sim000${i + 1},`))).toContain(fp)
    expect(list.stdout).not.toContain(fx.fleet.hosts[1]!.fingerprint)

    const h = fx.fleet.hosts[1]!
    const forget = await runKay(['trust', 'forget', 'sim0002', '--known-hosts', fx.knownHosts], { timeoutMs: 15_000 })
    expect(forget.code).toBe(0)
    expect(forget.stdout).toContain('removed 1 pin(s)')
    const after = await readFile(fx.knownHosts, 'utf8')
    expect(after).not.toContain('sim0002')
    expect(after.trim().split('\n')).toHaveLength(2)

    // With the stale pin gone, the next collect pins the new key and every host succeeds.
    const again = await collect()
    expect(again.code).toBe(0)
    const relist = await runKay(['trust', 'list', '--known-hosts', fx.knownHosts], { timeoutMs: 15_000 })
    expect(relist.stdout).toContain(`sim0002,[${h.host}]:${h.port}  ssh-ed25519  ${h.fingerprint}`)
  })
})
