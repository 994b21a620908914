import type { ClientChannel } from 'ssh2'
import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import type { HostActor } from '../connection/actor.js'
import { backoffDelay } from '../connection/backoff.js'
import { KayError, ParseError, StreamError, TimeoutError } from '../errors.js'
import type { CollectMode } from '../types.js'
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
  /** Longest wait for a stream frame before falling back to exec for the tick, ms. Default 2000. */
  streamTimeoutMs?: number
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
   * The request in flight (0: none), who gets its outcome (the frame's body or the error) and its deadline.
   * Fields of the stream, not an object per request: a tick on a steady stream allocates only its timer.
   */
  pendingSeq: number
  onOutcome: ((outcome: string | KayError) => void) | undefined
  timer: TimerHandle | undefined
  timeoutMs: number
  /** The deadline's callback, made once per stream. */
  onTimeout: () => void
  /** The tick the request in flight serves (its caller, start and whole deadline), for the exec fallback. */
  tickDone: CollectDone | undefined
  tickStarted: number
  tickTimeoutMs: number
  /** `onOutcome` for a tick's request, made once per stream. */
  onTick: (outcome: string | KayError) => void
}

/**
 * Collects one host's metrics on its actor's pooled connection. In stream mode, one long-lived exec channel
 * runs a small loop (docs/collection-protocol.md); each tick is one request line and one frame back, so the
 * host forks nothing per tick. The flavour is probed once per connection, in the background; until a stream
 * is up (or when it fails) the tick is collected with a new exec channel, so no tick is lost.
 */
export class HostCollector {
  readonly #actor: HostActor
  readonly #clock: Clock
  readonly #random: () => number
  readonly #pref: CollectPreference
  readonly #flavours: readonly StreamFlavour[]
  readonly #dfEvery: number
  readonly #streamTimeoutMs: number
  readonly #maxFrameBytes: number
  readonly #reopenBaseMs: number
  readonly #reopenCapMs: number
  readonly #node: NodeSeries | undefined
  readonly #slowEvery: number

  #prev: RawSample | undefined
  /** The sample before #prev, overwritten by the next tick's parse (parseTickSample's `into`): ticks allocate none. */
  #spare: RawSample | undefined
  #prevDetail: RawSample | undefined
  #stream: OpenStream | undefined
  #probing = false
  #streamFailures = 0
  #reopenAt = 0
  #mode: CollectMode | undefined
  #closed = false
  /** Node collections asked for (the slow sections' cadence). */
  #nodeTicks = 0
  /** Whether the request in flight asks for the slow sections, and until when they are not asked for again. */
  #askedSlow = false
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
    this.#streamTimeoutMs = opts.streamTimeoutMs ?? 2000
    this.#maxFrameBytes = opts.maxFrameBytes ?? (opts.node ? 1024 * 1024 : 256 * 1024)
    this.#reopenBaseMs = opts.reopenBaseMs ?? 5000
    this.#reopenCapMs = opts.reopenCapMs ?? 300_000
    this.#node = opts.node ? new NodeSeries(actor.id) : undefined
    this.#slowEvery = opts.slowEvery ?? SLOW_EVERY
    actor.on('state', (s) => {
      if (s.state !== 'ready') this.#dropStream()
    })
  }

  /** With `node`: the host's node_exporter series of the last successful tick (hand them to a NodeSink). */
  get nodeSeries(): NodeSeries | undefined {
    return this.#node
  }

  /** How the last tick was collected (undefined before the first). */
  get mode(): CollectMode | undefined {
    return this.#mode
  }

  /**
   * One tick: metrics now (CPU % and rates against the previous sample). Rejects at once with KAY_NOT_READY when
   * the connection is down, KAY_PARSE_ERROR when the host's output does not parse, KAY_TIMEOUT past `timeoutMs`.
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
    if (this.#actor.state !== 'ready') {
      done(undefined, this.#actor.notReady())
      return
    }
    const started = this.#clock.now()
    const s = this.#stream
    if (s && s.pendingSeq === 0) {
      s.tickDone = done
      s.tickStarted = started
      s.tickTimeoutMs = timeoutMs
      this.#request(s, Math.min(this.#streamTimeoutMs, Math.max(1, Math.floor(timeoutMs / 2))), s.onTick)
      return
    }
    this.#collectExec(started, timeoutMs, done)
  }

  /** A tick's stream request settled: the frame's metrics, or (the stream failed) the tick over exec. */
  #onTickOutcome(s: OpenStream, outcome: string | KayError): void {
    const done = s.tickDone!
    s.tickDone = undefined
    if (typeof outcome === 'string') {
      this.#mode = s.mode
      this.#streamFailures = 0
      this.#finish(outcome, done)
      return
    }
    // The stream failed this tick: it is closed; the tick falls back to exec and the stream reopens later.
    // A frame that never came may mean a dead path: have the actor probe now, not after an idle interval.
    if (outcome.code === 'KAY_TIMEOUT') {
      this.#actor.suspect()
      this.#slowTimedOut()
    }
    this.#streamFailed()
    this.#collectExec(s.tickStarted, s.tickTimeoutMs, done)
  }

  /** The tick on a new exec channel, within what is left of its deadline. */
  #collectExec(started: number, timeoutMs: number, done: CollectDone): void {
    const left = timeoutMs - (this.#clock.now() - started)
    if (left <= 0) {
      done(undefined, new TimeoutError(`${this.#actor.id}: collection timed out`, { host: this.#actor.id }))
      return
    }
    const node = this.#nodeRequest()
    const command = node === 'table' ? COLLECT_COMMAND : nodeCollectCommand(node === 'node-slow')
    this.#actor.run(command, { timeoutMs: left, maxOutputBytes: this.#maxFrameBytes }).then(
      (r) => {
        const foreign = notKayOutput(this.#actor.id, r)
        if (foreign) {
          done(undefined, foreign)
          return
        }
        this.#mode = 'exec'
        // The sample first: the probe's first request then knows which node sections the host already sent.
        this.#finish(r.stdout, done)
        this.#maybeOpenStream()
      },
      (err: unknown) => {
        if (err instanceof KayError && err.code === 'KAY_TIMEOUT') this.#slowTimedOut()
        this.#node?.clear()
        done(undefined, err)
      },
    )
  }

  #finish(text: string, done: CollectDone): void {
    let m: HostMetrics
    try {
      m = this.#toMetrics(text)
    } catch (err) {
      this.#node?.clear()
      done(undefined, this.#forHost(err))
      return
    }
    if (this.#node) {
      this.#node.update(text)
      if (this.#askedSlow) this.#slowFailures = 0
    }
    done(m)
  }

  /** What this tick's request asks for: the table's sections, or node_exporter's, slow ones included when due. */
  #nodeRequest(): NodeRequest {
    const node = this.#node
    this.#askedSlow = false
    if (node === undefined) return 'table'
    const tick = this.#nodeTicks++
    if (this.#clock.now() < this.#slowBlockedUntil) return 'node'
    this.#askedSlow = !node.hasSlow || tick % this.#slowEvery === 0
    return this.#askedSlow ? 'node-slow' : 'node'
  }

  /**
   * A request with the slow sections got no answer in time. A statfs(2) of a hung network mount blocks the loop
   * (a hard NFS mount does not even let it be killed): the slow sections are not asked for again for a while
   * (1 min, doubling to 32 min per failure), and the filesystem families are left out meanwhile rather than kept stale.
   */
  #slowTimedOut(): void {
    if (!this.#askedSlow || this.#node === undefined) return
    this.#askedSlow = false
    this.#slowFailures++
    this.#slowBlockedUntil = this.#clock.now() + 60_000 * 2 ** Math.min(this.#slowFailures - 1, 5)
    this.#node.dropSlow()
  }

  /**
   * Drill-in detail on a new channel of the same connection (no second handshake). CPU % and rates come against
   * the last sample; per-core % against the previous drill-in's sample, since ticks parse only the aggregate cpu
   * line: the first drill-in of a host has `perCpuPct` empty, the next ones fill it.
   */
  async detail(timeoutMs = 10_000): Promise<HostDetail> {
    const r = await this.#actor.run(DETAIL_COMMAND, { timeoutMs, maxOutputBytes: 1024 * 1024 })
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

  /** Parse errors name the host they came from. */
  #forHost(err: unknown): unknown {
    if (err instanceof KayError && err.host === undefined) {
      return new ParseError(err.message, { host: this.#actor.id, details: err.details })
    }
    return err
  }

  /** A tick's metrics from its output; throws what the parse throws (named for the host by `#finish`). */
  #toMetrics(text: string): HostMetrics {
    const at = this.#clock.now()
    const sample = parseTickSample(text, at, this.#spare)
    // computeMetrics carries the last df figure forward (df is asked for only every Nth tick).
    const m = computeMetrics(this.#prev, sample)
    this.#spare = this.#prev
    this.#prev = sample
    return m
  }

  /** Writes the next request line; `onOutcome` gets its frame's body or the error, exactly once. */
  #request(s: OpenStream, timeoutMs: number, onOutcome: (outcome: string | KayError) => void): void {
    if (s.closed) {
      onOutcome(new StreamError(`${this.#actor.id}: collection stream closed`, { host: this.#actor.id }))
      return
    }
    const seq = ++s.seq
    s.pendingSeq = seq
    s.onOutcome = onOutcome
    s.timeoutMs = timeoutMs
    s.timer = this.#clock.setTimeout(s.onTimeout, timeoutMs)
    s.decoder.expect(seq)
    try {
      const node = this.#nodeRequest()
      s.channel.write(streamRequest(seq, node === 'table' && wantsDf(seq, this.#dfEvery), node))
    } catch (err) {
      // A channel that throws on write (destroyed under us) fails this request like a close would.
      const msg = `${this.#actor.id}: collection stream write failed: ${(err as Error)?.message ?? String(err)}`
      this.#settle(s, new StreamError(msg, { host: this.#actor.id }))
    }
  }

  /** {@link #request} as a promise (the probe's first request). */
  #requestOnce(s: OpenStream, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#request(s, timeoutMs, (outcome) => (typeof outcome === 'string' ? resolve(outcome) : reject(outcome)))
    })
  }

  /** Settles the request in flight, if any: with its frame's body, or failed with an error. */
  #settle(s: OpenStream, outcome: string | KayError): void {
    if (s.pendingSeq === 0) return
    const onOutcome = s.onOutcome!
    this.#clock.clearTimeout(s.timer)
    s.pendingSeq = 0
    s.onOutcome = undefined
    s.timer = undefined
    onOutcome(outcome)
  }

  #maybeOpenStream(): void {
    if (this.#pref !== 'stream' || this.#stream || this.#probing || this.#closed) return
    if (this.#clock.now() < this.#reopenAt) return
    if (!this.#actor.reserveChannel()) return
    this.#probing = true
    void this.#probe().finally(() => {
      this.#probing = false
    })
  }

  async #probe(): Promise<void> {
    for (const flavour of this.#flavours) {
      if (this.#closed || this.#actor.state !== 'ready') break
      const s = await this.#open(flavour).catch(() => undefined)
      if (!s) continue
      try {
        await this.#requestOnce(s, this.#streamTimeoutMs * 2)
        if (this.#closed || this.#actor.state !== 'ready') {
          s.channel.close()
          break
        }
        this.#stream = s
        return
      } catch {
        try {
          s.channel.close()
        } catch {}
      }
    }
    // No flavour works on this host now: exec per tick, and try again later.
    this.#actor.releaseReservedChannel()
    this.#scheduleReopen()
  }

  #open(flavour: StreamFlavour): Promise<OpenStream> {
    const token = randomStreamToken()
    let opened: OpenStream | undefined
    // Listeners go on inside openExec's callback, before any of the channel's events can fire.
    const setup = (channel: ClientChannel) => {
      const s: OpenStream = {
        channel,
        flavour,
        mode: `stream-${flavour}`,
        seq: 0,
        closed: false,
        decoder: new FrameDecoder({ token, maxFrameBytes: this.#maxFrameBytes }),
        pendingSeq: 0,
        onOutcome: undefined,
        timer: undefined,
        timeoutMs: 0,
        onTimeout: () => {
          s.timer = undefined
          const msg = `${this.#actor.id}: stream frame ${s.pendingSeq} not complete in ${s.timeoutMs} ms`
          this.#settle(s, new TimeoutError(msg))
        },
        tickDone: undefined,
        tickStarted: 0,
        tickTimeoutMs: 0,
        onTick: (outcome) => this.#onTickOutcome(s, outcome),
      }
      opened = s
      channel.on('data', (chunk: Buffer) => this.#onStreamData(s, chunk))
      channel.stderr.resume()
      channel.on('close', () => {
        s.closed = true
        const err = new StreamError(`${this.#actor.id}: collection stream (${flavour}) closed`, {
          host: this.#actor.id,
        })
        this.#settle(s, err)
        // The current stream closed under us (its close() is then a no-op): the same as a stream that failed.
        if (this.#stream === s) this.#streamFailed()
      })
    }
    return this.#actor.openExec(streamCommand(flavour, token), setup).then(() => opened!)
  }

  #onStreamData(s: OpenStream, chunk: Buffer): void {
    let frames: Array<{ seq: number; body: string }>
    try {
      frames = s.decoder.push(chunk)
    } catch (err) {
      // Oversize frame: the stream is failed; the tick falls back to exec.
      this.#settle(s, err instanceof KayError ? err : new StreamError(String(err), { host: this.#actor.id }))
      try {
        s.channel.close()
      } catch {}
      return
    }
    for (const f of frames) {
      // Frames carry seq ≥ 1, so none matches an idle stream (pendingSeq 0).
      if (s.pendingSeq === f.seq) this.#settle(s, f.body)
      else this.droppedFrames++
    }
  }

  #streamFailed(): void {
    const s = this.#stream
    if (!s) return
    this.#stream = undefined
    this.#actor.releaseReservedChannel()
    this.#streamFailures++
    try {
      s.channel.close()
    } catch {}
    this.#scheduleReopen()
  }

  #scheduleReopen(): void {
    const delay = Math.max(
      1,
      backoffDelay(this.#streamFailures, { baseMs: this.#reopenBaseMs, capMs: this.#reopenCapMs }, this.#random),
    )
    this.#reopenAt = this.#clock.now() + delay
  }

  #dropStream(): void {
    const s = this.#stream
    this.#stream = undefined
    this.#prev = undefined
    this.#node?.reset()
    this.#streamFailures = 0
    this.#reopenAt = 0
    if (s) this.#settle(s, this.#actor.notReady())
  }

  close(): void {
    this.#closed = true
    const s = this.#stream
    this.#dropStream()
    if (s) {
      try {
        s.channel.close()
      } catch {}
    }
  }
}
