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
import { type FleetProgress, SettleTimeoutError, Supervisor, type SupervisorOptions } from '../src/supervisor.js'

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

  it("keeps each host's newest status: a tick's reply, taken before the events that follow it, does not undo them", async () => {
    // One shard: its reply to a tick leaves when the last host answers. Hosts added as the tick starts answer it at
    // once (not ready yet), then connect and stream while host 0's stalled stream holds the tick; their events say
    // so before the reply, whose statuses are from before, arrives.
    const fleet = await startSimFleet({ hosts: 5, authorizedKeys: [key.publicKey] })
    fleets.push(fleet)
    const targets = fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' }))
    const sup = await Supervisor.start({
      hosts: targets.slice(0, 1),
      threads: 1,
      identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
      trust: { knownHostsPath: join(dir, `known_hosts.${++n}`), policy: 'accept-new' },
    })
    running.push(sup)
    await until('host 0 streaming', () => sup.progress().streaming === 1)
    fleet.setFault(0, { streamFault: 'stall' })
    sup.add(targets.slice(1))
    const tick = sup.collect({ timeoutMs: 60_000 })
    await until('the added hosts streaming', () => sup.progress().streaming === 5)
    fleet.drop(0)
    const t = await tick
    const added = new Set(targets.slice(1).map((h) => h.id))
    // The tick shows each added host as it was when it answered: not connected yet.
    for (const h of t.hosts.filter((x) => added.has(x.host))) expect(h.error?.code).toBe('KAY_NOT_READY')
    const now = () => sup.statuses().filter((st) => added.has(st.id))
    expect(now().map((st) => `${st.state} ${st.collectPhase}`)).toEqual(Array(4).fill('ready streaming'))
    // The next tick's rows carry no phase: they keep the one the events said.
    const next = await sup.collect({ timeoutMs: 10_000 })
    expect(next.hosts.filter((x) => added.has(x.host) && x.metrics !== undefined)).toHaveLength(4)
    expect(now().map((st) => `${st.state} ${st.collectPhase}`)).toEqual(Array(4).fill('ready streaming'))
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

// The embedding contract: waitUntilSettled (deadline, progress, typed timeout), and what run() / exec() answer for a
// host that is not ready (its last cause travels with the refusal).

/** A failed host backs off for a long time: the tests see its first failure, not a redial. */
const LONG_BACKOFF: Partial<SupervisorOptions> = { backoff: { baseMs: 60_000, capMs: 60_000, stableAfterMs: 10_000 } }
/** A host whose handshake stalls stays connecting for the whole test. */
const STALLED: Partial<SupervisorOptions> = { handshakeTimeoutMs: 60_000 }

describe('Supervisor.waitUntilSettled', () => {
  it('resolves once every host collects or has failed, reporting progress on the way', async () => {
    const seen: FleetProgress[] = []
    const { fleet: f, sup } = await start(6, { hostOverrides: { 5: { refuse: true } } }, LONG_BACKOFF)
    const p = await sup.waitUntilSettled({ timeoutMs: 30_000, onProgress: (q) => seen.push(q) })
    expect(p).toMatchObject({ hosts: 6, settled: true, connecting: 0, starting: 0, probing: 0, backoff: 1 })
    expect(p.streaming + p.exec).toBe(5)
    // The first report is where the fleet stood at the call; the last is the settled one returned.
    expect(seen.length).toBeGreaterThanOrEqual(1)
    expect(seen.at(-1)).toEqual(p)
    // Settled: a collect now has metrics for every host that connected, and the refused host's cause.
    const tick = await sup.collect({ timeoutMs: 5000 })
    expect(tick.hosts.filter((h) => h.metrics !== undefined)).toHaveLength(5)
    const down = tick.hosts.find((h) => h.host === f.hosts[5]!.name)!
    expect(down.error).toMatchObject({ code: 'KAY_NOT_READY', details: { lastError: { code: 'KAY_CONNECT_FAILED' } } })
    // Already settled: resolves at once with the same counts.
    await expect(sup.waitUntilSettled({ timeoutMs: 0 })).resolves.toMatchObject({ settled: true, backoff: 1 })
  })

  it('rejects past its deadline with a typed KAY_TIMEOUT that carries the progress and the pending hosts', async () => {
    const { fleet: f, sup } = await start(3, { hostOverrides: { 0: { stallHandshake: true } } }, STALLED)
    const err = await sup.waitUntilSettled({ timeoutMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(SettleTimeoutError)
    const e = err as SettleTimeoutError
    expect(e.code).toBe('KAY_TIMEOUT')
    expect(e.pending).toEqual([f.hosts[0]!.name])
    expect(e.progress).toMatchObject({ hosts: 3, connecting: 1, settled: false })
    expect(e.message).toContain(f.hosts[0]!.name)
    expect(e.toJSON().details).toMatchObject({ pending: [f.hosts[0]!.name], progress: { connecting: 1 } })
  })

  it('rejects KAY_ABORTED on its signal, KAY_CLOSED when the supervisor stops, KAY_CONFIG on a bad deadline', async () => {
    const { sup } = await start(2, { hostOverrides: { 0: { stallHandshake: true } } }, STALLED)
    const ac = new AbortController()
    const aborted = sup.waitUntilSettled({ timeoutMs: 60_000, signal: ac.signal })
    ac.abort()
    await expect(aborted).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    await expect(sup.waitUntilSettled({ timeoutMs: 60_000, signal: ac.signal })).rejects.toMatchObject({
      code: 'KAY_ABORTED',
    })
    const closed = sup.waitUntilSettled({ timeoutMs: 60_000 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    await sup.stop({ timeoutMs: 2000 })
    expect(await closed).toMatchObject({ code: 'KAY_CLOSED' })
    await expect(sup.waitUntilSettled({ timeoutMs: 1000 })).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    await expect(sup.waitUntilSettled({ timeoutMs: -1 })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })

  it('ends only its own wait when onProgress throws; the supervisor goes on', async () => {
    const { sup } = await start(2, {}, LONG_BACKOFF)
    const boom = new Error('boom')
    let calls = 0
    // The first report comes from the call itself; the second from the shards' events, whose handler must survive.
    await expect(
      sup.waitUntilSettled({
        timeoutMs: 30_000,
        onProgress: () => {
          if (++calls === 2) throw boom
        },
      }),
    ).rejects.toBe(boom)
    expect(calls).toBe(2)
    await expect(sup.waitUntilSettled({ timeoutMs: 30_000 })).resolves.toMatchObject({ settled: true, streaming: 2 })
  })
})

describe('run() and exec() on a host that is not ready', () => {
  it('run() rejects KAY_NOT_READY at once, with the last cause as details.lastError, in the message and as cause', async () => {
    const { fleet: f, sup } = await start(2, { hostOverrides: { 1: { refuse: true } } }, LONG_BACKOFF)
    await sup.waitUntilSettled({ timeoutMs: 30_000 })
    const down = f.hosts[1]!.name
    const err = await sup.run(down, 'true').then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({
      code: 'KAY_NOT_READY',
      host: down,
      details: { state: 'backoff', lastError: { code: 'KAY_CONNECT_FAILED' } },
      cause: { code: 'KAY_CONNECT_FAILED', host: down },
    })
    expect((err as Error).message).toMatch(
      new RegExp(`^${down}: not ready \\(backoff\\); last error KAY_CONNECT_FAILED: `),
    )
    // A ready host runs; exec answers every host exactly once, the down one with the same refusal.
    await expect(sup.run(f.hosts[0]!.name, 'echo hi')).resolves.toMatchObject({ exitCode: 0 })
    const results = []
    for await (const r of sup.exec([f.hosts[0]!.name, down], 'echo hi')) results.push(r)
    expect(results).toHaveLength(2)
    expect(results.find((r) => r.host === down)?.error).toMatchObject({
      code: 'KAY_NOT_READY',
      details: { lastError: { code: 'KAY_CONNECT_FAILED' } },
    })
    expect(results.find((r) => r.host === f.hosts[0]!.name)?.result).toMatchObject({ exitCode: 0 })
    await expect(sup.run('nope', 'true')).rejects.toMatchObject({ code: 'KAY_UNKNOWN_HOST' })
  })
})
