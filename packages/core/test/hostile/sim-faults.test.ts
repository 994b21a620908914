import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/clock.js'
import { HostCollector } from '../../src/collection/collector.js'
import type { HostMetrics } from '../../src/collection/types.js'
import { HostActor, type HostActorOptions } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { type SimFleet, startSimFleet } from '../../src/sim/index.js'
import { until } from '../../src/testing/index.js'
import type { Identity } from '../../src/types.js'
import { clientIdentity, memoryVerifier, waitForState } from '../support/fixtures.js'

const MiB = 1024 * 1024
const PROC_FAULTS = ['malformed', 'huge-line', 'binary', 'absurd'] as const
// Hosts 0–3: one /proc fault each; 4–5: healthy neighbours; 6: hostile channels; 7–9: flood and slow commands.
const HOSTILE = 6

let fleet: SimFleet
let identity: Identity
const open: Array<{ a: HostActor; c?: HostCollector }> = []

beforeAll(async () => {
  const c = clientIdentity()
  identity = c.identity
  // The hosts' clock moves a second at each read, so the /proc counters of two ticks always differ (CPU % exists).
  let t = Date.now()
  fleet = await startSimFleet({
    hosts: 10,
    clock: { ...systemClock, now: () => (t += 1000) },
    authorizedKeys: [c.publicKey],
    hostOverrides: {
      ...Object.fromEntries(PROC_FAULTS.map((procFault, i) => [i, { procFault }])),
      [HOSTILE]: { hostileChannels: true },
    },
  })
})
afterAll(() => fleet.close())
afterEach(async () => {
  for (const { a, c } of open.splice(0)) {
    c?.close()
    await a.close()
  }
})

async function readyActor(i: number, extra: Partial<HostActorOptions> = {}): Promise<HostActor> {
  const h = fleet.hosts[i]!
  const a = new HostActor({
    target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
    keepaliveIntervalMs: 0,
    ...extra,
  })
  open.push({ a })
  a.start()
  await waitForState(a, 'ready')
  return a
}

function memory() {
  const m = process.memoryUsage()
  return { rss: m.rss, heap: m.heapUsed + m.arrayBuffers }
}

/** Every number a renderer would show is finite and in range (an absurd host must not produce nonsense). */
function sane(m: HostMetrics): boolean {
  const pct = (v: number | undefined) => v === undefined || (Number.isFinite(v) && v >= 0 && v <= 100)
  const nonNeg = (v: number | undefined) => v === undefined || (Number.isFinite(v) && v >= 0)
  return (
    pct(m.cpuPct) &&
    pct(m.rootFsUsedPct) &&
    nonNeg(m.memTotalBytes) &&
    nonNeg(m.memUsedBytes) &&
    (m.memUsedBytes === undefined || m.memTotalBytes === undefined || m.memUsedBytes <= m.memTotalBytes) &&
    nonNeg(m.load1) &&
    nonNeg(m.uptimeSeconds)
  )
}

describe('hostile simulated hosts', () => {
  it('a 2 GB output flood ends in KAY_OUTPUT_LIMIT at 1 MiB, quickly, without memory growth, keeping the connection', async () => {
    const a = await readyActor(7, { defaultMaxOutputBytes: MiB })
    const gc = (globalThis as { gc?: () => void }).gc
    gc?.()
    const before = memory()
    let peak = before
    const sampler = setInterval(() => {
      const m = memory()
      peak = { rss: Math.max(peak.rss, m.rss), heap: Math.max(peak.heap, m.heap) }
    }, 5)
    const t0 = Date.now()
    try {
      for (let i = 0; i < 3; i++) {
        await expect(a.run('flood 2000000000')).rejects.toMatchObject({
          code: 'KAY_OUTPUT_LIMIT',
          host: fleet.hosts[7]!.name,
          details: { maxOutputBytes: MiB },
        })
      }
    } finally {
      clearInterval(sampler)
    }
    expect(Date.now() - t0).toBeLessThan(5000)
    expect(peak.rss - before.rss).toBeLessThan(48 * MiB)
    expect(peak.heap - before.heap).toBeLessThan(32 * MiB)
    // The flood stopped on the server side (its channel was closed), the connection is the same one.
    expect((await a.run('echo after')).stdout).toBe('after\n')
    expect(a.status().handshakes).toBe(1)
    expect(fleet.host(7).stats()).toMatchObject({ handshakesStarted: 1, currentConnections: 1 })
  })

  it('malformed, huge, binary or absurd /proc content fails that host with a typed error; its neighbours collect', async () => {
    const hosts = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => readyActor(i)))
    const collectors = hosts.map((a, i) => {
      const c = new HostCollector(a, { mode: 'exec' })
      open[i]!.c = c
      return c
    })
    const outcomes: Array<Array<{ code?: string | undefined; metrics?: HostMetrics }>> = hosts.map(() => [])
    for (let tick = 0; tick < 3; tick++) {
      const r = await Promise.allSettled(collectors.map((c) => c.collect(5000)))
      for (const [i, s] of r.entries()) {
        outcomes[i]!.push(
          s.status === 'fulfilled' ? { metrics: s.value } : { code: (s.reason as { code?: string }).code },
        )
      }
    }
    // malformed and binary never parse.
    expect(outcomes[0]!.map((o) => o.code)).toEqual(['KAY_PARSE_ERROR', 'KAY_PARSE_ERROR', 'KAY_PARSE_ERROR'])
    // In exec mode the 300 KiB line trips the 256 KiB output cap before any parsing.
    expect(outcomes[1]!.map((o) => o.code)).toEqual(['KAY_OUTPUT_LIMIT', 'KAY_OUTPUT_LIMIT', 'KAY_OUTPUT_LIMIT'])
    expect(outcomes[2]!.map((o) => o.code)).toEqual(['KAY_PARSE_ERROR', 'KAY_PARSE_ERROR', 'KAY_PARSE_ERROR'])
    // Absurd numbers are either refused with a typed error or clamped into a sane range; never nonsense.
    for (const o of outcomes[3]!) {
      if (o.metrics) expect(sane(o.metrics)).toBe(true)
      else expect(o.code).toBe('KAY_PARSE_ERROR')
    }
    for (const i of [4, 5]) {
      expect(outcomes[i]!.every((o) => o.metrics !== undefined && sane(o.metrics))).toBe(true)
      expect(outcomes[i]!.at(-1)!.metrics!.cpuPct).toBeGreaterThanOrEqual(0)
    }
    // A bad answer is the host's problem, not the connection's: every actor is still on its first connection.
    expect(hosts.every((a) => a.state === 'ready' && a.status().handshakes === 1)).toBe(true)
  })

  it('refuses server-opened channels and unsolicited global requests, and stays ready', async () => {
    const a = await readyActor(HOSTILE)
    await until('hostile channels refused', () => fleet.host(HOSTILE).stats().hostileRefused > 0, 5000)
    for (let i = 0; i < 5; i++) expect((await a.run(`echo ok${i}`)).stdout).toBe(`ok${i}\n`)
    const st = fleet.host(HOSTILE).stats()
    expect(st.hostileAccepted).toBe(0)
    expect(st.hostileRefused).toBeGreaterThan(0)
    expect(st.currentConnections).toBe(1)
    expect(a.state).toBe('ready')
    expect(a.status().handshakes).toBe(1)
  })

  it('a command that never finishes times out, its channel closes, and the slot serves the next command', async () => {
    // One channel: the next run can only start once the timed-out channel has really closed.
    const a = await readyActor(8, { maxChannels: 1 })
    const t0 = Date.now()
    await expect(a.run('sleep 1000', { timeoutMs: 150 })).rejects.toMatchObject({ code: 'KAY_TIMEOUT' })
    expect(Date.now() - t0).toBeLessThan(2000)
    expect((await a.run('echo next', { timeoutMs: 5000 })).stdout).toBe('next\n')
    expect(fleet.host(8).stats().maxConcurrentChannels).toBe(1)
    expect(a.status().handshakes).toBe(1)
  })

  it('a flood under a generous output cap still ends at its deadline and the connection survives', async () => {
    const a = await readyActor(9)
    const before = memory()
    await expect(a.run('flood 2000000000', { timeoutMs: 100, maxOutputBytes: 4 * 1024 * MiB })).rejects.toMatchObject({
      code: 'KAY_TIMEOUT',
    })
    expect(memory().rss - before.rss).toBeLessThan(256 * MiB)
    expect((await a.run('echo alive')).stdout).toBe('alive\n')
  })
})
