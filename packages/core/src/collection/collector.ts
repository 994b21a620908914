import type { ClientChannel } from 'ssh2'
import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import { type HostActor, type RunResult, STOP_GRACE_MS } from '../connection/actor.js'
import { backoffDelay } from '../connection/backoff.js'
import type { DialGate, DialSlot } from '../connection/dial-gate.js'
import { ClosedError, isKayError, KayError, NotReadyError, ParseError, StreamError, TimeoutError } from '../errors.js'
import type { CollectMode, CollectPhase } from '../types.js'
import {
  COLLECT_COMMAND,
  computeMetrics,
  DETAIL_COMMAND,
  DF_EVERY,
  FrameDecoder,
  type NodeRequest,
  NodeSeries,
  nodeCollectCommand,
  notKayOutput,
  parseDetailSample,
  parseSections,
  parseTickSample,
  type RawSample,
  randomStreamToken,
  SLOW_EVERY,
  STREAM_FLAVOURS,
  type StreamFlavour,
  streamCommand,
  streamRequest,
  wantsDf,
} from './index.js'
import type { HostDetail, HostMetrics } from './types.js'

export type CollectPreference = 'stream' | 'exec'

/**
 * How {@link HostCollector.collectTo} reports a tick: `metrics`, or else `error` (a KayError, or whatever the
 * connection rejected with). Called exactly once per call, possibly before `collectTo` returns (a host that is
 * not ready fails at once).
 */
export type CollectDone = (metrics: HostMetrics | undefined, error?: unknown) => void

export interface CollectorOptions {
  /** `stream` (default): a persistent collection channel, falling back to exec per host; `exec`: a new channel per tick. */
  mode?: CollectPreference
  clock?: Clock
  random?: () => number
  /** Stream flavours to probe, cheapest first. Default STREAM_FLAVOURS. */
  flavours?: StreamFlavour[]
  /** Ask for the `df` section every Nth stream request (df forks on the host). Default DF_EVERY (12). */
  dfEvery?: number
  /**
   * A stream request's own deadline, ms. A tick whose deadline comes first reports KAY_TIMEOUT and leaves the
   * request in flight (its frame serves the next tick); past this one the stream is deemed broken: it is closed, the
   * host collects over exec and the stream is probed again later. Default 15000.
   */
  streamTimeoutMs?: number
  /**
   * One flavour's probe: its channel opened and its first frame back, ms. A probe that times out ends the probing
   * for now (the host is too slow or swallows the loop); one whose channel closes tries the next flavour. Default 20000.
   */
  probeTimeoutMs?: number
  /** An exec collection's own deadline (waiting for a work slot included), ms; not a tick's. Default 30000. */
  execTimeoutMs?: number
  /** Largest accepted frame / exec output, bytes. Default 256 KiB, 1 MiB with `node`. */
  maxFrameBytes?: number
  /**
   * Also collect node_exporter's sources (`kay serve`): each successful tick's series are then in `nodeSeries`
   * until the next tick. Default false: a table needs none of it, and the host and the collector pay for it.
   */
  node?: boolean
  /** With `node`: ask for the slow sections (mounts and statfs, uname, os-release, udev) every Nth tick. Default SLOW_EVERY (12). */
  slowEvery?: number
  /** Stream re-open backoff window base and cap, ms. Defaults 5 s and 5 min. */
  reopenBaseMs?: number
  reopenCapMs?: number
  /**
   * The fleet-wide bound on remote work (docs/adr/0008-cold-start-converges.md): a stream probe or an exec collection
   * takes a slot before it opens its channel and gives it back when it is done (or after `workSlotMs`). Default: none.
   */
  workGate?: DialGate
  /** Longest a piece of work keeps its work slot, ms, so a few stuck hosts cannot hold every slot. Default 10000. */
  workSlotMs?: number
  /** Told every change of {@link HostCollector.phase}. */
  onPhase?: (phase: CollectPhase | undefined) => void
}

interface OpenStream {
  channel: ClientChannel
  decoder: FrameDecoder
  flavour: StreamFlavour
  /** `stream-<flavour>`, made once (not a new string per tick). */
  mode: CollectMode
  seq: number
  /** The channel closed (e.g. the interpreter is missing: exit 127 before the first request). */
  closed: boolean
  /**
   * The request in flight (0: none), who gets its outcome (the frame's body or the error) and its own deadline (epoch
   * ms; 0 for a probe's first request, which the probe times itself). Fields of the stream, not an object per
   * request: a tick on a steady stream allocates only its timer.
   */
  pendingSeq: number
  onOutcome: ((outcome: string | KayError) => void) | undefined
  deadline: number
  /** The last request asked for the slow node sections (kept after it settles, for its outcome). */
  askedSlow: boolean
  /** `onOutcome` for a tick's request, made once per stream. */
  onTick: (outcome: string | KayError) => void
}

type ProbeOutcome = { s: OpenStream; body: string } | 'failed' | 'timeout'

const noop = () => {}

/**
 * Collects one host's metrics on its actor's pooled connection. In stream mode, one long-lived exec channel runs a
 * small loop (docs/collection-protocol.md); each tick is one request line and one frame back, so the host forks
 * nothing per tick.
 *
 * The policy (docs/adr/0008-cold-start-converges.md): the stream is probed as soon as the connection is ready, with
 * its own deadline, and the probe's first frame answers the ticks waiting for it; a tick never starts competing work
 * while the stream is being opened, it reports the host's phase instead (KAY_NOT_READY, `starting` or `probing`).
 * Without a stream, a tick is collected over exec, one exec at a time per host, on its own deadline: a tick that
 * cannot wait for it reports KAY_TIMEOUT and the result serves the next tick. Probes and execs take a slot of the
 * fleet-wide work gate, so cold start and overload never start more remote work at once than it allows.
 */
export class HostCollector {
  readonly #actor: HostActor
  readonly #clock: Clock
  readonly #random: () => number
  readonly #pref: CollectPreference
  readonly #flavours: readonly StreamFlavour[]
  readonly #dfEvery: number
  readonly #streamTimeoutMs: number
  readonly #probeTimeoutMs: number
  readonly #execTimeoutMs: number
  readonly #maxFrameBytes: number
  readonly #reopenBaseMs: number
  readonly #reopenCapMs: number
  readonly #workGate: DialGate | undefined
  readonly #workSlotMs: number
  readonly #onPhase: ((phase: CollectPhase | undefined) => void) | undefined
  readonly #node: NodeSeries | undefined
  readonly #slowEvery: number

  #prev: RawSample | undefined
  /** The sample before #prev, overwritten by the next tick's parse (parseTickSample's `into`): ticks allocate none. */
  #spare: RawSample | undefined
  #prevDetail: RawSample | undefined
  #stream: OpenStream | undefined
  #phase: CollectPhase | undefined
  /** Bumped when the connection goes and on close: work started before then is stale and reports to nobody. */
  #gen = 0
  #probing = false
  /** Cuts the probe short: its wait for a work slot, or the flavour attempt in flight. */
  #probeAbort: AbortController | undefined
  /** The stream was closed to let a drill-in have the host's only session; it is probed again after it. */
  #yielding = false
  /** The host refused a session beside the stream (MaxSessions 1): drill-ins close the stream first. */
  #sessionLimit = false
  /** The connection generation in which the stream (or its probe) reserved a channel; -1 for none. */
  #reservedGen = -1
  #execBusy = false
  #streamFailures = 0
  #reopenTimer: TimerHandle | undefined
  /**
   * The ticks waiting for the collection in flight, with their deadlines: the first in two fields (a tick on a steady
   * stream allocates nothing for it), any more (concurrent collects) in an array made when needed.
   */
  #waiter: CollectDone | undefined
  #waiterUntil = 0
  #moreWaiters: Array<{ done: CollectDone; until: number }> | undefined
  #timer: TimerHandle | undefined
  #timerAt = 0
  readonly #onTimer = () => this.#expire()
  /** A tick ended unanswered since the last answer: the next result is kept for the next tick. */
  #unanswered = false
  /** A result that came after its tick had given up, for the next tick. */
  #late: { metrics: HostMetrics | undefined; error: unknown; at: number } | undefined
  #mode: CollectMode | undefined
  #closed = false
  /** Node collections asked for (the slow sections' cadence). */
  #nodeTicks = 0
  /** Slow requests that got no answer in a row, and until when the slow sections are not asked for again. */
  #slowFailures = 0
  #slowBlockedUntil = 0
  /** Frames dropped as stale, forged or unexpected (never attributed to a tick). */
  droppedFrames = 0

  constructor(actor: HostActor, opts: CollectorOptions = {}) {
    this.#actor = actor
    this.#clock = opts.clock ?? systemClock
    this.#random = opts.random ?? Math.random
    this.#pref = opts.mode ?? 'stream'
    this.#flavours = opts.flavours ?? STREAM_FLAVOURS
    this.#dfEvery = opts.dfEvery ?? DF_EVERY
    this.#streamTimeoutMs = opts.streamTimeoutMs ?? 15_000
    this.#probeTimeoutMs = opts.probeTimeoutMs ?? 20_000
    this.#execTimeoutMs = opts.execTimeoutMs ?? 30_000
    this.#maxFrameBytes = opts.maxFrameBytes ?? (opts.node ? 1024 * 1024 : 256 * 1024)
    this.#reopenBaseMs = opts.reopenBaseMs ?? 5000
    this.#reopenCapMs = opts.reopenCapMs ?? 300_000
    this.#workGate = opts.workGate
    this.#workSlotMs = opts.workSlotMs ?? 10_000
    this.#onPhase = opts.onPhase
    this.#node = opts.node ? new NodeSeries(actor.id) : undefined
    this.#slowEvery = opts.slowEvery ?? SLOW_EVERY
    actor.on('state', (s) => {
      if (s.state === 'ready') this.#onReady()
      else this.#drop()
    })
    if (actor.state === 'ready') this.#onReady()
  }

  /** With `node`: the host's node_exporter series of the last successful tick (hand them to a NodeSink). */
  get nodeSeries(): NodeSeries | undefined {
    return this.#node
  }

  /** How the last sample was collected (undefined before the first). */
  get mode(): CollectMode | undefined {
    return this.#mode
  }

  /** Where the collection stands while the connection is ready (undefined while it is not). */
  get phase(): CollectPhase | undefined {
    return this.#phase
  }

  /**
   * One tick: metrics now (CPU % and rates against the previous sample). Rejects at once with KAY_NOT_READY when
   * the connection is down, with KAY_NOT_READY (details.state `starting` or `probing`) when the stream is still being
   * opened past `timeoutMs`, KAY_PARSE_ERROR when the host's output does not parse, KAY_TIMEOUT past `timeoutMs`.
   */
  collect(timeoutMs = 10_000): Promise<HostMetrics> {
    return new Promise((resolve, reject) => {
      this.collectTo(timeoutMs, (m, err) => (m === undefined ? reject(err) : resolve(m)))
    })
  }

  /**
   * {@link collect} with a callback: what a shard runs for each of its hosts every tick. On a steady stream a
   * tick is one request line, one frame and `done`, with no promise in between.
   */
  collectTo(timeoutMs: number, done: CollectDone): void {
    if (this.#actor.state !== 'ready' || this.#closed) {
      done(undefined, this.#closed ? new ClosedError(`${this.#actor.id}: collector closed`) : this.#actor.notReady())
      return
    }
    const now = this.#clock.now()
    const late = this.#late
    if (late !== undefined) {
      this.#late = undefined
      if (now - late.at <= timeoutMs) {
        done(late.metrics, late.error)
        return
      }
    }
    // Waiting first: a request that fails at once (a closed stream) hands the tick to an exec collection.
    if (this.#waiter === undefined) {
      this.#waiter = done
      this.#waiterUntil = now + timeoutMs
    } else {
      this.#moreWaiters ??= []
      this.#moreWaiters.push({ done, until: now + timeoutMs })
    }
    const s = this.#stream
    if (s !== undefined) {
      if (s.pendingSeq === 0) this.#request(s, now + this.#streamTimeoutMs, s.onTick)
    } else if (!this.#probing && !this.#yielding && !this.#execBusy) {
      this.#startExec()
    }
    this.#arm()
  }

  /** A tick's stream request settled: the frame's metrics, or (the stream failed) an exec collection for its ticks. */
  #onStreamOutcome(s: OpenStream, outcome: string | KayError): void {
    if (typeof outcome === 'string') {
      this.#streamFailures = 0
      this.#deliverText(outcome, s.mode, s.askedSlow)
      return
    }
    // A frame that never came may mean a dead path: have the actor probe now, not after an idle interval.
    if (outcome.code === 'KAY_TIMEOUT') {
      this.#actor.suspect()
      if (s.askedSlow) this.#slowTimedOut()
    }
    this.#streamFailed(s)
  }

  /** A collection's output became a result (node series included): it answers the waiting ticks. */
  #deliverText(text: string, mode: CollectMode, askedSlow: boolean): void {
    this.#mode = mode
    let m: HostMetrics | undefined
    let err: unknown
    try {
      m = this.#toMetrics(text)
    } catch (e) {
      err = this.#forHost(e)
    }
    if (m !== undefined && this.#node !== undefined) {
      this.#node.update(text)
      if (askedSlow) this.#slowFailures = 0
    }
    this.#deliver(m, err)
  }

  /**
   * Answers every waiting tick with this result. With none waiting, the result is kept for the next tick if a tick
   * gave up on it (an overloaded host's answer is worth more late than a new session started for it).
   */
  #deliver(m: HostMetrics | undefined, err: unknown): void {
    // A failed collection's node series are not written: nothing of an earlier one may pass for this one.
    if (m === undefined) this.#node?.clear()
    const first = this.#waiter
    if (first === undefined) {
      if (this.#unanswered) this.#late = { metrics: m, error: err, at: this.#clock.now() }
      this.#arm()
      return
    }
    this.#unanswered = false
    // Taken out before they are called: a callback may already start the next tick on this collector.
    const more = this.#moreWaiters
    this.#waiter = undefined
    this.#moreWaiters = undefined
    first(m, err)
    if (more !== undefined) for (const w of more) w.done(m, err)
    this.#arm()
  }

  #waiting(): boolean {
    return this.#waiter !== undefined
  }

  /** The one timer: at the earliest of the waiting ticks' deadlines and the stream request's own. */
  #arm(): void {
    let at = this.#waiter === undefined ? Number.POSITIVE_INFINITY : this.#waiterUntil
    const more = this.#moreWaiters
    if (more !== undefined) for (const w of more) if (w.until < at) at = w.until
    const s = this.#stream
    if (s !== undefined && s.pendingSeq !== 0 && s.deadline !== 0 && s.deadline < at) at = s.deadline
    if (at === Number.POSITIVE_INFINITY) {
      if (this.#timer !== undefined) {
        this.#clock.clearTimeout(this.#timer)
        this.#timer = undefined
      }
      return
    }
    if (this.#timer !== undefined) {
      if (this.#timerAt === at) return
      this.#clock.clearTimeout(this.#timer)
    }
    this.#timerAt = at
    this.#timer = this.#clock.setTimeout(this.#onTimer, Math.max(0, at - this.#clock.now()))
  }

  /** Ticks past their deadline get the host's state; a stream request past its own deadline fails the stream. */
  #expire(): void {
    this.#timer = undefined
    const now = this.#clock.now()
    const expired: CollectDone[] = []
    const all: Array<{ done: CollectDone; until: number }> = []
    if (this.#waiter !== undefined) all.push({ done: this.#waiter, until: this.#waiterUntil })
    if (this.#moreWaiters !== undefined) all.push(...this.#moreWaiters)
    this.#waiter = undefined
    this.#moreWaiters = undefined
    for (const w of all) {
      if (w.until <= now) expired.push(w.done)
      else if (this.#waiter === undefined) {
        this.#waiter = w.done
        this.#waiterUntil = w.until
      } else {
        this.#moreWaiters ??= []
        this.#moreWaiters.push(w)
      }
    }
    const s = this.#stream
    if (expired.length > 0) {
      this.#unanswered = true
      const err = this.#tickError()
      if (s !== undefined && s.pendingSeq !== 0) this.#actor.suspect()
      for (const done of expired) done(undefined, err)
    }
    if (s !== undefined && this.#stream === s && s.pendingSeq !== 0 && s.deadline !== 0 && s.deadline <= now) {
      const msg = `${this.#actor.id}: stream frame ${s.pendingSeq} not complete in ${this.#streamTimeoutMs} ms`
      this.#settle(s, new TimeoutError(msg, { host: this.#actor.id }))
    }
    this.#arm()
  }

  /** What a tick that cannot wait any longer is told: what the host is doing. */
  #tickError(): KayError {
    const host = this.#actor.id
    if (this.#stream !== undefined) {
      return new TimeoutError(`${host}: no frame from the collection stream in time (the request is still in flight)`, {
        host,
      })
    }
    if (this.#probing || this.#yielding) {
      const phase = this.#phase === 'probing' ? 'probing' : 'starting'
      const why = phase === 'probing' ? 'opening the collection stream' : 'waiting for a work slot'
      return new NotReadyError(`${host}: not ready (collection ${phase}: ${why})`, { host, details: { state: phase } })
    }
    const msg = `${host}: exec collection not done in time (it keeps its own ${this.#execTimeoutMs} ms deadline; its result serves the next tick)`
    return new TimeoutError(msg, { host })
  }

  #setPhase(phase: CollectPhase | undefined): void {
    if (this.#phase === phase) return
    this.#phase = phase
    this.#onPhase?.(phase)
  }

  // ------------------------------------------------------------------------------------------- node requests

  /** What the next request asks for: the table's sections, or node_exporter's, slow ones included when due. */
  #nodeRequest(): NodeRequest {
    const node = this.#node
    if (node === undefined) return 'table'
    const tick = this.#nodeTicks++
    if (this.#clock.now() < this.#slowBlockedUntil) return 'node'
    return !node.hasSlow || tick % this.#slowEvery === 0 ? 'node-slow' : 'node'
  }

  /**
   * A request with the slow sections got no answer in time. A statfs(2) of a hung network mount blocks the loop
   * (a hard NFS mount does not even let it be killed): the slow sections are not asked for again for a while
   * (1 min, doubling to 32 min per failure), and the filesystem families are left out meanwhile rather than kept stale.
   */
  #slowTimedOut(): void {
    if (this.#node === undefined) return
    this.#slowFailures++
    this.#slowBlockedUntil = this.#clock.now() + 60_000 * 2 ** Math.min(this.#slowFailures - 1, 5)
    this.#node.dropSlow()
  }

  // ------------------------------------------------------------------------------------------ exec collection

  /** One exec collection, on its own deadline; its result answers whichever ticks wait for it then. */
  #startExec(): void {
    this.#execBusy = true
    void this.#execCollect(this.#gen)
  }

  async #execCollect(gen: number): Promise<void> {
    const started = this.#clock.now()
    let text: string | undefined
    let error: unknown
    let release: (() => void) | undefined
    let asked: NodeRequest = 'table'
    let ran = false
    try {
      release = await this.#workSlot(this.#execTimeoutMs)
      if (gen === this.#gen) {
        const left = Math.max(1, this.#execTimeoutMs - (this.#clock.now() - started))
        asked = this.#nodeRequest()
        const command = asked === 'table' ? COLLECT_COMMAND : nodeCollectCommand(asked === 'node-slow')
        ran = true
        const r = await this.#actor.run(command, { timeoutMs: left, maxOutputBytes: this.#maxFrameBytes })
        // A ForceCommand (or a shell that could not run the command) answered: say so, not a parse error.
        error = notKayOutput(this.#actor.id, r)
        if (error === undefined) text = r.stdout
      }
    } catch (err) {
      error = err
      if (isKayError(err, 'KAY_TIMEOUT') && asked === 'node-slow') this.#slowTimedOut()
      // A command stopped at its deadline or output cap gets TERM, then KILL after a grace, and may run until then:
      // the host's one exec collection (and its work slot) is not over before it has exited.
      const stopped = isKayError(err, 'KAY_TIMEOUT') || isKayError(err, 'KAY_OUTPUT_LIMIT')
      if (ran && stopped && gen === this.#gen) await this.#stopped()
    } finally {
      release?.()
    }
    if (gen !== this.#gen) return
    this.#execBusy = false
    if (text !== undefined) this.#deliverText(text, 'exec', asked === 'node-slow')
    else this.#deliver(undefined, error)
  }

  /**
   * Resolves when the commands the actor told to stop have exited (their channels closed), or after twice the grace
   * (KILL is sent at the grace; a peer that never confirms a channel close must not hold the host's collection).
   */
  #stopped(): Promise<void> {
    return new Promise((resolve) => {
      const t = this.#clock.setTimeout(resolve, 2 * STOP_GRACE_MS)
      void this.#actor.stopped().then(() => {
        this.#clock.clearTimeout(t)
        resolve()
      })
    })
  }

  /**
   * A work slot (a no-op when there is no gate), given back by the function returned or after `workSlotMs`. Waits at
   * most `waitMs` (rejecting with KAY_TIMEOUT), or until `signal` fires (KAY_ABORTED).
   */
  async #workSlot(waitMs: number | undefined, signal?: AbortSignal): Promise<() => void> {
    const gate = this.#workGate
    if (gate === undefined) return noop
    let slot: DialSlot | null = gate.tryAcquire()
    if (slot === null) {
      const ac = new AbortController()
      const onAbort = () => ac.abort()
      signal?.addEventListener('abort', onAbort, { once: true })
      const timer = waitMs === undefined ? undefined : this.#clock.setTimeout(onAbort, waitMs)
      try {
        slot = await gate.acquire(ac.signal)
      } catch (err) {
        if (!isKayError(err, 'KAY_ABORTED') || signal?.aborted) throw err
        throw new TimeoutError(`${this.#actor.id}: no work slot free within ${waitMs} ms`, { host: this.#actor.id })
      } finally {
        this.#clock.clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
    }
    const held = slot
    const hold = this.#clock.setTimeout(() => held.release('ok'), this.#workSlotMs)
    return () => {
      this.#clock.clearTimeout(hold)
      held.release('ok')
    }
  }

  // ---------------------------------------------------------------------------------------------- the stream

  #onReady(): void {
    if (this.#closed) return
    if (this.#pref === 'stream') this.#startProbe()
    else this.#setPhase('exec')
  }

  /** Probe the stream now (on a ready connection, or when its re-open backoff ends), unless one is up or on its way. */
  #startProbe(): void {
    if (this.#pref !== 'stream' || this.#closed || this.#stream || this.#probing || this.#yielding) return
    if (this.#actor.state !== 'ready') return
    this.#clock.clearTimeout(this.#reopenTimer)
    this.#reopenTimer = undefined
    this.#probing = true
    this.#setPhase('starting')
    void this.#probe(this.#gen)
  }

  async #probe(gen: number): Promise<void> {
    const abort = new AbortController()
    this.#probeAbort = abort
    let release: (() => void) | undefined
    let up: { s: OpenStream; body: string } | undefined
    let room = true
    try {
      release = await this.#workSlot(undefined, abort.signal)
      if (gen !== this.#gen) return
      room = this.#actor.reserveChannel()
      if (room) {
        this.#reservedGen = gen
        this.#setPhase('probing')
        for (const flavour of this.#flavours) {
          if (gen !== this.#gen) return
          const r = await this.#tryFlavour(flavour, abort.signal)
          // A timeout ends the probing for now: the next flavour would wait on the same slow host (or dead path).
          if (r === 'timeout') {
            this.#actor.suspect()
            break
          }
          if (r !== 'failed') {
            up = r
            break
          }
        }
      }
    } catch {
      // The wait for a work slot was cut short (the connection went, the collector closed: stale below), or the
      // gate failed: then the probe failed, and is tried again later.
    } finally {
      release?.()
      if (this.#probeAbort === abort) this.#probeAbort = undefined
      if (gen !== this.#gen && up) closeQuietly(up.s.channel)
    }
    if (gen !== this.#gen) return
    this.#probing = false
    if (up) {
      this.#stream = up.s
      this.#setPhase('streaming')
      // The probe's first frame answers the ticks waiting for the stream (or is the next tick's baseline).
      this.#deliverText(up.body, up.s.mode, up.s.askedSlow)
      return
    }
    // No loop answered (or the host was too slow to): collect over exec for now, probe again later.
    this.#releaseReserved(gen)
    this.#setPhase('exec')
    if (room) {
      this.#streamFailures++
      this.#scheduleReopen()
    }
    if (this.#waiting() && !this.#execBusy) this.#startExec()
  }

  /** Open one flavour's loop and wait for its first frame, both within `probeTimeoutMs` (or until `signal`). */
  #tryFlavour(flavour: StreamFlavour, signal: AbortSignal): Promise<ProbeOutcome> {
    return new Promise((resolve) => {
      let opened: OpenStream | undefined
      let settled = false
      const finish = (r: ProbeOutcome) => {
        if (settled) return
        settled = true
        this.#clock.clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        if (typeof r === 'string' && opened) closeQuietly(opened.channel)
        resolve(r)
      }
      const onAbort = () => finish('failed')
      signal.addEventListener('abort', onAbort, { once: true })
      const timer = this.#clock.setTimeout(() => {
        // The probe's request may have asked for the slow sections: a hung mount looks like a slow host.
        if (opened !== undefined && opened.pendingSeq !== 0 && opened.askedSlow) this.#slowTimedOut()
        finish('timeout')
      }, this.#probeTimeoutMs)
      this.#open(flavour, (s) => {
        // A channel that opens after its probe gave up is closed at once.
        if (settled) {
          closeQuietly(s.channel)
          return
        }
        opened = s
        this.#request(s, 0, (outcome) => finish(typeof outcome === 'string' ? { s, body: outcome } : 'failed'))
      }).then(undefined, () => finish('failed'))
    })
  }

  /** Opens a flavour's loop; `onOpen` runs when its channel is open, before any of its events. */
  #open(flavour: StreamFlavour, onOpen: (s: OpenStream) => void): Promise<unknown> {
    const token = randomStreamToken()
    // Listeners go on inside openExec's callback, before any of the channel's events can fire.
    return this.#actor.openExec(streamCommand(flavour, token), (channel) =>
      onOpen(this.#streamOn(channel, flavour, token)),
    )
  }

  /**
   * The stream's state and listeners on a channel just opened. Its own method so that the listeners, which live as
   * long as the stream, close over nothing of the probe's: through `onOpen` they held the probe's settled promise,
   * and with it the first frame's text, for the life of every stream.
   */
  #streamOn(channel: ClientChannel, flavour: StreamFlavour, token: string): OpenStream {
    const s: OpenStream = {
      channel,
      flavour,
      mode: `stream-${flavour}`,
      seq: 0,
      closed: false,
      decoder: new FrameDecoder({ token, maxFrameBytes: this.#maxFrameBytes }),
      pendingSeq: 0,
      onOutcome: undefined,
      deadline: 0,
      askedSlow: false,
      onTick: (outcome) => this.#onStreamOutcome(s, outcome),
    }
    channel.on('data', (chunk: Buffer) => this.#onStreamData(s, chunk))
    channel.stderr.resume()
    channel.on('close', () => {
      s.closed = true
      const err = new StreamError(`${this.#actor.id}: collection stream (${flavour}) closed`, {
        host: this.#actor.id,
      })
      this.#settle(s, err)
      // The current stream closed under us (its close() is then a no-op): the same as a stream that failed.
      this.#streamFailed(s)
    })
    return s
  }

  /** Writes the next request line; `onOutcome` gets its frame's body or the error, exactly once. */
  #request(s: OpenStream, deadline: number, onOutcome: (outcome: string | KayError) => void): void {
    if (s.closed) {
      onOutcome(new StreamError(`${this.#actor.id}: collection stream closed`, { host: this.#actor.id }))
      return
    }
    const seq = ++s.seq
    s.pendingSeq = seq
    s.onOutcome = onOutcome
    s.deadline = deadline
    s.decoder.expect(seq)
    const node = this.#nodeRequest()
    s.askedSlow = node === 'node-slow'
    try {
      s.channel.write(streamRequest(seq, node === 'table' && wantsDf(seq, this.#dfEvery), node))
    } catch (err) {
      // A channel that throws on write (destroyed under us) fails this request like a close would.
      const msg = `${this.#actor.id}: collection stream write failed: ${(err as Error)?.message ?? String(err)}`
      this.#settle(s, new StreamError(msg, { host: this.#actor.id }))
    }
  }

  /** Settles the request in flight, if any: with its frame's body, or failed with an error. */
  #settle(s: OpenStream, outcome: string | KayError): void {
    if (s.pendingSeq === 0) return
    const onOutcome = s.onOutcome!
    s.pendingSeq = 0
    s.onOutcome = undefined
    s.deadline = 0
    onOutcome(outcome)
  }

  #onStreamData(s: OpenStream, chunk: Buffer): void {
    let frames: Array<{ seq: number; body: string }>
    try {
      frames = s.decoder.push(chunk)
    } catch (err) {
      // Oversize frame: the stream is failed; its ticks are collected over exec.
      this.#settle(s, err instanceof KayError ? err : new StreamError(String(err), { host: this.#actor.id }))
      closeQuietly(s.channel)
      return
    }
    for (const f of frames) {
      // Frames carry seq ≥ 1, so none matches an idle stream (pendingSeq 0).
      if (s.pendingSeq === f.seq) this.#settle(s, f.body)
      else this.droppedFrames++
    }
    // A probe's first request is the channel's only one: anything dropped before its frame means the channel does not
    // run kay's loop (something else answers there), so the probe fails now instead of at its deadline.
    if (s.pendingSeq !== 0 && s.deadline === 0 && s !== this.#stream && s.decoder.droppedBytes > 0) {
      this.#settle(s, new StreamError(`${this.#actor.id}: the stream probe got frames that are not kay's`))
      closeQuietly(s.channel)
    }
  }

  /** The current stream failed or closed: exec for the ticks waiting, and a re-open after a jittered backoff. */
  #streamFailed(s: OpenStream): void {
    if (this.#stream !== s) return
    this.#stream = undefined
    this.#releaseReserved(this.#gen)
    this.#streamFailures++
    closeQuietly(s.channel)
    this.#setPhase('exec')
    this.#scheduleReopen()
    if (this.#waiting() && !this.#execBusy) this.#startExec()
    this.#arm()
  }

  #releaseReserved(gen: number): void {
    // After a reconnect the actor starts with no reservation: a stale one is never given back twice.
    if (this.#reservedGen !== gen || gen !== this.#gen) return
    this.#reservedGen = -1
    this.#actor.releaseReservedChannel()
  }

  #scheduleReopen(): void {
    const delay = Math.max(
      1,
      backoffDelay(this.#streamFailures, { baseMs: this.#reopenBaseMs, capMs: this.#reopenCapMs }, this.#random),
    )
    this.#clock.clearTimeout(this.#reopenTimer)
    this.#reopenTimer = this.#clock.setTimeout(() => {
      this.#reopenTimer = undefined
      this.#startProbe()
    }, delay)
  }

  /** The connection is not ready (or the collector closes): everything in flight is stale, every tick is answered. */
  #drop(): void {
    this.#gen++
    this.#probeAbort?.abort()
    this.#probeAbort = undefined
    this.#probing = false
    this.#yielding = false
    this.#execBusy = false
    this.#sessionLimit = false
    this.#reservedGen = -1
    this.#clock.clearTimeout(this.#reopenTimer)
    this.#reopenTimer = undefined
    this.#streamFailures = 0
    this.#late = undefined
    this.#unanswered = false
    this.#prev = undefined
    this.#node?.reset()
    const s = this.#stream
    this.#stream = undefined
    const err = this.#closed ? new ClosedError(`${this.#actor.id}: collector closed`) : this.#actor.notReady()
    if (s) {
      this.#settle(s, err)
      closeQuietly(s.channel)
    }
    this.#setPhase(undefined)
    this.#deliver(undefined, err)
  }

  // --------------------------------------------------------------------------------------------------- parsing

  /** Parse errors name the host they came from. */
  #forHost(err: unknown): unknown {
    if (err instanceof KayError && err.host === undefined) {
      return new ParseError(err.message, { host: this.#actor.id, details: err.details })
    }
    return err
  }

  /** A tick's metrics from its output; throws what the parse throws. */
  #toMetrics(text: string): HostMetrics {
    const at = this.#clock.now()
    const sample = parseTickSample(text, at, this.#spare)
    // computeMetrics carries the last df figure forward (df is asked for only every Nth tick).
    const m = computeMetrics(this.#prev, sample)
    this.#spare = this.#prev
    this.#prev = sample
    return m
  }

  // -------------------------------------------------------------------------------------------------- drill-in

  /**
   * Drill-in detail on a new channel of the same connection (no second handshake). CPU % and rates come against
   * the last sample; per-core % against the previous drill-in's sample, since ticks parse only the aggregate cpu
   * line: the first drill-in of a host has `perCpuPct` empty, the next ones fill it. On a host that allows no
   * session beside the stream (MaxSessions 1), the stream steps aside for the drill-in and is probed again after it.
   */
  async detail(timeoutMs = 10_000): Promise<HostDetail> {
    const started = this.#clock.now()
    const run = (ms: number) => this.#actor.run(DETAIL_COMMAND, { timeoutMs: ms, maxOutputBytes: 1024 * 1024 })
    let r: RunResult
    if (this.#sessionLimit && this.#stream) r = await this.#besideStream(() => run(timeoutMs))
    else {
      try {
        r = await run(timeoutMs)
      } catch (err) {
        const left = timeoutMs - (this.#clock.now() - started)
        if (!isSessionRefusal(err) || !this.#stream || left <= 0) throw err
        this.#sessionLimit = true
        r = await this.#besideStream(() => run(left))
      }
    }
    const foreign = notKayOutput(this.#actor.id, r)
    if (foreign) throw foreign
    const at = this.#clock.now()
    try {
      const { detail, sample } = parseDetailSample(parseSections(r.stdout), this.#prevDetail ?? this.#prev, at)
      this.#prevDetail = sample
      return detail
    } catch (err) {
      throw this.#forHost(err)
    }
  }

  /** Closes the stream, runs `fn` on the session it held, then probes the stream again. Ticks meanwhile wait. */
  async #besideStream<T>(fn: () => Promise<T>): Promise<T> {
    const s = this.#stream
    const gen = this.#gen
    if (s) {
      this.#stream = undefined
      this.#yielding = true
      this.#setPhase('starting')
      this.#settle(s, new StreamError(`${this.#actor.id}: collection stream closed for a drill-in`))
      await this.#closeAndWait(s)
      this.#releaseReserved(gen)
    }
    try {
      return await fn()
    } finally {
      if (gen === this.#gen && this.#yielding) {
        this.#yielding = false
        this.#startProbe()
      }
    }
  }

  /** Closes a stream's channel and waits (at most a second) for the close: only then does sshd free its session. */
  #closeAndWait(s: OpenStream): Promise<void> {
    return new Promise((resolve) => {
      if (s.closed) {
        resolve()
        return
      }
      const t = this.#clock.setTimeout(resolve, 1000)
      s.channel.once('close', () => {
        this.#clock.clearTimeout(t)
        resolve()
      })
      closeQuietly(s.channel)
    })
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#drop()
  }
}

/** The server refused a session: OpenSSH answers SSH_OPEN_CONNECT_FAILED (reason 2) past MaxSessions. */
function isSessionRefusal(err: unknown): boolean {
  return isKayError(err, 'KAY_CHANNEL_OPEN_FAILED') && err.details.reason === 2
}

function closeQuietly(channel: ClientChannel): void {
  try {
    channel.close()
  } catch {}
}
