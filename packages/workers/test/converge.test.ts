/**
 * Cold start through the Supervisor against the simulator (DESIGN.md invariant 10, docs/adr/0008): the progress an
 * embedder sees (method and event), every host in every tick with its real state while the fleet starts, and the
 * fleet-wide cap on remote work, across shard threads. The same policy against real sshd through the CLI is in
 * packages/cli/test/e2e/cold-start.sshd.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateClientKey, type SimFleet, type SimFleetOptions, startSimFleet } from '@kay/core/sim'
import { until } from '@kay/core/testing'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type FleetProgress, Supervisor, type SupervisorOptions } from '../src/supervisor.js'

let dir: string
let key: ReturnType<typeof generateClientKey>
const running: Supervisor[] = []
const fleets: SimFleet[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-converge-'))
  key = generateClientKey()
})

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop({ timeoutMs: 2000 })))
  await Promise.all(fleets.splice(0).map((f) => f.close()))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

let n = 0
async function start(hosts: number, fleetOpts: Partial<SimFleetOptions> = {}, opts: Partial<SupervisorOptions> = {}) {
  const fleet = await startSimFleet({ hosts, authorizedKeys: [key.publicKey], ...fleetOpts })
  fleets.push(fleet)
  const sup = await Supervisor.start({
    hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })),
    threads: 2,
    identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
    trust: { knownHostsPath: join(dir, `known_hosts.${++n}`), policy: 'accept-new' },
    ...opts,
  })
  running.push(sup)
  return { fleet, sup }
}

const sum = (p: FleetProgress) => p.connecting + p.starting + p.probing + p.streaming + p.exec + p.backoff + p.failed

describe('cold start', () => {
  it('shows its progress (method and event) until every host streams, each host counted once', async () => {
    const events: FleetProgress[] = []
    const { sup } = await start(60, {}, { dialCap: 4 })
    sup.on('progress', (p) => events.push(p))
    const first = sup.progress()
    expect(first.hosts).toBe(60)
    expect(sum(first)).toBe(60)
    const done = await until('every host streaming', () => {
      const p = sup.progress()
      return p.streaming === 60 && p
    })
    expect(done.settled).toBe(true)
    expect(events.length).toBeGreaterThan(1)
    for (const p of events) expect(sum(p)).toBe(60)
    // The start was seen on its way: hosts connecting, then streams opening.
    expect(events.some((p) => p.connecting > 0)).toBe(true)
    expect(events.at(-1)!.streaming).toBe(60)
    // One channel per host: the stream, opened with no tick asking; no exec collection.
    const tick = await sup.collect()
    expect(tick.hosts.every((h) => h.metrics && h.collectMode === 'stream-perl')).toBe(true)
    const totals = fleets[0]!.stats().totals
    expect(totals.channelsOpened).toBe(60)
    expect(totals.commands).toBe(60)
  })

  it('reports every host in every tick while it starts: metrics, or a typed error naming its phase', async () => {
    // Sessions start late (each stream loop's first answer takes a while): ticks shorter than that see the phases.
    const { sup } = await start(40, { hostDefaults: { streamFault: 'stall' } }, { dialCap: 8, workCap: 4 })
    let sawPhase = false
    for (let i = 0; i < 20 && !sawPhase; i++) {
      const tick = await sup.collect({ timeoutMs: 100 })
      expect(tick.hosts.length).toBe(40)
      for (const h of tick.hosts) {
        if (h.metrics) continue
        expect(h.error?.code).toMatch(/^KAY_(NOT_READY|TIMEOUT)$/)
        const state = h.error?.details.state
        if (h.status.state === 'ready') {
          expect(['starting', 'probing']).toContain(state)
          expect(h.status.collectPhase).toBe(state)
          sawPhase = true
        }
      }
    }
    expect(sawPhase).toBe(true)
  })

  it('never has more stream probes in flight than workCap, across shard threads', async () => {
    // The loops never answer: every probe holds its work slot, so the cap is what limits the probing hosts.
    const { sup } = await start(30, { hostDefaults: { streamFault: 'stall' } }, { dialCap: 16, workCap: 3 })
    // Every change of the fleet's progress, as the shards report it, from the start.
    const seen: FleetProgress[] = [sup.progress()]
    sup.on('progress', (p) => seen.push(p))
    await until('every host connected', () => (sup.stats().byState.ready ?? 0) === 30)
    await until('probes at the cap, the rest waiting for a slot', () => {
      const p = sup.progress()
      return p.probing === 3 && p.starting === 27
    })
    // A round trip to every shard: the work counts below are the shards' own, not the last event's.
    const st = await sup.refreshStats()
    expect(Math.max(...seen.map((p) => p.probing))).toBe(3)
    expect(st.workCap).toBe(3)
    expect(st.workInFlight).toBe(3)
    expect(st.workWaiting).toBe(27)
  })
})
