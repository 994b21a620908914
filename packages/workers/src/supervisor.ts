import { EventEmitter } from 'node:events'
import { availableParallelism, homedir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import {
  AbortedError,
  CachingResolver,
  type CachingResolverOptions,
  ClosedError,
  ConfigError,
  DEFAULT_BACKOFF,
  errorFromJSON,
  type HostDetail,
  type HostMetrics,
  type HostStatus,
  type HostTarget,
  type KayError,
  type NodeChunk,
  type RunResult,
  ShardRestartedError,
  SkippedError,
  type StreamFlavour,
  SupervisorFatalError,
  TimeoutError,
  toKayError,
  UnknownHostError,
} from '@kay/core'
import { DF_EVERY, verifyBackoff } from '@kay/core/internal'
import { buildIdentity } from './deps.js'
import { shardOf } from './hash.js'
import { rowSeq, unpackCollectResults } from './packed.js'
import {
  type CommandOptions,
  type CopySpec,
  type ExecChunk,
  type HostCollectResult,
  type HostExecResult,
  PROTOCOL_VERSION,
  type ShardConfig,
  type ShardMessage,
  type ShardRequest,
  type ShardWorkerData,
} from './protocol.js'
import { SharedDialGate } from './shared-dial-gate.js'

export interface SupervisorOptions {
  /** The fleet. Ids must be unique; duplicates are collapsed (first wins). */
  hosts: HostTarget[]
  /**
   * Worker shards. Default {@link defaultThreads}: one per {@link HOSTS_PER_SHARD} hosts, at most one per core,
   * at least one.
   */
  threads?: number
  /** Global cap on dials in flight across all shards. Default 16. */
  dialCap?: number
  /** Pushback governor (AIMD on server pushback). Default on. */
  governor?: boolean
  /**
   * Global cap on remote collection work in flight across all shards: stream probes and exec collections, each
   * holding a slot while it starts (docs/adr/0008-cold-start-converges.md). Default 2 × dialCap.
   */
  workCap?: number
  /**
   * Fleet-wide dial attempts per second (split evenly over the shards). The dial cap bounds dials in flight; this
   * bounds their rate, so a fleet-wide outage cannot turn into a redial storm. Default 20 × dialCap. 0 = unlimited.
   */
  dialRate?: number
  identity: ShardConfig['identity']
  trust?: Partial<ShardConfig['trust']>
  /** Keepalive: probe after `intervalMs` without inbound traffic; tear down if no reply within `probeDeadlineMs`. */
  keepalive?: { intervalMs?: number; probeDeadlineMs?: number }
  backoff?: Partial<ShardConfig['actor']['backoff']>
  /**
   * TCP connect + key exchange + auth, ms. When set, every host's deadline, over its own ConnectTimeout (ssh_config),
   * as a command-line `-o ConnectTimeout=` wins for ssh. Unset: each host's ConnectTimeout, else 10000.
   */
  handshakeTimeoutMs?: number
  /** Channels in flight per connection. Default 4. */
  maxChannels?: number
  /**
   * Name resolution for every host dialed over TCP, before its dial takes a slot: one resolver in the supervisor's
   * thread serves all shards (one cache, one bound on lookups in flight). `lookup` injects the resolver (tests never
   * query a real DNS server); the default is `dns.lookup`. See CachingResolverOptions for the bounds and TTLs.
   */
  dns?: CachingResolverOptions
  /** `stream` (default) or `exec`. */
  collectMode?: 'stream' | 'exec'
  /** Ask for df every Nth stream tick. Default DF_EVERY (12). */
  dfEvery?: number
  /** Stream loop flavours to probe, cheapest first. Default STREAM_FLAVOURS (benchmarks pin one). */
  collectFlavours?: StreamFlavour[]
  /**
   * Collect node_exporter's sources too, and hand every tick's series in `CollectTick.node` (what `kay serve`
   * exports). Default false: the host and the collector pay for it, and a table needs none of it.
   */
  nodeExporter?: boolean
  /** Shard restart intensity: more than `intensity` restarts within `periodMs` stops the supervisor. Default 5 / 30 s. */
  restart?: { intensity?: number; periodMs?: number }
  /** Host event coalescing window, ms. Default 50. */
  eventWindowMs?: number
  /** Worker start deadline, ms. Default 30000. */
  startTimeoutMs?: number
  /** @internal Enables test hooks (crashing a shard on request). */
  testHooks?: boolean
}

export interface CollectResultEntry {
  host: string
  status: HostStatus
  metrics?: HostMetrics
  error?: KayError
  collectMode?: HostCollectResult['collectMode']
}

export interface CollectTick {
  tick: number
  startedAt: number
  durationMs: number
  /** Every host of the fleet, exactly once: metrics or a typed error. */
  hosts: CollectResultEntry[]
  /**
   * With `nodeExporter`: the node_exporter series of the hosts that answered, one chunk per shard (series lines
   * grouped by family; docs/collection-protocol.md). Empty otherwise.
   */
  node: NodeChunk[]
}

export interface ExecResult {
  host: string
  result?: RunResult
  error?: KayError
  /** Output received before `error` (timeout, output cap, interrupt, connection loss), when not streamed. */
  partial?: { stdout: string; stderr: string }
  /** From the start of the host's command (or copy) to its end or failure, ms; 0 when it never started. */
  durationMs: number
  /** What a copy moved. */
  copied?: { files: number; directories: number; bytes: number }
}

/** What {@link Supervisor.execStream} yields: output as it arrives (streamed), then each host's result, once. */
export type ExecEvent =
  | { type: 'output'; host: string; stream: 'stdout' | 'stderr'; data: Uint8Array }
  | { type: 'result'; result: ExecResult }

/** How exec and copy go through the fleet. */
export interface FanOutOptions {
  /** Commands in flight at once, fleet-wide (`--batch`). Absent or 0: every host at once (each connection still caps its channels). */
  batch?: number | undefined
  /** Start no further host once this many have failed (non-zero exit, signal or error); the rest get KAY_SKIPPED. */
  stopAfterFailures?: number | undefined
  /** Interrupt: running commands get TERM (then KILL after the grace) and close; hosts not started get KAY_ABORTED. */
  signal?: AbortSignal | undefined
}

export interface ExecOptions extends CommandOptions, FanOutOptions {
  /** Deliver output as it arrives (`output` events of {@link Supervisor.execStream}) instead of in each result. */
  stream?: boolean
}

/** Whether a host's result counts as a failure for `stopAfterFailures`. */
function failed(r: ExecResult): boolean {
  if (r.error) return r.error.code !== 'KAY_SKIPPED'
  return r.result?.exitCode !== 0
}

export interface SupervisorStats {
  hosts: number
  shards: number
  byState: Record<string, number>
  byMode: Record<string, number>
  dialsInFlight: number
  dialCap: number
  effectiveDialCap: number
  dialsWaiting: number
  /** Remote collection work (stream probes, exec collections) holding a slot, the cap, and work waiting for one. */
  workInFlight: number
  workCap: number
  workWaiting: number
  pressureEvents: number
  handshakes: number
  restarts: number
  ticks: number
  droppedFrames: number
}

/**
 * Where the fleet stands, host by host (a cold start's progress): every host is in exactly one of the counts.
 * `starting` and `probing` hosts are connected but not collecting yet; `streaming` and `exec` ones collect.
 */
export interface FleetProgress {
  hosts: number
  /** Waiting for a dial slot or dialing (idle, dialing). */
  connecting: number
  /** Connected; the collection stream waits for a fleet-wide work slot to be probed. */
  starting: number
  /** Connected; the collection stream is being opened. */
  probing: number
  /** Collecting over the collection stream. */
  streaming: number
  /** Collecting with a new exec channel per tick (exec mode, or no stream loop works there yet). */
  exec: number
  /** Backing off after a failed dial or a lost connection (it redials by itself). */
  backoff: number
  /** Refused until an operator acts (host key: quarantined) or closed. */
  failed: number
  /** Nothing is left starting: every host collects, backs off or has failed. */
  settled: boolean
}

/** How {@link Supervisor.waitUntilSettled} waits. */
export interface WaitSettledOptions {
  /** The deadline, ms from the call. Past it the wait rejects with {@link SettleTimeoutError}. */
  timeoutMs: number
  /** Stop waiting: the wait rejects with KAY_ABORTED (the fleet keeps connecting). */
  signal?: AbortSignal | undefined
  /** Called with the fleet's progress at the start and each time it changes while waiting. */
  onProgress?: ((progress: FleetProgress) => void) | undefined
}

/**
 * {@link Supervisor.waitUntilSettled} passed its deadline: `progress` is where the fleet stood then and `pending` the
 * hosts still connecting or opening their collection stream. The code is KAY_TIMEOUT, as for any deadline.
 */
export class SettleTimeoutError extends TimeoutError {
  readonly progress: FleetProgress
  readonly pending: readonly string[]

  constructor(timeoutMs: number, progress: FleetProgress, pending: readonly string[]) {
    const shown = pending.slice(0, 5).join(', ') + (pending.length > 5 ? `, … (${pending.length - 5} more)` : '')
    super(
      `the fleet did not settle within ${timeoutMs} ms: ${progress.connecting} connecting, ${progress.starting} starting, ${progress.probing} probing (${shown})`,
      { details: { timeoutMs, progress, pending: pending.slice(0, 100) } },
    )
    this.name = 'SettleTimeoutError'
    this.progress = progress
    this.pending = pending
  }
}

/** A runner bound to one host: drill-in reuses that host's pooled connection. */
export interface HostRunner {
  readonly host: string
  run(command: string, opts?: CommandOptions): Promise<RunResult>
  detail(opts?: { timeoutMs?: number }): Promise<HostDetail>
}

export interface SupervisorEvents {
  /** A host's connection state changed (coalesced per shard per event window). */
  host: [HostStatus]
  /** A host key was pinned on first use. */
  pinned: [{ host: string; fingerprint: string }]
  /** A shard worker died and was restarted. */
  'shard-restart': [{ shard: number; code: number; restarts: number }]
  /** Restart intensity exceeded: the supervisor stopped itself. */
  fatal: [KayError]
  /** The fleet's progress changed (a cold start, reconnects): emitted after each batch of host events. */
  progress: [FleetProgress]
}

type Pending = {
  resolve: (m: ShardMessage) => void
  reject: (e: KayError) => void
  onItems?: (items: HostExecResult[], done: boolean, chunks?: ExecChunk[]) => void
}

interface ShardHandle {
  index: number
  worker: Worker | undefined
  hosts: Map<string, HostTarget>
  pending: Map<number, Pending>
  ready: Promise<void>
  /** The shard's dropped frames, as of its last collect or status reply. */
  droppedFrames: number
}

const STOP_TIMEOUT_MS = 5000
/**
 * A shard's young generation, MiB (V8 splits it into two semi-spaces and a large-object space). V8's own ceiling is
 * 48: a shard's steady allocation (frames parsed each tick) grows it there and, with the memory reducer off, it never
 * shrinks — tens of MiB per thread of RSS that buy no CPU at the operator's interval (bench/RESULTS.md, #24).
 */
export const SHARD_YOUNG_GENERATION_MB = 12
const EARLY_PINS_MAX = 100_000

/**
 * The fleet supervisor and kay's public embedding API. It owns W shard workers; each host lives in exactly one
 * shard (a stable rendezvous hash of its id), so its actor and connection never move while the shard lives.
 * Supervision is OTP one-for-one: a dead shard's in-flight requests fail with KAY_SHARD_RESTARTED, its dial
 * slots are reclaimed, and it is restarted with the same hosts; more than `intensity` restarts in `periodMs`
 * stop the supervisor with KAY_SUPERVISOR_FATAL.
 */
export class Supervisor extends EventEmitter<SupervisorEvents> {
  readonly #opts: SupervisorOptions
  readonly #config: ShardConfig
  readonly #gateBuffer: SharedArrayBuffer
  readonly #workBuffer: SharedArrayBuffer
  readonly #shards: ShardHandle[] = []
  readonly #statuses = new Map<string, HostStatus>()
  /** When the host's shard took the status in `#statuses` (absent for one the supervisor made itself). */
  readonly #statusSeqs = new Map<string, number>()
  readonly #restartTimes: number[] = []
  readonly #intensity: number
  readonly #periodMs: number
  #nextId = 1
  /**
   * Pins made before anyone listened (shards start dialing inside `start()`, before the caller can attach a
   * listener): kept, bounded, and replayed to the first 'pinned' listener so no pin goes unreported.
   */
  #earlyPins: Array<{ host: string; fingerprint: string }> | undefined = []
  #ticks = 0
  #restarts = 0
  #stopping = false
  #fatal: KayError | undefined
  readonly #resolver: CachingResolver
  #lastProgress = ''
  /** Waits of {@link waitUntilSettled}: each re-checks the fleet when host states change or the supervisor stops. */
  readonly #settleWaiters = new Set<() => void>()

  private constructor(opts: SupervisorOptions) {
    super()
    this.#opts = opts
    this.#config = resolveConfig(opts)
    this.#resolver = new CachingResolver(opts.dns)
    this.#intensity = opts.restart?.intensity ?? 5
    this.#periodMs = opts.restart?.periodMs ?? 30_000
    const threads = threadsOf(opts)
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
      throw new ConfigError(`threads must be an integer from 1 to 256, got ${threads}`)
    }
    const dialCap = opts.dialCap ?? 16
    if (!Number.isInteger(dialCap) || dialCap < 1)
      throw new ConfigError(`dialCap must be an integer >= 1, got ${dialCap}`)
    this.#gateBuffer = SharedDialGate.createBuffer({
      cap: dialCap,
      maxShards: threads,
      governor: opts.governor ?? true,
    })
    const workCap = opts.workCap ?? 2 * dialCap
    if (!Number.isInteger(workCap) || workCap < 1)
      throw new ConfigError(`workCap must be an integer >= 1, got ${workCap}`)
    this.#workBuffer = SharedDialGate.createBuffer({ cap: workCap, maxShards: threads, governor: false })
    for (let i = 0; i < threads; i++) {
      this.#shards.push({
        index: i,
        worker: undefined,
        hosts: new Map(),
        pending: new Map(),
        ready: Promise.resolve(),
        droppedFrames: 0,
      })
    }
    for (const h of opts.hosts) this.#place(h)
    ;(this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event !== 'pinned' || !this.#earlyPins) return
      const early = this.#earlyPins
      this.#earlyPins = undefined
      // After the listener is attached (newListener fires before), on the next turn.
      setImmediate(() => {
        for (const p of early) this.emit('pinned', p)
      })
    })
  }

  /** Start the shards and begin dialing every host (through the global dial cap). */
  static async start(opts: SupervisorOptions): Promise<Supervisor> {
    const sup = new Supervisor(opts)
    // Parse the keys once here so a bad key is one clear error, not a crash loop of shards.
    await buildIdentity(sup.#config.identity)
    for (const s of sup.#shards) sup.#spawn(s)
    try {
      await Promise.all(sup.#shards.map((s) => s.ready))
    } catch (err) {
      await sup.stop({ timeoutMs: 1000 })
      throw err
    }
    return sup
  }

  #place(h: HostTarget): boolean {
    if (this.#statuses.has(h.id)) return false
    const s = this.#shards[shardOf(h.id, this.#shards.length)]!
    s.hosts.set(h.id, h)
    this.#keepStatus({ id: h.id, state: 'idle', attempts: 0, handshakes: 0 }, undefined)
    return true
  }

  #spawn(s: ShardHandle): void {
    const data: ShardWorkerData = {
      version: PROTOCOL_VERSION,
      shardIndex: s.index,
      gateBuffer: this.#gateBuffer,
      workGateBuffer: this.#workBuffer,
      config: this.#config,
      hosts: [...s.hosts.values()],
    }
    const worker = new Worker(workerEntry(), {
      workerData: data,
      execArgv: workerExecArgv(),
      resourceLimits: { maxYoungGenerationSizeMb: SHARD_YOUNG_GENERATION_MB },
    })
    s.worker = worker
    s.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new TimeoutError(`shard ${s.index} did not start within ${this.#opts.startTimeoutMs ?? 30_000} ms`))
      }, this.#opts.startTimeoutMs ?? 30_000)
      worker.on('message', (m: ShardMessage) => {
        if (m.type === 'ready') {
          clearTimeout(timer)
          resolve()
          return
        }
        this.#onMessage(s, m)
      })
      worker.once('exit', (code) => {
        clearTimeout(timer)
        reject(new ShardRestartedError(`shard ${s.index} exited during start (code ${code})`))
      })
    })
    s.ready.catch(() => {})
    // An uncaught exception inside the worker arrives here, then 'exit' follows.
    worker.on('error', () => {})
    worker.on('exit', (code) => this.#onExit(s, worker, code))
  }

  #onMessage(s: ShardHandle, m: ShardMessage): void {
    switch (m.type) {
      case 'events':
        for (const e of m.events) {
          if (e.kind === 'state') {
            if (!s.hosts.has(e.status.id) || !this.#keepStatus(e.status, e.seq)) continue
            this.emit('host', e.status)
          } else if (this.#earlyPins && this.listenerCount('pinned') === 0) {
            if (this.#earlyPins.length < EARLY_PINS_MAX)
              this.#earlyPins.push({ host: e.host, fingerprint: e.fingerprint })
          } else {
            this.emit('pinned', { host: e.host, fingerprint: e.fingerprint })
          }
        }
        this.#emitProgress()
        this.#wakeSettleWaiters()
        return
      case 'exec-items': {
        const p = s.pending.get(m.id)
        if (!p) return
        p.onItems?.(m.items, m.done, m.chunks)
        if (m.done) {
          s.pending.delete(m.id)
          p.resolve(m)
        }
        return
      }
      case 'ready':
        return
      case 'resolve':
        this.#resolve(s, m.id, m.hostname)
        return
      default: {
        const p = s.pending.get(m.id)
        if (!p) return
        s.pending.delete(m.id)
        p.resolve(m)
      }
    }
  }

  /** Answers a shard's `resolve`, to the worker that asked (a restarted shard's new worker asks again). */
  #resolve(s: ShardHandle, id: number, hostname: string): void {
    const w = s.worker
    const reply = (m: ShardRequest & { type: 'resolved' }) => {
      if (s.worker === w && !this.#stopping) w?.postMessage(m)
    }
    this.#resolver.resolve(hostname).then(
      (a) => reply({ type: 'resolved', id, address: a.address, family: a.family }),
      (err: unknown) => reply({ type: 'resolved', id, error: toKayError(err).toJSON() }),
    )
  }

  #onExit(s: ShardHandle, worker: Worker, code: number): void {
    if (s.worker !== worker) return
    s.worker = undefined
    // Nothing in flight is left hanging: every pending request of the dead shard fails now.
    const err = (host?: string) =>
      new ShardRestartedError(`shard ${s.index} died (exit code ${code}); its hosts are being re-created`, {
        ...(host === undefined ? {} : { host }),
      })
    for (const [id, p] of s.pending) {
      s.pending.delete(id)
      p.reject(err())
    }
    SharedDialGate.reclaim(this.#gateBuffer, s.index)
    SharedDialGate.reclaim(this.#workBuffer, s.index)
    if (this.#stopping || this.#fatal) return
    for (const id of s.hosts.keys()) {
      const st: HostStatus = { id, state: 'idle', attempts: 0, handshakes: this.#statuses.get(id)?.handshakes ?? 0 }
      st.lastError = err(id).toJSON()
      // The new shard thread counts its status captures from the start again.
      this.#keepStatus(st, undefined)
    }
    const now = Date.now()
    this.#restartTimes.push(now)
    while (this.#restartTimes.length > 0 && now - this.#restartTimes[0]! > this.#periodMs) this.#restartTimes.shift()
    if (this.#restartTimes.length > this.#intensity) {
      this.#fatal = new SupervisorFatalError(
        `more than ${this.#intensity} shard restarts within ${this.#periodMs} ms; the supervisor stopped`,
      )
      this.emit('fatal', this.#fatal)
      void this.stop({ timeoutMs: 1000 })
      return
    }
    this.#restarts++
    this.#wakeSettleWaiters()
    this.#spawn(s)
    this.emit('shard-restart', { shard: s.index, code, restarts: this.#restarts })
  }

  #check(): void {
    if (this.#fatal) throw this.#fatal
    if (this.#stopping) throw new ClosedError('supervisor stopped')
  }

  #request<T extends ShardMessage>(s: ShardHandle, req: ShardRequest & { id: number }, extra?: Partial<Pending>) {
    return new Promise<T>((resolve, reject) => {
      const w = s.worker
      if (!w) {
        reject(new ShardRestartedError(`shard ${s.index} is restarting`))
        return
      }
      s.pending.set(req.id, { resolve: resolve as (m: ShardMessage) => void, reject, ...extra })
      w.postMessage(req)
    })
  }

  #shardFor(host: string): ShardHandle {
    const s = this.#shards[shardOf(host, this.#shards.length)]!
    if (!s.hosts.has(host)) throw new UnknownHostError(`${host}: not managed by this supervisor`, { host })
    return s
  }

  /**
   * One tick: metrics from every READY host now; every other host is reported with its state and a typed error
   * (KAY_NOT_READY while connecting or backing off, or while its collection stream is still being opened past
   * `timeoutMs`: then `details.state` is `starting` or `probing`). Never waits for a host to connect.
   */
  async collect(opts: { timeoutMs?: number } = {}): Promise<CollectTick> {
    this.#check()
    const timeoutMs = opts.timeoutMs ?? 10_000
    const startedAt = Date.now()
    const tick = ++this.#ticks
    const node: NodeChunk[] = []
    const parts = await Promise.all(
      this.#shards.map(async (s) => {
        try {
          const m = await this.#request<ShardMessage & { type: 'collect-result' }>(s, {
            type: 'collect',
            id: this.#nextId++,
            timeoutMs,
          })
          s.droppedFrames = m.droppedFrames
          const entries = m.results.map((r, i) => this.#collectEntry(s, r, m.seqs[i]!))
          if (m.packed) {
            const rows = unpackCollectResults(m.packed)
            for (let i = 0; i < rows.length; i++) entries.push(this.#collectEntry(s, rows[i]!, rowSeq(m.packed, i)))
            if (m.packed.node) node.push(m.packed.node)
          }
          return entries
        } catch (e) {
          const err = e as KayError
          return [...s.hosts.keys()].map((host) => ({
            host,
            status: this.#statuses.get(host)!,
            error: errorFromJSON({ ...err.toJSON(), host }),
          }))
        }
      }),
    )
    return { tick, startedAt, durationMs: Date.now() - startedAt, hosts: parts.flat(), node }
  }

  /**
   * Keeps `st` as the host's status unless its shard took a newer one (`seq`) that is already here, and says whether
   * it did. A tick's reply leaves the shard when its last host answers, with each host's status as it was when that
   * host answered: an event about a later change (connected, streaming) can arrive first, and a reply's older status
   * must not undo it — a ready host's next rows carry no phase, so the host would never count as streaming again.
   * `seq` undefined: a status the supervisor made (a host added, a shard restarted); the next from the shard wins.
   */
  #keepStatus(st: HostStatus, seq: number | undefined): boolean {
    if (seq === undefined) this.#statusSeqs.delete(st.id)
    else {
      const newest = this.#statusSeqs.get(st.id)
      if (newest !== undefined && seq < newest) return false
      this.#statusSeqs.set(st.id, seq)
    }
    this.#statuses.set(st.id, st)
    return true
  }

  #collectEntry(s: ShardHandle, r: HostCollectResult, seq: number): CollectResultEntry {
    // A host removed while the tick ran is still in it, but no longer among the statuses.
    if (s.hosts.has(r.host)) {
      // A host with metrics travels as a plain status (it packs into a row): its phase is the one its events said.
      if (r.status.collectPhase === undefined && r.status.state === 'ready') {
        const phase = this.#statuses.get(r.host)?.collectPhase
        if (phase !== undefined) r.status.collectPhase = phase
      }
      // The mode travels beside the status (one field of a row): the status keeps it, as a status reply's does.
      if (r.collectMode !== undefined) r.status.collectMode = r.collectMode
      this.#keepStatus(r.status, seq)
    }
    // Without an error the received result (a fresh clone or an unpacked row) is the entry: no copy per host.
    if (r.error === undefined) return r as CollectResultEntry
    const e: CollectResultEntry = { host: r.host, status: r.status }
    if (r.metrics) e.metrics = r.metrics
    e.error = errorFromJSON(r.error)
    if (r.collectMode) e.collectMode = r.collectMode
    return e
  }

  /**
   * One command on one host's pooled connection (a new channel on it: no handshake). Never waits for a connection:
   * a host that is not connected is refused at once with KAY_NOT_READY, whose `details` say its `state`, `nextRetryAt`
   * and, if it failed before, `lastError` ({ code, message }: why it is down, also its `cause`). Use
   * {@link waitUntilSettled} first after `start()`. A command that exits non-zero resolves (see `exitCode`); it
   * rejects only when the command could not run or finish: KAY_TIMEOUT past `timeoutMs` (default 30 s),
   * KAY_OUTPUT_LIMIT past `maxOutputBytes` (default 1 MiB; the connection is kept), KAY_CHANNEL_OPEN_FAILED,
   * KAY_CONNECTION_LOST, KAY_UNKNOWN_HOST for a host not managed here, KAY_SHARD_RESTARTED, KAY_CLOSED.
   */
  async run(host: string, command: string, opts: CommandOptions = {}): Promise<RunResult> {
    this.#check()
    const s = this.#shardFor(host)
    const m = await this.#request<ShardMessage & { type: 'run-result' }>(s, {
      type: 'run',
      id: this.#nextId++,
      host,
      command,
      opts,
    })
    if (m.error) throw errorFromJSON(m.error)
    return m.result!
  }

  /**
   * Run a command on many hosts; results arrive as they complete. Every host yields exactly one result, and the
   * iteration itself never throws for a host: its command's result (any exit code), or a typed `error` — the same
   * codes as {@link run} (KAY_NOT_READY at once for a host that is not connected, with its last cause), KAY_SKIPPED
   * after `stopAfterFailures`, KAY_ABORTED on `signal` — with what it printed before (`partial`). Breaking out of the
   * loop stops the commands still running.
   */
  async *exec(hosts: string[], command: string, opts: ExecOptions = {}): AsyncIterable<ExecResult> {
    for await (const e of this.execStream(hosts, command, { ...opts, stream: false })) {
      if (e.type === 'result') yield e.result
    }
  }

  /**
   * Run a command on many hosts as {@link exec} does; with `stream: true` each host's output is yielded as it
   * arrives (`output` events, batched per shard per short window across threads), before that host's `result`.
   * `batch` bounds the commands in flight fleet-wide; `stopAfterFailures` ends a rolling run; `signal` interrupts.
   */
  execStream(hosts: string[], command: string, opts: ExecOptions = {}): AsyncIterable<ExecEvent> {
    this.#check()
    const { batch, stopAfterFailures, signal, ...wire } = opts
    return this.#fanOut(hosts, (id, list) => ({ type: 'exec', id, hosts: list, command, opts: wire }), {
      batch,
      stopAfterFailures,
      signal,
    })
  }

  /**
   * Copy files to (`put`) or from (`get`) many hosts over SFTP sessions of their pooled connections. Yields one
   * result per host as it completes (`copied` counts what moved); same batching and interruption as exec.
   */
  async *copy(hosts: string[], spec: CopySpec, opts: FanOutOptions = {}): AsyncIterable<ExecResult> {
    this.#check()
    for await (const e of this.#fanOut(hosts, (id, list) => ({ type: 'copy', id, hosts: list, spec }), opts)) {
      if (e.type === 'result') yield e.result
    }
  }

  /**
   * A second Ctrl-C: every exec and copy in progress stops now, and commands still exiting after TERM get KILL at
   * once instead of after the grace. Fire and forget (each shard acts as soon as it reads it).
   */
  hurry(): void {
    for (const s of this.#shards) s.worker?.postMessage({ type: 'hurry' } satisfies ShardRequest)
  }

  /**
   * The scheduler behind exec and copy. Hosts start in the given order; with `batch` at most that many are in flight
   * fleet-wide (counted here, where every result arrives, and refilled as each completes); once
   * `stopAfterFailures` hosts failed no further host starts (KAY_SKIPPED); on `signal` the shards stop their hosts
   * (cancel) and the rest are answered KAY_ABORTED. Every host gets exactly one result, whatever happens to its shard.
   */
  async *#fanOut(
    hosts: string[],
    request: (id: number, hosts: string[]) => ShardRequest & { id: number },
    opts: FanOutOptions,
  ): AsyncIterable<ExecEvent> {
    const order = [...new Set(hosts)]
    const batch = opts.batch !== undefined && opts.batch > 0 ? opts.batch : Number.POSITIVE_INFINITY
    const stopAfter = opts.stopAfterFailures
    const queue: ExecEvent[] = []
    let wake: (() => void) | undefined
    let next = 0
    let inFlight = 0
    let failures = 0
    let outstanding = 0
    let stopped: 'skip' | 'abort' | undefined
    const live = new Map<number, ShardHandle>()
    const push = (e: ExecEvent) => {
      queue.push(e)
      wake?.()
    }
    const result = (host: string, item: Omit<HostExecResult, 'host'>): ExecResult => {
      const r: ExecResult = { host, durationMs: item.durationMs ?? 0 }
      if (item.result) r.result = item.result
      if (item.error) r.error = errorFromJSON(item.error)
      if (item.partial) r.partial = item.partial
      if (item.copied) r.copied = item.copied
      return r
    }
    const dispatch = () => {
      if (stopped !== undefined) {
        for (; next < order.length; next++) {
          const host = order[next]!
          const error =
            stopped === 'abort'
              ? new AbortedError(`${host}: interrupted before it started`, { host })
              : new SkippedError(`${host}: not run: the rolling run stopped after ${failures} failed host(s)`, {
                  host,
                })
          push({ type: 'result', result: { host, error, durationMs: 0 } })
        }
        return
      }
      const byShard = new Map<ShardHandle, string[]>()
      while (next < order.length && inFlight < batch) {
        const host = order[next++]!
        const s = this.#shards[shardOf(host, this.#shards.length)]!
        if (!s.hosts.has(host)) {
          push({
            type: 'result',
            result: {
              host,
              error: new UnknownHostError(`${host}: not managed by this supervisor`, { host }),
              durationMs: 0,
            },
          })
          continue
        }
        inFlight++
        const list = byShard.get(s) ?? []
        list.push(host)
        byShard.set(s, list)
      }
      for (const [s, list] of byShard) send(s, list)
    }
    const send = (s: ShardHandle, list: string[]) => {
      const id = this.#nextId++
      const seen = new Set<string>()
      const onItems = (items: HostExecResult[], _done: boolean, chunks?: ExecChunk[]) => {
        for (const c of chunks ?? []) push({ type: 'output', host: c.host, stream: c.stream, data: c.data })
        for (const it of items) {
          if (seen.has(it.host)) continue
          seen.add(it.host)
          inFlight--
          const r = result(it.host, it)
          if (failed(r)) failures++
          push({ type: 'result', result: r })
        }
        if (stopped === undefined && stopAfter !== undefined && failures >= stopAfter) stopped = 'skip'
        dispatch()
      }
      const settle = (err?: KayError) => {
        live.delete(id)
        for (const h of list) {
          if (seen.has(h)) continue
          seen.add(h)
          inFlight--
          const e = err ?? new ShardRestartedError(`shard ${s.index} ended the request without a result`)
          push({ type: 'result', result: { host: h, error: errorFromJSON({ ...e.toJSON(), host: h }), durationMs: 0 } })
        }
        outstanding--
        dispatch()
        wake?.()
      }
      outstanding++
      live.set(id, s)
      this.#request(s, request(id, list), { onItems }).then(
        () => settle(),
        (err: KayError) => settle(err),
      )
    }
    const onAbort = () => {
      if (stopped === 'abort') return
      stopped = 'abort'
      for (const [id, s] of live) s.worker?.postMessage({ type: 'cancel', target: id } satisfies ShardRequest)
      dispatch()
    }
    if (opts.signal?.aborted) onAbort()
    else opts.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      dispatch()
      for (;;) {
        while (queue.length > 0) yield queue.shift()!
        if (outstanding === 0 && next >= order.length) return
        await new Promise<void>((r) => {
          wake = r
        })
        wake = undefined
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort)
      // A consumer that stopped early (break, an exception) leaves nothing running behind it.
      for (const [id, s] of live) s.worker?.postMessage({ type: 'cancel', target: id } satisfies ShardRequest)
    }
  }

  /** A runner bound to one host (drill-in reuses its pooled connection: no second handshake). */
  runner(host: string): HostRunner {
    this.#shardFor(host)
    return {
      host,
      run: (command, opts) => this.run(host, command, opts),
      detail: async (opts = {}) => {
        this.#check()
        const s = this.#shardFor(host)
        const m = await this.#request<ShardMessage & { type: 'detail-result' }>(s, {
          type: 'detail',
          id: this.#nextId++,
          host,
          timeoutMs: opts.timeoutMs ?? 10_000,
        })
        if (m.error) throw errorFromJSON(m.error)
        return m.detail!
      },
    }
  }

  /** Add hosts while running; they dial through the dial cap. Returns the ids actually added. */
  add(hosts: HostTarget[]): string[] {
    this.#check()
    const added = new Map<ShardHandle, HostTarget[]>()
    for (const h of hosts) {
      if (!this.#place(h)) continue
      const s = this.#shards[shardOf(h.id, this.#shards.length)]!
      const list = added.get(s) ?? []
      list.push(h)
      added.set(s, list)
    }
    for (const [s, list] of added) s.worker?.postMessage({ type: 'add', hosts: list } satisfies ShardRequest)
    return [...added.values()].flat().map((h) => h.id)
  }

  /** Remove hosts while running; their connections close. */
  remove(ids: string[]): void {
    this.#check()
    const removed = new Map<ShardHandle, string[]>()
    for (const id of ids) {
      const s = this.#shards[shardOf(id, this.#shards.length)]!
      if (!s.hosts.delete(id)) continue
      this.#statuses.delete(id)
      this.#statusSeqs.delete(id)
      const list = removed.get(s) ?? []
      list.push(id)
      removed.set(s, list)
    }
    for (const [s, list] of removed) s.worker?.postMessage({ type: 'remove', ids: list } satisfies ShardRequest)
    this.#wakeSettleWaiters()
  }

  /** The hosts managed, in no particular order. */
  hosts(): string[] {
    return [...this.#statuses.keys()]
  }

  /** The last known status of every host (from coalesced events and collect replies). */
  statuses(): HostStatus[] {
    return [...this.#statuses.values()]
  }

  /**
   * Ask every shard for every host's status and its counters now. A tick does not need it: each collect reply
   * carries the same (every host's status, the shard's dropped frames), so `stats()` after `collect()` is current.
   */
  async refreshStats(): Promise<SupervisorStats> {
    this.#check()
    await Promise.all(
      this.#shards.map(async (s) => {
        try {
          const m = await this.#request<ShardMessage & { type: 'status-result' }>(s, {
            type: 'status',
            id: this.#nextId++,
          })
          s.droppedFrames = m.stats.droppedFrames
          for (const st of m.statuses) if (s.hosts.has(st.id)) this.#keepStatus(st, m.seq)
        } catch {
          // a restarting shard reports at the next refresh
        }
      }),
    )
    return this.stats()
  }

  /** An immutable snapshot: per-state counts, dials in flight, cap, handshakes, restarts. */
  stats(): SupervisorStats {
    const byState: Record<string, number> = {}
    const byMode: Record<string, number> = {}
    let handshakes = 0
    for (const st of this.#statuses.values()) {
      byState[st.state] = (byState[st.state] ?? 0) + 1
      handshakes += st.handshakes
      if (st.collectMode) byMode[st.collectMode] = (byMode[st.collectMode] ?? 0) + 1
    }
    let dropped = 0
    for (const s of this.#shards) dropped += s.droppedFrames
    const g = SharedDialGate.snapshot(this.#gateBuffer)
    const w = SharedDialGate.snapshot(this.#workBuffer)
    return Object.freeze({
      hosts: this.#statuses.size,
      shards: this.#shards.length,
      byState,
      byMode,
      dialsInFlight: g.inFlight,
      dialCap: g.cap,
      effectiveDialCap: g.effectiveCap,
      dialsWaiting: g.waiting,
      workInFlight: w.inFlight,
      workCap: w.cap,
      workWaiting: w.waiting,
      pressureEvents: g.pressureEvents,
      handshakes,
      restarts: this.#restarts,
      ticks: this.#ticks,
      droppedFrames: dropped,
    })
  }

  /**
   * Where every host stands now: connecting, starting or probing its collection stream, collecting (streaming or
   * exec), backing off, or failed. From the coalesced host events, so it moves as a cold start does; the same
   * counts arrive with each `progress` event.
   */
  progress(): FleetProgress {
    const p: FleetProgress = {
      hosts: this.#statuses.size,
      connecting: 0,
      starting: 0,
      probing: 0,
      streaming: 0,
      exec: 0,
      backoff: 0,
      failed: 0,
      settled: false,
    }
    for (const st of this.#statuses.values()) {
      switch (st.state) {
        case 'idle':
        case 'dialing':
          p.connecting++
          break
        case 'backoff':
          p.backoff++
          break
        case 'ready':
          if (st.collectPhase === 'streaming') p.streaming++
          else if (st.collectPhase === 'exec') p.exec++
          else if (st.collectPhase === 'probing') p.probing++
          else p.starting++
          break
        default:
          p.failed++
      }
    }
    p.settled = p.connecting + p.starting + p.probing === 0
    return p
  }

  /**
   * Wait until the fleet has settled ({@link FleetProgress.settled}): every host collects (streaming or exec), or
   * has failed at least once and backs off (its cause in its status's `lastError` and in the KAY_NOT_READY it is
   * answered with; it keeps redialing by itself), or is refused for good (host key) — nothing is left connecting or
   * opening its collection stream. Resolves with the progress at that moment, at once if already settled.
   *
   * Rejects with {@link SettleTimeoutError} (KAY_TIMEOUT, carrying the progress and the pending hosts) past
   * `timeoutMs`, KAY_ABORTED when `signal` fires, and KAY_CLOSED or KAY_SUPERVISOR_FATAL if the supervisor stops
   * meanwhile, or with what `onProgress` throws. Waiting never changes what the fleet does. Driven by the host
   * events, not by polling.
   */
  waitUntilSettled(opts: WaitSettledOptions): Promise<FleetProgress> {
    const { timeoutMs, signal, onProgress } = opts
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      return Promise.reject(new ConfigError(`timeoutMs must be a number >= 0, got ${timeoutMs}`))
    }
    return new Promise<FleetProgress>((resolve, reject) => {
      let last = ''
      const done = (settle: () => void) => {
        this.#settleWaiters.delete(check)
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        settle()
      }
      const check = () => {
        if (this.#fatal) return done(() => reject(this.#fatal))
        if (this.#stopping) return done(() => reject(new ClosedError('supervisor stopped while waiting to settle')))
        const p = this.progress()
        const key = progressKey(p)
        if (key !== last) {
          last = key
          try {
            onProgress?.(p)
          } catch (err) {
            // The caller's callback runs inside the shards' message handling: its exception ends its own wait only.
            return done(() => reject(err))
          }
        }
        if (p.settled) done(() => resolve(p))
      }
      const onAbort = () => done(() => reject(new AbortedError('stopped waiting for the fleet to settle')))
      const timer = setTimeout(() => {
        const p = this.progress()
        const pending = this.statuses()
          .filter(unsettled)
          .map((st) => st.id)
        done(() => reject(new SettleTimeoutError(timeoutMs, p, pending)))
      }, timeoutMs)
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#settleWaiters.add(check)
      check()
    })
  }

  #wakeSettleWaiters(): void {
    for (const w of [...this.#settleWaiters]) w()
  }

  #emitProgress(): void {
    if (this.listenerCount('progress') === 0) return
    const p = this.progress()
    const key = progressKey(p)
    if (key === this.#lastProgress) return
    this.#lastProgress = key
    this.emit('progress', p)
  }

  /** @internal Test hook: crash a shard (`throw` = uncaught exception, `exit` = process.exit in the worker). */
  crashShard(index: number, how: 'throw' | 'exit' | 'terminate'): void {
    const w = this.#shards[index]?.worker
    if (!w) return
    if (how === 'terminate') void w.terminate()
    else w.postMessage({ type: 'crash', how } satisfies ShardRequest)
  }

  /** The shard index hosting a host. */
  shardOf(host: string): number {
    return shardOf(host, this.#shards.length)
  }

  /**
   * Stop: ask every shard to close its actors (in-flight work gets KAY_CLOSED), wait up to `timeoutMs`, then
   * terminate the threads. Leaves no thread, socket or timer behind. Idempotent.
   */
  async stop(opts: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? STOP_TIMEOUT_MS
    this.#stopping = true
    this.#wakeSettleWaiters()
    await Promise.all(
      this.#shards.map(async (s) => {
        const w = s.worker
        if (!w) return
        let timer: ReturnType<typeof setTimeout> | undefined
        await Promise.race([
          this.#request(s, { type: 'stop', id: this.#nextId++ }).catch(() => {}),
          new Promise<void>((r) => {
            timer = setTimeout(r, timeoutMs)
          }),
        ])
        clearTimeout(timer)
        s.worker = undefined
        for (const [id, p] of s.pending) {
          s.pending.delete(id)
          p.reject(new ClosedError('supervisor stopped'))
        }
        await w.terminate()
      }),
    )
    this.#resolver.close()
    this.removeAllListeners('host')
  }
}

/** A host that has not settled yet: connecting, or connected with its collection stream not open (starting, probing). */
function unsettled(st: HostStatus): boolean {
  if (st.state === 'idle' || st.state === 'dialing') return true
  return st.state === 'ready' && st.collectPhase !== 'streaming' && st.collectPhase !== 'exec'
}

function progressKey(p: FleetProgress): string {
  return `${p.hosts} ${p.connecting} ${p.starting} ${p.probing} ${p.streaming} ${p.exec} ${p.backoff} ${p.failed}`
}

function resolveConfig(opts: SupervisorOptions): ShardConfig {
  if (!opts.identity || typeof opts.identity.username !== 'string' || opts.identity.username === '') {
    throw new ConfigError('identity.username is required')
  }
  const backoff = verifyBackoff({ ...DEFAULT_BACKOFF, ...opts.backoff })
  const policy = opts.trust?.policy ?? 'accept-new'
  return {
    identity: opts.identity,
    trust: {
      knownHostsPath: opts.trust?.knownHostsPath ?? join(homedir(), '.config', 'kay', 'known_hosts'),
      extraKnownHosts: opts.trust?.extraKnownHosts ?? [],
      policy,
    },
    actor: {
      ...(opts.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: opts.handshakeTimeoutMs }),
      keepaliveIntervalMs: opts.keepalive?.intervalMs ?? 15_000,
      probeDeadlineMs: opts.keepalive?.probeDeadlineMs ?? 5_000,
      maxChannels: opts.maxChannels ?? 4,
      backoff,
    },
    dialRatePerSec: dialRateOf(opts) / threadsOf(opts),
    collect: {
      mode: opts.collectMode ?? 'stream',
      dfEvery: opts.dfEvery ?? DF_EVERY,
      ...(opts.collectFlavours ? { flavours: opts.collectFlavours } : {}),
      ...(opts.nodeExporter ? { node: true } : {}),
    },
    eventWindowMs: opts.eventWindowMs ?? 50,
    testHooks: opts.testHooks ?? false,
  }
}

/**
 * Hosts one shard thread serves before the default adds another. A thread adds parallelism (tick wall time, dials
 * per second) at a cost in memory and CPU per host-tick; one thread keeps a 1,000-host tick well inside the goal and
 * keeps up with the default dial rate (docs/adr/0006-shard-threads-sized-to-fleet.md).
 */
export const HOSTS_PER_SHARD = 1000

/** The default shard count: one per {@link HOSTS_PER_SHARD} hosts, at most one per core, at least one. */
export function defaultThreads(hostCount: number, cores: number = availableParallelism()): number {
  return Math.max(1, Math.min(cores, Math.ceil(hostCount / HOSTS_PER_SHARD)))
}

function threadsOf(opts: SupervisorOptions): number {
  return opts.threads ?? defaultThreads(opts.hosts.length)
}

function dialRateOf(opts: SupervisorOptions): number {
  const rate = opts.dialRate ?? 20 * (opts.dialCap ?? 16)
  if (!Number.isFinite(rate) || rate < 0)
    throw new ConfigError(`dialRate must be a number >= 0 per second, got ${rate}`)
  return rate
}

const fromSource = import.meta.url.endsWith('.ts')

function workerEntry(): URL {
  return new URL(fromSource ? './shard-boot.mjs' : './shard-worker.js', import.meta.url)
}

/** Running from TypeScript sources (tests, `pnpm kay`), the worker resolves workspace packages to sources. */
function workerExecArgv(): string[] {
  return fromSource ? ['--conditions=kay-source'] : []
}
