import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { type Clock, systemClock } from '../../src/clock.js'
import { type CollectorOptions, HostCollector } from '../../src/collection/collector.js'
import { NodeSink } from '../../src/collection/series-writer.js'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { type SimFleet, startSimFleet } from '../../src/sim/index.js'
import { until } from '../../src/testing/index.js'
import type { Identity } from '../../src/types.js'
import { clientIdentity, memoryVerifier, waitForState } from '../support/fixtures.js'
import { ManualClock } from '../support/manual-clock.js'

let fleet: SimFleet
let identity: Identity
let publicKey: string
const open: Array<{ a: HostActor; c: HostCollector }> = []

beforeAll(async () => {
  const c = clientIdentity()
  identity = c.identity
  publicKey = c.publicKey
  fleet = await startSimFleet({
    hosts: 10,
    authorizedKeys: [c.publicKey],
    hostOverrides: {
      1: { streamFlavours: ['sh'] },
      2: { streamFlavours: [] },
      3: { streamFault: 'forge-token' },
      4: { streamFault: 'split-marker' },
      6: { streamFlavours: ['bash', 'sh'] },
      7: { streamFlavours: ['python', 'awk', 'bash', 'sh'] },
      8: { streamFlavours: ['awk', 'bash', 'sh'] },
      // A Kubernetes-sized host: 300 more mounts, 500 more disks.
      9: { extraMounts: 300, extraDisks: 500 },
    },
  })
})
afterAll(() => fleet.close())
afterEach(async () => {
  for (const { a, c } of open.splice(0)) {
    c.close()
    await a.close()
  }
})

async function collectorFor(i: number, opts: CollectorOptions = {}, from: SimFleet = fleet) {
  const h = from.hosts[i]!
  const a = new HostActor({
    target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
  })
  const c = new HostCollector(a, { streamTimeoutMs: 1000, ...opts })
  open.push({ a, c })
  a.start()
  await waitForState(a, 'ready')
  return { a, c }
}

/**
 * A collector on a one-host fleet of its own whose clock moves a second at each read, so two reads always show
 * counters that moved: on the system clock, reads a millisecond apart can show the same jiffies, and then there is
 * no CPU % between them.
 */
async function steppingCollector() {
  let t = Date.now()
  const stepping: Clock = { ...systemClock, now: () => (t += 1000) }
  const own = await startSimFleet({ hosts: 1, authorizedKeys: [publicKey], clock: stepping })
  onTestFinished(() => own.close())
  return { fleet: own, ...(await collectorFor(0, {}, own)) }
}

/** Until the stream probe is done (the collector streams, or collects over exec). */
function settleStream(c: HostCollector): Promise<unknown> {
  return until('the collector streaming or in exec', () => c.phase === 'streaming' || c.phase === 'exec', 5000)
}

describe('HostCollector', () => {
  it('collects over a persistent stream opened when the connection is ready: no new channel per tick', async () => {
    const { fleet: own, c } = await steppingCollector()
    // The first tick waits for the stream probe and is answered by its first frame: one channel, no exec.
    const first = await c.collect()
    expect(c.mode).toBe('stream-perl')
    expect(first.cpuPct).toBeUndefined()
    expect(own.host(0).stats().channelsOpened).toBe(1)
    let m = await c.collect()
    for (let i = 0; i < 20; i++) m = await c.collect()
    expect(own.host(0).stats().channelsOpened).toBe(1)
    expect(m.cpuPct).toBeGreaterThanOrEqual(0)
    expect(m.cpuPct).toBeLessThanOrEqual(100)
    expect(m.memTotalBytes).toBeGreaterThan(0)
    expect(m.rootFsUsedPct).toBeGreaterThan(0)
  })

  // Probed in STREAM_FLAVOURS order (perl first): the first loop whose interpreter the host has wins.
  it.each([
    [7, 'stream-python', 'perl'],
    [8, 'stream-awk', 'perl or python'],
    [6, 'stream-bash', 'perl, python or awk'],
    [1, 'stream-sh', 'perl, python, awk or bash'],
  ] as const)('host %i runs %s (it has no %s)', async (index, mode, _lacks) => {
    const { c } = await collectorFor(index)
    await settleStream(c)
    expect(c.mode).toBe(mode)
  })

  it('falls back to exec per tick on a host where every stream flavour fails', async () => {
    const { c } = await collectorFor(2)
    for (let i = 0; i < 4; i++) {
      await c.collect()
      expect(c.mode).toBe('exec')
    }
  })

  it('drops forged frames, never attributing them to a tick, and still reports the tick', async () => {
    const { c } = await collectorFor(3)
    // The probe gives up on a channel that answers with frames that are not its own (not at its deadline).
    await settleStream(c)
    expect(c.phase).toBe('exec')
    for (let i = 0; i < 4; i++) {
      const m = await c.collect()
      expect(m.memTotalBytes).toBeGreaterThan(0)
      expect(c.mode).toBe('exec')
    }
  })

  it('reassembles an end marker split across chunks', async () => {
    const { c } = await collectorFor(4)
    await settleStream(c)
    expect(c.mode).toBe('stream-perl')
    expect((await c.collect()).load1).toBeGreaterThanOrEqual(0)
  })

  it('falls back to exec for the tick when the stream stalls, then reopens it later', async () => {
    const { c } = await collectorFor(5, { reopenBaseMs: 1, reopenCapMs: 1, probeTimeoutMs: 500 })
    await settleStream(c)
    expect(c.mode).toBe('stream-perl')
    fleet.setFault(5, { streamFault: 'stall' })
    const m = await c.collect(4000)
    expect(m.memTotalBytes).toBeGreaterThan(0)
    expect(c.mode).toBe('exec')
    fleet.setFault(5, { streamFault: 'none' })
    // Re-opened by the collector itself after its backoff, with no tick asking.
    await until('the collector streaming', () => c.phase === 'streaming', 5000)
    await c.collect()
    expect(c.mode).toBe('stream-perl')
  })

  it('gives a typed parse error for garbage /proc content, for that host only', async () => {
    const { c } = await collectorFor(0, { mode: 'exec' })
    fleet.setFault(0, { procFault: 'binary' })
    try {
      await expect(c.collect()).rejects.toMatchObject({ code: 'KAY_PARSE_ERROR', host: fleet.hosts[0]!.name })
    } finally {
      fleet.setFault(0, { procFault: 'none' })
    }
    expect((await c.collect()).memTotalBytes).toBeGreaterThan(0)
  })

  it('answers NotReady at once when the connection is down', async () => {
    const { a, c } = await collectorFor(0)
    await a.close()
    await expect(c.collect()).rejects.toMatchObject({ code: 'KAY_CLOSED' })
  })

  it('drills in on a new channel of the same connection', async () => {
    // The drill-in's counters are always past the tick's (see steppingCollector).
    const { a, c } = await steppingCollector()
    await c.collect()
    const first = await c.detail()
    expect(first.processes.length).toBeGreaterThan(0)
    expect(first.filesystems.length).toBeGreaterThan(0)
    // Ticks keep only the aggregate cpu counters: per-core % needs a previous drill-in.
    expect(first.metrics.cpuPct).toBeGreaterThanOrEqual(0)
    expect(first.perCpuPct).toEqual([])
    const d = await c.detail()
    expect(d.perCpuPct.length).toBe(d.metrics.cpus)
    expect(a.status().handshakes).toBe(1)
  })
})

describe('node collections', () => {
  /** Series per family of the host's last tick (written once: call it once per tick). */
  const familyCounts = (c: HostCollector): Map<string, number> => {
    const sink = new NodeSink()
    c.nodeSeries!.writeTo(sink)
    const { families, parts } = sink.take()
    return new Map(families.map((f, i) => [f, Buffer.from(parts[i]!).toString('utf8').split('\n').length - 1]))
  }

  it('fits a host with 300 more mounts and 500 more disks in a frame, every mount and disk in', async () => {
    const { c } = await collectorFor(9, { node: true })
    await settleStream(c)
    expect(c.mode).toBe('stream-perl')
    await c.collect()
    const counts = familyCounts(c)
    expect(counts.get('node_filesystem_size_bytes')).toBeGreaterThan(300)
    expect(counts.get('node_disk_reads_completed_total')).toBeGreaterThan(500)
    expect(c.nodeSeries!.overLimit).toBe(0)
  })

  it('refuses a frame past the cap with a typed error for that host, never cutting it silently', async () => {
    const { c } = await collectorFor(9, { node: true, maxFrameBytes: 64 * 1024 })
    const err = await c.collect().catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'KAY_OUTPUT_LIMIT', host: fleet.hosts[9]!.name })
    expect(familyCounts(c).get('node_filesystem_size_bytes')).toBeUndefined()
  })

  it('keeps the slow families between slow ticks and asks for them every slowEvery ticks', async () => {
    const { c } = await collectorFor(0, { node: true, slowEvery: 3 })
    await settleStream(c)
    const asked: number[] = []
    const before = fleet.host(0).stats().streamRequests
    for (let i = 0; i < 6; i++) {
      await c.collect()
      asked.push(familyCounts(c).get('node_uname_info') ?? 0)
    }
    expect(fleet.host(0).stats().streamRequests - before).toBe(6)
    // Written on every tick, whether this tick brought them or an earlier one did.
    expect(asked).toEqual([1, 1, 1, 1, 1, 1])
  })
})

describe('half-open detection through the stream', () => {
  it('probes at once when a frame does not come, finding a half-open host within stream timeout + probe deadline', async () => {
    const clock = new ManualClock()
    const h = fleet.hosts[0]!
    const a = new HostActor({
      target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
      identity,
      verifier: memoryVerifier(),
      dialGate: new LocalDialGate(),
      clock,
      random: () => 0.5,
      keepaliveIntervalMs: 15_000,
      probeDeadlineMs: 5_000,
    })
    const c = new HostCollector(a, { clock, streamTimeoutMs: 2000 })
    open.push({ a, c })
    a.start()
    await waitForState(a, 'ready')
    // The stream is opened when the connection is ready (the probe's own deadline runs on the manual clock).
    await until('the collector streaming', () => c.phase === 'streaming', 5000)
    await c.collect()
    expect(c.mode).toBe('stream-perl')
    fleet.setFault(0, { halfOpen: true })
    try {
      const tick = c.collect(10_000)
      tick.catch(() => {})
      // The tick's frame deadline is armed on the manual clock within collect(), and the probe's deadline within
      // suspect(): no wait on the event loop is needed between the steps.
      clock.advance(2000) // the frame deadline: the actor is told to probe now
      expect(a.state).toBe('ready')
      clock.advance(5000) // the probe deadline, well before the 15 s idle interval
      expect(a.state).toBe('backoff')
      expect(a.status().lastError?.code).toBe('KAY_KEEPALIVE_TIMEOUT')
      await expect(tick).rejects.toMatchObject({ host: h.name })
    } finally {
      fleet.setFault(0, { halfOpen: false })
    }
  })
})
