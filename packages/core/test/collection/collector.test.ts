/**
 * HostCollector's policy against a fake actor and channel, on a manual clock (docs/adr/0008-cold-start-converges.md):
 * the stream is probed as soon as the connection is ready and its first frame serves the waiting tick; a tick never
 * starts competing work while the stream is being opened, it reports the phase; an exec collection keeps its own
 * deadline, never runs twice at once, and its late result serves the next tick; probes and execs take slots of the
 * work gate; a stream request has its own deadline and the ticks that cannot wait for it report KAY_TIMEOUT. The
 * same paths against the simulator and real sshd are in collector.sim.test.ts and actor.sshd.test.ts.
 */
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { type CollectorOptions, HostCollector } from '../../src/collection/collector.js'
import { type HostMetrics, identifyCommand, scriptOf } from '../../src/collection/index.js'
import type { HostActor, RunResult } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { ChannelOpenError, NotReadyError, TimeoutError } from '../../src/errors.js'
import type { CollectPhase } from '../../src/types.js'
import { syntheticFrame } from '../fixtures/proc/frames.js'
import { ManualClock } from '../support/manual-clock.js'

const BODY = syntheticFrame()
/** What a node request with the slow sections brings besides (uname marks the slow sections). */
const SLOW = '@@kay uname\nLinux\nfake\n6.1\n#1\nx86_64\n(none)\n'

class FakeChannel extends EventEmitter {
  readonly stderr = { resume() {} }
  readonly writes: string[] = []
  /** What a write does: answer the request (default), hold it until `answer()`, or throw. */
  mode: 'answer' | 'hold' | 'throw' = 'answer'
  held: string[] = []
  closed = false
  constructor(readonly token: string) {
    super()
  }
  write(line: string): boolean {
    if (this.mode === 'throw') throw new Error('channel destroyed')
    this.writes.push(line)
    if (this.mode === 'answer') queueMicrotask(() => this.reply(line))
    else this.held.push(line)
    return true
  }
  /** Answer the oldest held request. */
  answer(): void {
    const line = this.held.shift()
    if (line !== undefined) this.reply(line)
  }
  /** The frame for a request line: with the slow node sections when it asked for them. */
  reply(line: string): void {
    const seq = line.split(/[ \n]/)[0]
    const body = line.includes('slow') ? BODY + SLOW : BODY
    if (!this.closed) this.emit('data', Buffer.from(`${body}@@kay-end ${this.token} ${seq}\n`))
  }
  close(): void {
    if (this.closed) return
    this.closed = true
    queueMicrotask(() => this.emit('close'))
  }
}

interface PendingRun {
  command: string
  resolve: (r: RunResult) => void
  reject: (e: Error) => void
}

class FakeActor extends EventEmitter {
  readonly id = 'fake'
  state = 'ready'
  channels: FakeChannel[] = []
  /** How a new stream channel starts: answering (default) or holding its requests. */
  channelMode: FakeChannel['mode'] = 'answer'
  runs: PendingRun[] = []
  /** Runs answer at once (default) or wait for the test. */
  runMode: 'answer' | 'hold' = 'answer'
  /** Refuse runs with reason 2 while a stream channel is open (MaxSessions 1). */
  oneSession = false
  /** What a new stream channel does once open besides answering as `channelMode` says (e.g. exit at once). */
  whenOpened: ((c: FakeChannel) => void) | undefined
  /** Answer stream requests under this token instead of the one kay sent (something else runs there). */
  streamToken: string | undefined
  /** Every command run, as sent (wrapped for any login shell). */
  readonly commands: string[] = []
  /** What a one-shot collection prints instead of kay's sections (a ForceCommand), and its exit status. */
  foreign: { stdout: string; exitCode: number } | undefined
  /** Commands told to stop (TERM) that have not exited yet (their exits), and what `stopped()` waits for. */
  stopping: Array<() => void> = []
  exits: Promise<void>[] = []
  suspects = 0
  reserved = 0
  get channel(): FakeChannel | undefined {
    return this.channels.at(-1)
  }
  get open(): number {
    return this.channels.filter((c) => !c.closed).length
  }
  notReady() {
    return new NotReadyError(`fake: not ready (${this.state})`, { host: this.id })
  }
  status() {
    return { id: this.id, state: this.state, attempts: 0, handshakes: 1 }
  }
  setState(state: string): void {
    this.state = state
    this.emit('state', this.status())
  }
  reserveChannel() {
    this.reserved++
    return true
  }
  releaseReservedChannel() {
    this.reserved--
  }
  suspect() {
    this.suspects++
  }
  run(command: string): Promise<RunResult> {
    if (this.state !== 'ready') return Promise.reject(this.notReady())
    if (this.oneSession && this.open > 0) {
      return Promise.reject(
        new ChannelOpenError('fake: channel open failed', { host: this.id, details: { reason: 2 } }),
      )
    }
    this.commands.push(command)
    return new Promise((resolve, reject) => {
      const r = { command: sent(command), resolve, reject }
      this.runs.push(r)
      if (this.runMode === 'answer') queueMicrotask(() => this.finishRun(r))
    })
  }
  finishRun(r = this.runs.find((x) => x.command !== 'done')): void {
    if (!r) return
    const stdout = r.command.startsWith(': kay-detail')
      ? `${BODY}@@kay ps\n  PID USER\n`
      : r.command.startsWith(': kay-collect v1 node slow;')
        ? BODY + SLOW
        : BODY
    r.command = 'done'
    if (this.foreign) r.resolve({ ...this.foreign, stderr: '', signal: null, durationMs: 1 })
    else r.resolve({ stdout, stderr: '', exitCode: 0, signal: null, durationMs: 1 })
  }
  /**
   * The run's deadline passed, as the real actor reports it: the call rejects with KAY_TIMEOUT at once, while the
   * command (told TERM) goes on until `exitStopped()`.
   */
  timeOutRun(r = this.runs.find((x) => x.command !== 'done')): void {
    if (!r) return
    r.command = 'done'
    this.exits.push(new Promise<void>((resolve) => this.stopping.push(resolve)))
    r.reject(new TimeoutError('fake: command timed out after 30000 ms', { host: this.id }))
  }
  exitStopped(): void {
    for (const exit of this.stopping.splice(0)) exit()
    this.exits = []
  }
  stopped(): Promise<void> {
    return Promise.all(this.exits).then(() => undefined)
  }
  openExec(command: string, setup?: (c: FakeChannel) => void): Promise<FakeChannel> {
    const id = identifyCommand(command)
    const token = id.kind === 'stream' ? (this.streamToken ?? id.token) : 'none'
    const c = new FakeChannel(token)
    c.mode = this.channelMode
    this.channels.push(c)
    setup?.(c)
    this.whenOpened?.(c)
    return Promise.resolve(c)
  }
}

const flush = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
}

function make(opts: CollectorOptions = {}, actor = new FakeActor()) {
  const clock = new ManualClock()
  const phases: Array<CollectPhase | undefined> = []
  const collector = new HostCollector(actor as unknown as HostActor, {
    clock,
    flavours: ['perl'],
    onPhase: (p) => phases.push(p),
    ...opts,
  })
  return { clock, actor, collector, phases }
}

/** A tick as collectTo reports it: metrics or an error, whichever comes. */
function tick(c: HostCollector, timeoutMs: number) {
  const out: { m?: HostMetrics; err?: { code: string; details?: Record<string, unknown> }; done: boolean } = {
    done: false,
  }
  c.collectTo(timeoutMs, (m, err) => {
    out.done = true
    if (m) out.m = m
    else out.err = err as never
  })
  return out
}

describe('HostCollector: the stream is probed as soon as the connection is ready', () => {
  it('opens the stream with no tick asked, and its first frame is the next tick baseline (no exec, one session)', async () => {
    const { actor, collector, phases } = make()
    await flush()
    expect(collector.phase).toBe('streaming')
    expect(phases).toEqual(['starting', 'probing', 'streaming'])
    expect(actor.channels.length).toBe(1)
    expect((await collector.collect()).load1).toBe(1.5)
    expect(collector.mode).toBe('stream-perl')
    expect(actor.channel!.writes.length).toBe(2) // the probe's request, then the tick's own
    expect(actor.runs.length).toBe(0)
    collector.close()
  })
})

describe('HostCollector: ticks while the stream is being opened', () => {
  it('waits for the probe and answers from its first frame, with no exec run', async () => {
    const actor = new FakeActor()
    actor.channelMode = 'hold'
    const { clock, collector } = make({}, actor)
    await flush()
    expect(collector.phase).toBe('probing')
    const t = tick(collector, 1000)
    expect(t.done).toBe(false)
    actor.channel!.answer()
    await flush()
    expect(t.m?.load1).toBe(1.5)
    expect(actor.runs.length).toBe(0)
    expect(collector.phase).toBe('streaming')
    collector.close()
    expect(clock.pending).toBe(0)
  })

  it('reports KAY_NOT_READY with state `probing` past the tick deadline; the frame then serves the next tick', async () => {
    const actor = new FakeActor()
    actor.channelMode = 'hold'
    const { clock, collector } = make({}, actor)
    await flush()
    const t1 = tick(collector, 1000)
    clock.advance(1000)
    expect(t1.err).toMatchObject({ code: 'KAY_NOT_READY', details: { state: 'probing' } })
    // A slow host: the frame comes 1.5 s into the probe, between ticks.
    actor.channel!.answer()
    await flush()
    const t2 = tick(collector, 1000)
    expect(t2.m?.load1).toBe(1.5)
    expect(actor.runs.length).toBe(0)
    expect(actor.channels.length).toBe(1)
    expect(actor.channel!.writes.length).toBe(1) // the probe's request only: the late frame served tick 2
    collector.close()
  })

  it('reports KAY_NOT_READY with state `starting` while the work gate has no slot, and probes once one frees', async () => {
    const gate = new LocalDialGate({ cap: 1 })
    const held = gate.tryAcquire()!
    const { clock, actor, collector, phases } = make({ workGate: gate })
    await flush()
    expect(collector.phase).toBe('starting')
    expect(actor.channels.length).toBe(0)
    const t = tick(collector, 500)
    clock.advance(500)
    expect(t.err).toMatchObject({ code: 'KAY_NOT_READY', details: { state: 'starting' } })
    expect(actor.runs.length).toBe(0)
    held.release('ok')
    await flush()
    expect(phases).toEqual(['starting', 'probing', 'streaming'])
    // The probe gave its slot back once the stream was up.
    expect(gate.stats().inFlight).toBe(0)
    collector.close()
  })

  it('bounds probes across hosts by the work gate: never more in flight than its cap, and every host gets a stream', async () => {
    const gate = new LocalDialGate({ cap: 2 })
    const hosts = Array.from({ length: 6 }, () => {
      const a = new FakeActor()
      a.channelMode = 'hold'
      return { a, ...make({ workGate: gate }, a) }
    })
    await flush()
    let maxInFlight = 0
    for (let round = 0; round < 10 && hosts.some((h) => h.collector.phase !== 'streaming'); round++) {
      const probing = hosts.filter((h) => h.collector.phase === 'probing')
      maxInFlight = Math.max(maxInFlight, probing.length, gate.stats().inFlight)
      for (const h of probing) h.a.channel!.answer()
      await flush()
    }
    expect(maxInFlight).toBe(2)
    expect(hosts.every((h) => h.collector.phase === 'streaming')).toBe(true)
    for (const h of hosts) h.collector.close()
  })

  it('a probe that times out ends the probing for now: exec serves the ticks, the stream is probed again later', async () => {
    const actor = new FakeActor()
    actor.channelMode = 'hold'
    const { clock, collector } = make({ probeTimeoutMs: 2000, reopenBaseMs: 100, reopenCapMs: 100 }, actor)
    await flush()
    const t = tick(collector, 5000)
    clock.advance(2000)
    await flush()
    expect(collector.phase).toBe('exec')
    expect(actor.suspects).toBe(1)
    expect(t.m?.load1).toBe(1.5)
    expect(actor.runs.length).toBe(1)
    expect(actor.reserved).toBe(0)
    actor.channelMode = 'answer'
    clock.advance(100)
    await flush()
    expect(collector.phase).toBe('streaming')
    collector.close()
  })

  it('a host where no loop runs collects over exec, and the stream is probed again after a backoff', async () => {
    const actor = new FakeActor()
    actor.whenOpened = (c) => c.close() // the interpreter is missing: the channel exits at once
    const { clock, collector } = make({ flavours: ['perl', 'sh'], reopenBaseMs: 1000, reopenCapMs: 1000 }, actor)
    await flush()
    expect(actor.channels.length).toBe(2)
    expect(collector.phase).toBe('exec')
    expect((await collector.collect()).load1).toBe(1.5)
    expect(collector.mode).toBe('exec')
    clock.advance(1000)
    await flush()
    expect(actor.channels.length).toBe(4)
    collector.close()
    expect(clock.pending).toBe(0)
  })
})

describe('HostCollector: exec collections', () => {
  it('never runs two at once for a host, is not restarted per tick, and its late result serves the next tick', async () => {
    const actor = new FakeActor()
    actor.runMode = 'hold'
    const { clock, collector } = make({ mode: 'exec', execTimeoutMs: 30_000 }, actor)
    expect(collector.phase).toBe('exec')
    const t1 = tick(collector, 1000)
    await flush()
    expect(actor.runs.length).toBe(1)
    clock.advance(1000)
    expect(t1.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    const t2 = tick(collector, 1000)
    await flush()
    expect(actor.runs.length).toBe(1) // tick 2 waits for the same run
    actor.finishRun()
    await flush()
    expect(t2.m?.load1).toBe(1.5)
    // Finished between ticks: kept for the next tick, which starts nothing.
    const t3 = tick(collector, 1000)
    await flush()
    expect(actor.runs.length).toBe(2)
    clock.advance(1000)
    expect(t3.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    actor.finishRun()
    await flush()
    const t4 = tick(collector, 1000)
    expect(t4.m?.load1).toBe(1.5)
    expect(actor.runs.length).toBe(2)
    collector.close()
  })

  it('holds a work slot while it runs, gives it back at the end, or after workSlotMs for a stuck host', async () => {
    const gate = new LocalDialGate({ cap: 1 })
    const actor = new FakeActor()
    actor.runMode = 'hold'
    const { clock, collector } = make({ mode: 'exec', workGate: gate, workSlotMs: 5000 }, actor)
    const t = tick(collector, 60_000)
    await flush()
    expect(gate.stats().inFlight).toBe(1)
    clock.advance(5000)
    expect(gate.stats().inFlight).toBe(0)
    actor.finishRun()
    await flush()
    expect(t.m).toBeDefined()
    const t2 = tick(collector, 60_000)
    await flush()
    expect(gate.stats().inFlight).toBe(1)
    actor.finishRun()
    await flush()
    expect(t2.m).toBeDefined()
    expect(gate.stats().inFlight).toBe(0)
    collector.close()
    expect(clock.pending).toBe(0)
  })
})

describe('HostCollector: stream requests', () => {
  async function streaming(opts: CollectorOptions = {}) {
    const made = make({ streamTimeoutMs: 5000, ...opts })
    await flush()
    expect(made.collector.phase).toBe('streaming')
    return { ...made, channel: made.actor.channel! }
  }

  it('answers a tick from its frame and leaves no deadline armed', async () => {
    const { clock, actor, collector, channel } = await streaming()
    const m = await collector.collect()
    expect(m.load1).toBe(1.5)
    expect(channel.writes.length).toBe(2) // the probe's request and the tick's
    expect(actor.runs.length).toBe(0)
    expect(clock.pending).toBe(0)
    collector.close()
  })

  it('a frame later than the tick: KAY_TIMEOUT and a keepalive probe, the request stays and serves the next tick', async () => {
    const { clock, actor, collector, channel } = await streaming()
    channel.mode = 'hold'
    const t1 = tick(collector, 1000)
    clock.advance(1000)
    expect(t1.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    expect(actor.suspects).toBe(1)
    const t2 = tick(collector, 1000)
    expect(channel.writes.length).toBe(2) // no second request while the first is in flight
    channel.answer()
    await flush()
    expect(t2.m?.load1).toBe(1.5)
    expect(actor.runs.length).toBe(0)
    expect(collector.phase).toBe('streaming')
    collector.close()
  })

  it('a frame past the request deadline fails the stream: exec serves the waiting tick, the stream reopens', async () => {
    const { clock, actor, collector, channel } = await streaming({ reopenBaseMs: 100, reopenCapMs: 100 })
    channel.mode = 'hold'
    const t = tick(collector, 10_000)
    clock.advance(5000)
    await flush()
    expect(t.m?.load1).toBe(1.5)
    expect(collector.mode).toBe('exec')
    expect(actor.runs.length).toBe(1)
    expect(actor.suspects).toBe(1)
    expect(actor.reserved).toBe(0)
    actor.channelMode = 'answer'
    clock.advance(100)
    await flush()
    expect(collector.phase).toBe('streaming')
    expect(actor.channels.length).toBe(2)
    collector.close()
  })

  it('fails the request, not the process, when the channel throws on write; exec serves the tick', async () => {
    const { clock, actor, collector, channel } = await streaming()
    channel.mode = 'throw'
    expect((await collector.collect()).load1).toBe(1.5)
    expect(collector.mode).toBe('exec')
    expect(actor.runs.length).toBe(1)
    expect(actor.suspects).toBe(0)
    collector.close()
    expect(clock.pending).toBe(0)
  })

  it('reuses the sample before last: a long run of ticks keeps giving fresh metrics', async () => {
    const { clock, collector } = await streaming()
    const ats: number[] = []
    for (let i = 0; i < 5; i++) {
      clock.advance(1000)
      ats.push((await collector.collect()).at)
    }
    expect(ats).toEqual([1, 2, 3, 4, 5].map((k) => ats[0]! + (k - 1) * 1000))
    collector.close()
  })

  it('collectTo reports each tick exactly once: from the frame, and at once for a host that is not ready', async () => {
    const { clock, actor, collector } = await streaming()
    const calls: Array<[HostMetrics | undefined, unknown]> = []
    collector.collectTo(1000, (m, err) => calls.push([m, err]))
    // The stream's answer comes as a data event, later: nothing is reported before it.
    expect(calls).toEqual([])
    await flush()
    expect(calls.length).toBe(1)
    expect(calls[0]![0]?.load1).toBe(1.5)
    expect(clock.pending).toBe(0)
    actor.setState('backoff')
    expect(collector.phase).toBeUndefined()
    collector.collectTo(1000, (m, err) => calls.push([m, err]))
    expect(calls.length).toBe(2)
    expect(calls[1]![1]).toMatchObject({ code: 'KAY_NOT_READY' })
    await flush()
    expect(calls.length).toBe(2)
    collector.close()
  })

  it('answers the waiting ticks when the connection drops, and gives back what it held', async () => {
    const gate = new LocalDialGate({ cap: 1 })
    const actor = new FakeActor()
    actor.channelMode = 'hold'
    const { clock, collector } = make({ workGate: gate }, actor)
    await flush()
    const t = tick(collector, 10_000)
    actor.setState('backoff')
    expect(t.err).toMatchObject({ code: 'KAY_NOT_READY' })
    await flush()
    expect(gate.stats().inFlight).toBe(0)
    expect(clock.pending).toBe(0)
    // Ready again: probed again at once.
    actor.channelMode = 'answer'
    actor.setState('ready')
    await flush()
    expect(collector.phase).toBe('streaming')
    collector.close()
  })
})

describe('HostCollector: drill-in beside the stream', () => {
  it('on a host that allows one session, the stream steps aside for the drill-in and comes back after it', async () => {
    const actor = new FakeActor()
    actor.oneSession = true
    const { collector } = make({}, actor)
    await flush()
    expect(collector.phase).toBe('streaming')
    const d = await collector.detail()
    expect(d.metrics.load1).toBe(1.5)
    await flush()
    expect(collector.phase).toBe('streaming')
    expect(actor.channels.length).toBe(2)
    // The second drill-in knows the limit: it does not try beside the stream first.
    const before = actor.runs.length
    await collector.detail()
    expect(actor.runs.length).toBe(before + 1)
    await flush()
    expect(collector.phase).toBe('streaming')
    expect((await collector.collect()).load1).toBe(1.5)
    collector.close()
  })
})

describe('HostCollector node requests', () => {
  const words = (line: string) => line.trim().split(' ').slice(1).join(' ')
  /** The node words of each exec collection kay ran (`node` or `node slow`). */
  const execWords = (a: FakeActor) => a.commands.map((c) => /^: kay-collect v1 ([a-z ]+);/.exec(sent(c))?.[1])

  it('asks for the node sources on every request, and for the slow ones at first and then every slowEvery ticks', async () => {
    const { actor, collector } = make({ node: true, slowEvery: 3 })
    await flush()
    expect(collector.phase).toBe('streaming')
    for (let i = 0; i < 6; i++) await collector.collect()
    // The probe's request (the stream's first sample) brought the slow sections; no exec ran.
    expect(actor.commands).toEqual([])
    expect(actor.channel!.writes.map(words)).toEqual([
      'node slow',
      'node',
      'node',
      'node slow',
      'node',
      'node',
      'node slow',
    ])
    expect(collector.nodeSeries!.hasSlow).toBe(true)
    collector.close()
  })

  it('over exec, runs the one-shot node collection with the same cadence', async () => {
    const { actor, collector } = make({ mode: 'exec', node: true, slowEvery: 3 })
    for (let i = 0; i < 6; i++) await collector.collect()
    expect(execWords(actor)).toEqual(['node slow', 'node', 'node', 'node slow', 'node', 'node'])
    expect(collector.nodeSeries!.hasSlow).toBe(true)
    collector.close()
  })

  it('the exec fallback of a host where no loop runs asks for the node sections, slow ones first', async () => {
    const actor = new FakeActor()
    actor.whenOpened = (c) => c.close() // no interpreter for the loop
    const { collector } = make({ node: true }, actor)
    await flush()
    expect(collector.phase).toBe('exec')
    for (let i = 0; i < 3; i++) await collector.collect()
    expect(execWords(actor)).toEqual(['node slow', 'node', 'node'])
    expect(collector.nodeSeries!.hasSlow).toBe(true)
    collector.close()
  })

  it('stops asking for the slow sections for a minute, doubling, after a slow stream request got no answer', async () => {
    // The stream stays down once failed (a long re-open backoff): the ticks after it go over exec.
    const { clock, actor, collector } = make({
      node: true,
      slowEvery: 1000,
      streamTimeoutMs: 500,
      reopenBaseMs: 600_000,
      reopenCapMs: 600_000,
      random: () => 1,
    })
    await flush()
    const channel = actor.channel!
    expect(collector.nodeSeries!.hasSlow).toBe(true)
    channel.mode = 'hold'
    // Nothing kept: the next request asks for the slow sections, and gets no answer within its own deadline.
    collector.nodeSeries!.dropSlow()
    const t = collector.collect(2000)
    await flush()
    clock.advance(500)
    await t
    expect(channel.writes.map(words).at(-1)).toBe('node slow')
    // The tick was served over exec without them, and so are the next ones for a minute.
    await collector.collect()
    clock.advance(59_000)
    await collector.collect()
    expect(execWords(actor)).toEqual(['node', 'node', 'node'])
    expect(collector.nodeSeries!.hasSlow).toBe(false)
    clock.advance(1000)
    actor.runMode = 'hold'
    const slow = tick(collector, 60_000)
    await flush()
    expect(execWords(actor).at(-1)).toBe('node slow')
    // That one hangs too (the same mount): its deadline passes, and the slow sections pause for two minutes now.
    actor.timeOutRun()
    actor.exitStopped()
    await flush()
    expect(slow.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    actor.runMode = 'answer'
    await collector.collect()
    clock.advance(119_000)
    await collector.collect()
    expect(execWords(actor).slice(-2)).toEqual(['node', 'node'])
    clock.advance(1000)
    await collector.collect()
    expect(execWords(actor).at(-1)).toBe('node slow')
    collector.close()
  })

  it('a probe whose first (slow) request times out pauses the slow sections for the exec that follows', async () => {
    const actor = new FakeActor()
    actor.channelMode = 'hold'
    const { clock, collector } = make({ node: true, probeTimeoutMs: 2000 }, actor)
    await flush()
    expect(actor.channel!.writes.map(words)).toEqual(['node slow'])
    const t = tick(collector, 5000)
    clock.advance(2000)
    await flush()
    expect(collector.phase).toBe('exec')
    expect(t.m).toBeDefined()
    expect(execWords(actor)).toEqual(['node'])
    collector.close()
  })

  it('a failed tick leaves no node series to write; a lost connection drops the counter state and slow series', async () => {
    const { actor, collector } = make({ node: true })
    await flush()
    await collector.collect()
    expect(collector.nodeSeries!.hasSlow).toBe(true)
    actor.channel!.mode = 'throw'
    actor.foreign = { stdout: 'no\n', exitCode: 0 }
    await expect(collector.collect()).rejects.toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT' })
    const written: unknown[] = []
    collector.nodeSeries!.writeTo({ family: () => ({ ascii: () => written.push(1) }) } as never)
    expect(written).toEqual([])
    actor.setState('backoff')
    expect(collector.nodeSeries!.hasSlow).toBe(false)
    collector.close()
  })
})

describe("HostCollector: output that is not kay's", () => {
  const FORCED = { stdout: 'this account runs backups only\n', exitCode: 0 }

  it('an exec collection and a drill-in report KAY_UNEXPECTED_OUTPUT naming what the host printed', async () => {
    const actor = new FakeActor()
    actor.foreign = FORCED
    const { collector } = make({ mode: 'exec' }, actor)
    const err = await collector.collect().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT', host: 'fake' })
    expect((err as Error).message).toContain('printed: this account runs backups only')
    await expect(collector.detail()).rejects.toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT' })
    collector.close()
  })

  it('a ForceCommand on the stream flavours: each probe fails as its channel ends, the tick says what it printed', async () => {
    const actor = new FakeActor()
    actor.foreign = FORCED
    actor.channelMode = 'hold'
    // The forced command prints its line and exits, whatever kay asked for.
    actor.whenOpened = (c) =>
      queueMicrotask(() => {
        c.emit('data', Buffer.from(FORCED.stdout))
        c.close()
      })
    const { clock, collector } = make({ flavours: ['perl', 'sh'] }, actor)
    const t = tick(collector, 5000)
    await flush()
    expect(actor.channels.length).toBe(2)
    expect(collector.phase).toBe('exec')
    expect(t.err).toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT', host: 'fake' })
    expect((t.err as unknown as Error).message).toContain('printed: this account runs backups only')
    expect(clock.now()).toBe(new ManualClock().now()) // no deadline had to pass
    collector.close()
  })

  it('a flavour answering with end markers that are not its own fails its probe at once, not at the deadline', async () => {
    const actor = new FakeActor()
    actor.streamToken = 'someone-else' // answers every request, under another token
    const { clock, collector } = make({ flavours: ['perl', 'sh'] }, actor)
    const t = tick(collector, 5000)
    await flush()
    expect(actor.channels.length).toBe(2)
    expect(actor.open).toBe(0)
    expect(collector.phase).toBe('exec')
    expect(t.m?.load1).toBe(1.5) // the exec collection answered
    expect(clock.now()).toBe(new ManualClock().now())
    collector.close()
  })
})

describe('HostCollector: an exec collection stopped at its deadline', () => {
  it("holds the host's one exec collection and its work slot until the stopped command has exited", async () => {
    const gate = new LocalDialGate({ cap: 1 })
    const actor = new FakeActor()
    actor.runMode = 'hold'
    const { clock, collector } = make({ mode: 'exec', workGate: gate, workSlotMs: 60_000 }, actor)
    const t1 = tick(collector, 60_000)
    await flush()
    expect(actor.runs.length).toBe(1)
    // The actor's deadline: TERM sent, the command still runs for up to the grace.
    actor.timeOutRun()
    await flush()
    const t2 = tick(collector, 60_000)
    await flush()
    expect(actor.runs.length).toBe(1) // no second collection beside the one still stopping
    expect(gate.stats().inFlight).toBe(1)
    expect(t1.done).toBe(false)
    actor.exitStopped()
    await flush()
    // Both ticks waited for that collection: both get its outcome, and its slot is free.
    expect(t1.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    expect(t2.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    expect(gate.stats().inFlight).toBe(0)
    const t3 = tick(collector, 60_000)
    await flush()
    expect(actor.runs.length).toBe(2)
    expect(gate.stats().inFlight).toBe(1)
    actor.finishRun()
    await flush()
    expect(t3.m?.load1).toBe(1.5)
    expect(gate.stats().inFlight).toBe(0)
    collector.close()
    expect(clock.pending).toBe(0)
  })

  it('moves on after twice the stop grace when the channel never closes', async () => {
    const actor = new FakeActor()
    actor.runMode = 'hold'
    const { clock, collector } = make({ mode: 'exec' }, actor)
    const t1 = tick(collector, 60_000)
    await flush()
    actor.timeOutRun()
    await flush()
    clock.advance(1999)
    await flush()
    expect(t1.done).toBe(false)
    clock.advance(1)
    await flush()
    expect(t1.err).toMatchObject({ code: 'KAY_TIMEOUT' })
    tick(collector, 60_000)
    await flush()
    expect(actor.runs.length).toBe(2)
    collector.close()
  })
})

/** A command as kay wrote it, before the login-shell wrapping. */
function sent(command: string): string {
  return scriptOf(command) ?? command
}
