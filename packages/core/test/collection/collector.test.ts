/**
 * HostCollector's stream request path against a fake actor and channel, on a manual clock: how a request is
 * settled (by its frame, by its deadline, by a write that throws) and that nothing is left armed afterwards.
 * The same paths against the simulator and real sshd are in collector.sim.test.ts and actor.sshd.test.ts.
 */
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { type CollectorOptions, HostCollector } from '../../src/collection/collector.js'
import { type HostMetrics, identifyCommand, scriptOf } from '../../src/collection/index.js'
import type { HostActor } from '../../src/connection/actor.js'
import { NotReadyError } from '../../src/errors.js'
import { syntheticFrame } from '../fixtures/proc/frames.js'
import { ManualClock } from '../support/manual-clock.js'

const BODY = syntheticFrame()
/** What a node request with the slow sections brings besides (uname marks the slow sections). */
const SLOW = '@@kay uname\nLinux\nfake\n6.1\n#1\nx86_64\n(none)\n'

class FakeChannel extends EventEmitter {
  readonly stderr = { resume() {} }
  readonly writes: string[] = []
  /** What a write does: answer the request (default), stay silent, or throw. */
  mode: 'answer' | 'silent' | 'throw' = 'answer'
  constructor(readonly token: string) {
    super()
  }
  write(line: string): boolean {
    if (this.mode === 'throw') throw new Error('channel destroyed')
    this.writes.push(line)
    if (this.mode === 'answer') {
      const seq = line.split(/[ \n]/)[0]
      const body = line.includes('slow') ? BODY + SLOW : BODY
      queueMicrotask(() => this.emit('data', Buffer.from(`${body}@@kay-end ${this.token} ${seq}\n`)))
    }
    return true
  }
  close(): void {
    queueMicrotask(() => this.emit('close'))
  }
}

class FakeActor extends EventEmitter {
  readonly id = 'fake'
  state = 'ready'
  channel: FakeChannel | undefined
  runs = 0
  readonly commands: string[] = []
  suspects = 0
  reserved = 0
  notReady() {
    return new NotReadyError('fake: not ready', { host: this.id })
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
  run(command: string) {
    this.runs++
    this.commands.push(command)
    const stdout = (scriptOf(command) ?? command).startsWith(': kay-collect v1 node slow;') ? BODY + SLOW : BODY
    return Promise.resolve({ stdout, stderr: '', exitCode: 0, signal: null, durationMs: 1 })
  }
  openExec(command: string, setup?: (c: FakeChannel) => void): Promise<FakeChannel> {
    const id = identifyCommand(command)
    const token = id.kind === 'stream' ? id.token : 'none'
    const c = new FakeChannel(token)
    this.channel = c
    setup?.(c)
    return Promise.resolve(c)
  }
}

const flush = () => new Promise((r) => setImmediate(r))

/** A collector whose stream is up (the first tick went over exec and opened it). */
async function withStream(extra: Partial<CollectorOptions> = {}) {
  const clock = new ManualClock()
  const actor = new FakeActor()
  const collector = new HostCollector(actor as unknown as HostActor, {
    clock,
    flavours: ['perl'],
    streamTimeoutMs: 500,
    ...extra,
  })
  await collector.collect()
  expect(collector.mode).toBe('exec')
  await flush()
  await collector.collect()
  expect(collector.mode).toBe('stream-perl')
  return { clock, actor, collector, channel: actor.channel! }
}

/** The tick was answered, over a second exec run: the stream failed it and the exec fallback served it. */
function expectExecFallback(m: HostMetrics, collector: HostCollector, actor: FakeActor): void {
  expect(m.load1).toBe(1.5)
  expect(collector.mode).toBe('exec')
  expect(actor.runs).toBe(2)
}

describe('HostCollector stream requests', () => {
  it('answers a tick from its frame and leaves no deadline armed', async () => {
    const { clock, actor, collector, channel } = await withStream()
    const m = await collector.collect()
    expect(m.load1).toBe(1.5)
    expect(channel.writes.length).toBe(3) // the probe's request and two ticks
    expect(actor.runs).toBe(1)
    expect(clock.pending).toBe(0)
    collector.close()
  })

  it('falls back to exec for the tick when the frame misses its deadline, and asks the actor to probe', async () => {
    const { clock, actor, collector, channel } = await withStream()
    channel.mode = 'silent'
    const tick = collector.collect(2000)
    await flush()
    clock.advance(500)
    expectExecFallback(await tick, collector, actor)
    expect(actor.suspects).toBe(1)
    expect(actor.reserved).toBe(0)
    collector.close()
  })

  it('fails the request, not the process, when the channel throws on write, and the tick falls back to exec', async () => {
    const { clock, actor, collector, channel } = await withStream()
    channel.mode = 'throw'
    expectExecFallback(await collector.collect(), collector, actor)
    // The failed request's deadline was cleared with it: nothing fires later against a settled request.
    expect(clock.pending).toBe(0)
    expect(actor.suspects).toBe(0)
    collector.close()
  })

  it('reuses the sample before last: a long run of ticks keeps giving fresh metrics', async () => {
    const { clock, collector } = await withStream()
    const ats: number[] = []
    for (let i = 0; i < 5; i++) {
      clock.advance(1000)
      ats.push((await collector.collect()).at)
    }
    expect(ats).toEqual([1, 2, 3, 4, 5].map((k) => ats[0]! + (k - 1) * 1000))
    collector.close()
  })

  it('collectTo reports each tick exactly once: from the frame, and at once for a host that is not ready', async () => {
    const { clock, actor, collector } = await withStream()
    const calls: Array<[HostMetrics | undefined, unknown]> = []
    collector.collectTo(1000, (m, err) => calls.push([m, err]))
    // The stream's answer comes as a data event, later: nothing is reported before it.
    expect(calls).toEqual([])
    await flush()
    expect(calls.length).toBe(1)
    expect(calls[0]![0]?.load1).toBe(1.5)
    expect(calls[0]![1]).toBeUndefined()
    expect(clock.pending).toBe(0)
    actor.state = 'backoff'
    collector.collectTo(1000, (m, err) => calls.push([m, err]))
    expect(calls.length).toBe(2)
    expect(calls[1]![0]).toBeUndefined()
    expect(calls[1]![1]).toMatchObject({ code: 'KAY_NOT_READY' })
    await flush()
    expect(calls.length).toBe(2)
    collector.close()
  })
})

describe('HostCollector node requests', () => {
  const words = (line: string) => line.trim().split(' ').slice(1).join(' ')

  it('asks for the node sources on every request, and for the slow ones at first and then every slowEvery ticks', async () => {
    const { actor, collector, channel } = await withStream({ node: true, slowEvery: 3 })
    for (let i = 0; i < 6; i++) await collector.collect()
    // The first tick (exec) brought the slow sections; the probe's request comes second.
    expect(actor.commands.map(sent)).toEqual([expect.stringMatching(/^: kay-collect v1 node slow;/)])
    expect(channel.writes.map(words)).toEqual([
      'node',
      'node',
      'node slow',
      'node',
      'node',
      'node slow',
      'node',
      'node',
    ])
    collector.close()
  })

  it('stops asking for the slow sections for a minute, doubling, after a slow request got no answer', async () => {
    const { clock, actor, collector, channel } = await withStream({ node: true, slowEvery: 1000 })
    expect(collector.nodeSeries!.hasSlow).toBe(true)
    channel.mode = 'silent'
    // Nothing kept: the next request asks for the slow sections, and gets no answer.
    collector.nodeSeries!.dropSlow()
    const tick = collector.collect(2000)
    await flush()
    clock.advance(500)
    await tick
    expect(channel.writes.map(words).at(-1)).toBe('node slow')
    // The tick fell back to exec without them, and so do the next ones (the stream reopens later).
    await collector.collect()
    clock.advance(59_000)
    await collector.collect()
    expect(actor.commands.slice(1).map((c) => sent(c).slice(0, 22))).toEqual(Array(3).fill(': kay-collect v1 node;'))
    clock.advance(1000)
    await collector.collect()
    expect(sent(actor.commands.at(-1) as string)).toMatch(/^: kay-collect v1 node slow;/)
    collector.close()
  })
})

/** A command as kay wrote it, before the login-shell wrapping. */
function sent(command: string): string {
  return scriptOf(command) ?? command
}
