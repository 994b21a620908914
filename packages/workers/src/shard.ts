/**
 * The shard: a worker thread hosting many HostActors. It answers the supervisor's batched requests (one
 * `collect` per tick, one reply with all its hosts) and coalesces host events per short window.
 *
 * `runShard` is transport-agnostic (it takes a port-like object) so tests can run a shard in-thread;
 * `shard-worker.ts` is the thread entry that binds it to `parentPort`.
 */
import { setMaxListeners } from 'node:events'
import {
  AbortedError,
  type CollectDone,
  type Connector,
  type DialGate,
  directConnector,
  HostActor,
  HostCollector,
  type HostKeyVerifier,
  type HostMetrics,
  type HostStatus,
  type HostTarget,
  type Identity,
  loadIdentity,
  toKayError,
  UnknownHostError,
} from '@kay/core'
import { getPaths, NODE_LIMITS, NodeSink, putPaths, STOP_GRACE_MS } from '@kay/core/internal'
import { CollectPacker, type CollectReply } from './packed.js'
import type {
  CommandOptions,
  ExecChunk,
  HostCollectResult,
  HostEvent,
  HostExecResult,
  ShardConfig,
  ShardMessage,
  ShardRequest,
  ShardStats,
} from './protocol.js'
import { SupervisorResolver } from './shard-resolver.js'

export interface ShardPort {
  /** `transfer`: buffers moved to the receiver, not copied (a packed collect reply). */
  postMessage(msg: ShardMessage, transfer?: ArrayBuffer[]): void
}

export interface ShardDeps {
  gate: DialGate
  /** The fleet-wide remote-work gate (stream probes, exec collections); none: unbounded. */
  workGate?: DialGate
  identity: Identity
  verifier: HostKeyVerifier
}

/** Bound on commands in flight per shard for `exec` across hosts (each connection also caps its channels). */
const EXEC_CONCURRENCY = 512
/** exec results are flushed when this many are pending, or at the output window. */
const EXEC_BATCH = 200
/** Streamed output is flushed when this many bytes are pending, or at the output window. */
const EXEC_BATCH_BYTES = 256 * 1024
/** How long exec results and output wait to share one message across the thread boundary, ms. */
const EXEC_OUTPUT_WINDOW_MS = 20

/** One managed host: its connection and its collector. */
export interface ShardEntry {
  actor: HostActor
  collector: HostCollector
}

/**
 * The shard's order of status captures: every status that leaves the shard (in an event, a collect or a status
 * reply) carries the number it was taken at, so the supervisor keeps each host's newest, whatever order the messages
 * carrying them arrive in (a tick's reply, for one, leaves when its last host answers).
 */
let statusSeq = 0

/** A host's status with its collection's mode and phase: what events and status replies carry. */
function statusOf({ actor, collector }: ShardEntry): HostStatus {
  const s = actor.status()
  if (collector.mode) s.collectMode = collector.mode
  if (collector.phase) s.collectPhase = collector.phase
  return s
}

/** Why a dial failed that a hop coming back may have fixed (not auth: that is the host's own refusal). */
const PATH_ERRORS = new Set([
  'KAY_NOT_READY',
  'KAY_CONNECT_FAILED',
  'KAY_CONNECTION_LOST',
  'KAY_HANDSHAKE_TIMEOUT',
  'KAY_KEEPALIVE_TIMEOUT',
])

/**
 * One tick over a shard's hosts: every host's metrics or typed error (none is left out), the common case packed
 * into rows (packed.ts) as each host answers, so no result object outlives its host's answer. Each host reports
 * through a callback (`collectTo`), not a promise: on a steady stream a host's tick is a frame and a row. With a
 * `sink` (a serving shard's), each host that answered writes its node_exporter series into it as it reports (only
 * then: a late answer after a failed tick writes nothing), and they go in the same buffer as the rows. Exported for
 * the tick-path micro bench.
 */
export function collectTick(entries: Iterable<ShardEntry>, timeoutMs: number, sink?: NodeSink): Promise<CollectReply> {
  const list = Array.isArray(entries) ? (entries as ShardEntry[]) : Array.from(entries)
  const packer = new CollectPacker(list.length)
  const finish = (): CollectReply => packer.finish(sink?.take())
  if (list.length === 0) return Promise.resolve(finish())
  return new Promise((resolve) => {
    let left = list.length
    const report = (e: ShardEntry, metrics: HostMetrics | undefined, err: unknown): void => {
      // The status is taken now, in the same turn as its number.
      packer.add(hostResult(e, metrics, err), ++statusSeq)
      if (metrics !== undefined && sink !== undefined) e.collector.nodeSeries?.writeTo(sink)
      if (--left === 0) resolve(finish())
    }
    for (const e of list) {
      const done = reportOnce(e, report)
      try {
        e.collector.collectTo(timeoutMs, done)
      } catch (err) {
        // A collector that throws instead of reporting still gives its host a result this tick.
        done(undefined, err)
      }
    }
  })
}

/**
 * A host's `done` for one tick: passes its first report on and ignores any later one. Returned as an anonymous
 * arrow: a named one (`const done = …`) costs a `__name` call per host per tick when run from source under tsx.
 */
function reportOnce(
  e: ShardEntry,
  report: (e: ShardEntry, metrics: HostMetrics | undefined, err: unknown) => void,
): CollectDone {
  let reported = false
  return (metrics, err) => {
    if (reported) return
    reported = true
    report(e, metrics, err)
  }
}

function hostResult(
  { actor, collector }: ShardEntry,
  metrics: HostMetrics | undefined,
  err: unknown,
): HostCollectResult {
  // The status after the collect: it may have changed the connection's state.
  const r: HostCollectResult = { host: actor.id, status: actor.status() }
  if (metrics) r.metrics = metrics
  else {
    r.error = toKayError(err, actor.id).toJSON()
    // Only here: a result with metrics keeps the plain status that packs into a row (the supervisor knows the phase).
    if (collector.phase) r.status.collectPhase = collector.phase
  }
  if (collector.mode) r.collectMode = collector.mode
  return r
}

export class Shard {
  readonly #port: ShardPort
  readonly #config: ShardConfig
  readonly #deps: ShardDeps
  readonly #hosts = new Map<string, ShardEntry>()
  /** ProxyJump hops, shared by every host behind them (one pooled connection per jump host). */
  readonly #jumps = new Map<string, HostActor>()
  /** The actors (hosts and further hops) whose connection goes through each hop. */
  readonly #behind = new Map<HostActor, Set<HostActor>>()
  /** Actors that were dialing when their hop came back: retried once more if that dial fails. */
  readonly #retryOnFailure = new Set<HostActor>()
  readonly #identities = new Map<string, Promise<Identity>>()
  /** Hosts whose state or collection phase changed since the last flush: their status is taken when it goes. */
  readonly #pendingEvents = new Map<string, HostActor>()
  readonly #pendingPins: HostEvent[] = []
  /** Exec and copy requests in progress, by request id: aborting one cancels it. */
  readonly #fanOuts = new Map<number, AbortController>()
  #eventTimer: ReturnType<typeof setTimeout> | undefined
  #stopping = false
  /** Names are resolved by the supervisor (one cache and one bound for the fleet), outside the dial slot. */
  readonly #resolver: SupervisorResolver
  /** Where a serving shard's hosts write their node_exporter series each tick (kept: its buffers are reused). */
  readonly #nodeSink: NodeSink | undefined

  constructor(port: ShardPort, config: ShardConfig, deps: ShardDeps) {
    this.#port = port
    this.#config = config
    this.#nodeSink = config.collect.node === true ? new NodeSink(NODE_LIMITS.families) : undefined
    this.#deps = deps
    this.#resolver = new SupervisorResolver((m) => this.#port.postMessage(m))
  }

  add(targets: HostTarget[]): void {
    if (this.#stopping) return
    for (const t of targets) {
      if (this.#hosts.has(t.id)) continue
      const { connector, via } = this.#connectorFor(t)
      const actor = this.#makeActor(t, connector, isDirectTcp(t))
      if (via) this.#follow(via, actor)
      let entry: ShardEntry | undefined
      const collector = new HostCollector(actor, {
        mode: this.#config.collect.mode,
        dfEvery: this.#config.collect.dfEvery,
        node: this.#config.collect.node === true,
        ...(this.#config.collect.flavours ? { flavours: this.#config.collect.flavours } : {}),
        ...(this.#deps.workGate ? { workGate: this.#deps.workGate } : {}),
        onPhase: () => {
          if (entry) this.#queueEvent(entry.actor)
        },
      })
      entry = { actor, collector }
      this.#hosts.set(t.id, entry)
      actor.start()
    }
  }

  async remove(ids: string[]): Promise<void> {
    await Promise.all(
      ids.map((id) => {
        const e = this.#hosts.get(id)
        if (!e) return undefined
        this.#hosts.delete(id)
        this.#pendingEvents.delete(id)
        for (const set of this.#behind.values()) set.delete(e.actor)
        this.#retryOnFailure.delete(e.actor)
        e.collector.close()
        return e.actor.close()
      }),
    )
  }

  /**
   * The host's identity: the fleet's own unless its ssh_config names IdentityFile, IdentitiesOnly or IdentityAgent;
   * then built once per distinct setting (loadIdentity caches per path too). Missing config IdentityFiles are
   * skipped, as ssh does.
   */
  #identityFor(t: HostTarget): Identity | Promise<Identity> {
    const files = t.identityFiles
    const only = t.identitiesOnly === true
    const certs = t.certificateFiles ?? []
    if (files === undefined && !only && t.identityAgent === undefined && certs.length === 0) return this.#deps.identity
    const fileKey = files === undefined ? '\0fleet' : files.join('\0')
    const cacheKey = `${only ? 'only' : ''}\0${t.identityAgent ?? ''}\0${fileKey}\0\0${certs.join('\0')}`
    let p = this.#identities.get(cacheKey)
    if (!p) {
      p = this.#loadHostIdentity(t, files, only)
      // A failed load surfaces as that host's dial error (e.g. KAY_KEY_PERMISSIONS), not as an unhandled rejection.
      p.catch(() => {})
      this.#identities.set(cacheKey, p)
    }
    return p
  }

  /**
   * The host's keys, as ssh picks them: its `identityFiles` when it has them (the complete list: they replace the
   * fleet's key files and the default keys), else the fleet's keys; inline keys (embedding API) always come first.
   * The agent is the host's IdentityAgent (`none`: no agent), else the fleet's. With IdentitiesOnly the agent offers
   * only the keys that match those files, as OpenSSH does; passphrase-protected ones are matched through their `.pub`.
   */
  async #loadHostIdentity(t: HostTarget, files: string[] | undefined, only: boolean): Promise<Identity> {
    const base = this.#deps.identity
    const agent = t.identityAgent ?? base.agent ?? 'none'
    const load = (identityFiles: readonly string[] | undefined, defaultIdentityFiles?: string[]) =>
      loadIdentity({
        username: t.user,
        skipMissing: true,
        agent,
        identitiesOnly: only,
        // CertificateFile: signed by the host's keys or the fleet's (or through the agent).
        ...(t.certificateFiles ? { certificateFiles: t.certificateFiles, signingKeys: base.keys } : {}),
        ...(identityFiles ? { identityFiles } : {}),
        ...(defaultIdentityFiles ? { defaultIdentityFiles } : {}),
      })
    const { keyFiles, keys: inlineTexts = [] } = this.#config.identity
    // buildIdentity puts the inline keys first.
    const inline = base.keys.slice(0, inlineTexts.length)
    // The files the keys come from: the host's own, else the fleet's -i files, else the defaults (unless the fleet
    // has inline keys only). Their load also gives the `.pub` blobs of passphrase-protected ones for IdentitiesOnly.
    const source =
      files !== undefined
        ? await load(files, [])
        : keyFiles.length > 0
          ? await load(keyFiles)
          : inlineTexts.length === 0
            ? await load(undefined)
            : await load([], [])
    const seen = new Set(inline.map((k) => k.source))
    const loaded = source.keys.filter((k) => !seen.has(k.source))
    // CertificateFile certificates first, as ssh prefers them.
    const certFiles = new Set(t.certificateFiles ?? [])
    const keys = [
      ...loaded.filter((k) => certFiles.has(k.source)),
      ...inline,
      ...loaded.filter((k) => !certFiles.has(k.source)),
    ]
    const id: Identity = { username: base.username, keys }
    const a = source.agent
    if (a !== undefined) id.agent = a
    // The agent's certificates: the load asked the host's agent (the fleet's unless IdentityAgent names another).
    const agentCerts = source.agentCertificates ?? []
    if (a !== undefined && agentCerts.length > 0) id.agentCertificates = agentCerts
    if (only && a !== undefined) {
      id.agentKeys = [...keys.map((k) => k.key.getPublicSSH()), ...(source.agentKeys ?? [])]
    }
    return id
  }

  /** `tcp`: the connector dials the host's name over TCP, so the name is resolved first (behind a jump it is not). */
  #makeActor(t: HostTarget, connector: Connector, tcp: boolean): HostActor {
    const a = this.#config.actor
    const actor = new HostActor({
      target: t,
      identity: this.#identityFor(t),
      verifier: this.#deps.verifier,
      dialGate: this.#deps.gate,
      connector,
      ...(tcp ? { resolver: this.#resolver } : {}),
      backoff: a.backoff,
      // An explicit deadline (the command line's) wins over the host's ConnectTimeout; the actor falls back to it.
      ...(a.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: a.handshakeTimeoutMs }),
      keepaliveIntervalMs: t.keepaliveIntervalMs ?? a.keepaliveIntervalMs,
      probeDeadlineMs: a.probeDeadlineMs,
      maxChannels: a.maxChannels,
    })
    actor.on('state', (status) => {
      if (this.#retryOnFailure.size > 0) this.#retryAfterHop(actor, status)
      this.#queueEvent(actor)
    })
    actor.on('pinned', (p) => this.#queuePin({ kind: 'pinned', host: p.id, fingerprint: p.fingerprint }))
    return actor
  }

  /**
   * TCP, the host's ProxyCommand, or through the last ProxyJump hop (the first hop may have a ProxyCommand); `via`
   * is that hop.
   */
  #connectorFor(t: HostTarget): { connector: Connector; via?: HostActor } {
    const chain = t.jump
    if (!chain || chain.length === 0) return { connector: directConnector(t) }
    let hop: HostActor | undefined
    for (const j of chain) {
      const key = `${j.user}@${j.hostname}:${j.port}`
      let actor = this.#jumps.get(key)
      if (!actor) {
        const prev = hop
        const conn: Connector = prev ? (target) => prev.forwardOut(target.hostname, target.port) : directConnector(j)
        actor = this.#makeActor({ ...j, id: `jump:${key}` }, conn, !prev && isDirectTcp(j))
        this.#jumps.set(key, actor)
        if (prev) this.#follow(prev, actor)
        actor.on('state', (s) => {
          if (s.state === 'ready') this.#hopReady(actor!)
        })
        actor.start()
      }
      hop = actor
    }
    const last = hop!
    return { connector: (target) => last.forwardOut(target.hostname, target.port), via: last }
  }

  #follow(hop: HostActor, actor: HostActor): void {
    let set = this.#behind.get(hop)
    if (!set) {
      set = new Set()
      this.#behind.set(hop, set)
    }
    set.add(actor)
  }

  /**
   * A hop is ready again: whatever waits behind it for a path-related failure redials now instead of at the end of
   * its backoff (which grew while the hop was down); one that is dialing at this moment is retried if that dial
   * fails. Each redial still goes through the dial gate and its rate.
   */
  #hopReady(hop: HostActor): void {
    for (const a of this.#behind.get(hop) ?? []) {
      const s = a.status()
      if (s.state === 'backoff' && PATH_ERRORS.has(s.lastError?.code ?? '')) a.retryNow()
      else if (s.state === 'dialing') this.#retryOnFailure.add(a)
    }
  }

  #retryAfterHop(actor: HostActor, status: HostStatus): void {
    if (!this.#retryOnFailure.has(actor) || status.state === 'dialing') return
    this.#retryOnFailure.delete(actor)
    if (status.state === 'backoff' && PATH_ERRORS.has(status.lastError?.code ?? '')) actor.retryNow()
  }

  #queueEvent(actor: HostActor): void {
    if (this.#stopping) return
    this.#pendingEvents.set(actor.id, actor)
    this.#armEvents()
  }

  #queuePin(e: HostEvent): void {
    this.#pendingPins.push(e)
    this.#armEvents()
  }

  #armEvents(): void {
    if (this.#eventTimer) return
    this.#eventTimer = setTimeout(() => this.#flushEvents(), this.#config.eventWindowMs)
  }

  #flushEvents(): void {
    this.#eventTimer = undefined
    if (this.#pendingEvents.size === 0 && this.#pendingPins.length === 0) return
    const events = this.#pendingPins.splice(0)
    for (const actor of this.#pendingEvents.values()) {
      const entry = this.#hosts.get(actor.id)
      const status = entry?.actor === actor ? statusOf(entry) : actor.status()
      events.push({ kind: 'state', status, seq: ++statusSeq })
    }
    this.#pendingEvents.clear()
    this.#port.postMessage({ type: 'events', events })
  }

  async collect(id: number, timeoutMs: number): Promise<void> {
    const { results, seqs, packed } = await collectTick(this.#hosts.values(), timeoutMs, this.#nodeSink)
    let droppedFrames = 0
    for (const e of this.#hosts.values()) droppedFrames += e.collector.droppedFrames
    this.#port.postMessage({ type: 'collect-result', id, results, seqs, packed, droppedFrames }, [
      packed.values.buffer as ArrayBuffer,
    ])
  }

  async run(id: number, host: string, command: string, opts: CommandOptions): Promise<void> {
    const e = this.#hosts.get(host)
    if (!e) {
      this.#port.postMessage({ type: 'run-result', id, host, error: unknownHost(host) })
      return
    }
    try {
      const result = await e.actor.run(command, opts)
      this.#port.postMessage({ type: 'run-result', id, host, result })
    } catch (err) {
      this.#port.postMessage({ type: 'run-result', id, host, error: toKayError(err, host).toJSON() })
    }
  }

  /**
   * Run a command on each host (at most EXEC_CONCURRENCY at once in this shard; each connection caps its channels).
   * Streamed, output goes up as it arrives, batched with the results per short window; otherwise each host's
   * output travels in its result, and what it printed before a failure in `partial`.
   */
  async exec(req: ShardRequest & { type: 'exec' }): Promise<void> {
    const { stream = false, ...runOpts } = req.opts
    await this.#fanOut(req.id, req.hosts, async (e, host, signal, push) => {
      const out: Buffer[] = []
      const err: Buffer[] = []
      const onOutput = stream
        ? (s: 'stdout' | 'stderr', chunk: Buffer) => push.chunk(host, s, chunk)
        : (s: 'stdout' | 'stderr', chunk: Buffer) => (s === 'stdout' ? out : err).push(chunk)
      const text = (b: Buffer[]) => Buffer.concat(b).toString('utf8')
      try {
        const result = await e.actor.run(req.command, { ...runOpts, signal, onOutput })
        if (!stream) {
          result.stdout = text(out)
          result.stderr = text(err)
        }
        return { host, result }
      } catch (error) {
        const item: HostExecResult = { host, error: toKayError(error, host).toJSON() }
        if (!stream && (out.length > 0 || err.length > 0)) item.partial = { stdout: text(out), stderr: text(err) }
        return item
      }
    })
  }

  /** Copy files to or from each host over an SFTP session of its pooled connection (copy.ts has the rules). */
  async copy(req: ShardRequest & { type: 'copy' }): Promise<void> {
    const { spec } = req
    await this.#fanOut(req.id, req.hosts, async (e, host, signal) => {
      try {
        const copied = await e.actor.withSftp(
          (sftp) =>
            spec.direction === 'put'
              ? putPaths(sftp, host, spec.sources, spec.dest, { recursive: spec.recursive })
              : getPaths(sftp, host, spec.sources, spec.dest, { recursive: spec.recursive }),
          { timeoutMs: spec.timeoutMs, signal },
        )
        return { host, result: { stdout: '', stderr: '', exitCode: 0, signal: null, durationMs: 0 }, copied }
      } catch (error) {
        return { host, error: toKayError(error, host).toJSON() }
      }
    })
  }

  /**
   * The common shape of exec and copy: each host once, EXEC_CONCURRENCY at a time, results (and chunks) batched
   * per short window; a `cancel` for `id` aborts the hosts in progress and answers the rest as not started.
   */
  async #fanOut(
    id: number,
    hosts: string[],
    one: (e: ShardEntry, host: string, signal: AbortSignal, push: ExecBatcher) => Promise<HostExecResult>,
  ): Promise<void> {
    const ac = new AbortController()
    // Every host in progress listens to it (up to EXEC_CONCURRENCY): not a leak, so no warning on stderr.
    setMaxListeners(EXEC_CONCURRENCY + 1, ac.signal)
    this.#fanOuts.set(id, ac)
    const batch = new ExecBatcher(this.#port, id, EXEC_OUTPUT_WINDOW_MS)
    let next = 0
    const worker = async () => {
      while (next < hosts.length) {
        const host = hosts[next++]!
        const e = this.#hosts.get(host)
        if (!e) {
          batch.item({ host, error: unknownHost(host) })
          continue
        }
        if (ac.signal.aborted) {
          batch.item({ host, error: interrupted(host, 'before it started') })
          continue
        }
        const started = Date.now()
        const item = await one(e, host, ac.signal, batch)
        item.durationMs = Date.now() - started
        if (item.result) item.result.durationMs = item.durationMs
        batch.item(item)
      }
    }
    try {
      await Promise.all(Array.from({ length: Math.min(EXEC_CONCURRENCY, hosts.length) }, worker))
    } finally {
      this.#fanOuts.delete(id)
      batch.done()
    }
  }

  /** Stop an exec or copy in progress (a Ctrl-C): its running commands get TERM, its waiting hosts an abort error. */
  cancel(target: number): void {
    this.#fanOuts.get(target)?.abort()
  }

  /** A second Ctrl-C: stop everything in progress and KILL the commands still exiting after TERM, now. */
  hurry(): void {
    for (const ac of this.#fanOuts.values()) ac.abort()
    for (const e of this.#hosts.values()) e.actor.killStopping()
  }

  async detail(id: number, host: string, timeoutMs: number): Promise<void> {
    const e = this.#hosts.get(host)
    if (!e) {
      this.#port.postMessage({ type: 'detail-result', id, host, error: unknownHost(host) })
      return
    }
    try {
      const detail = await e.collector.detail(timeoutMs)
      this.#port.postMessage({ type: 'detail-result', id, host, detail })
    } catch (err) {
      this.#port.postMessage({ type: 'detail-result', id, host, error: toKayError(err, host).toJSON() })
    }
  }

  status(id: number): void {
    const statuses: HostStatus[] = []
    const seq = ++statusSeq
    const stats: ShardStats = { hosts: this.#hosts.size, byState: {}, handshakes: 0, droppedFrames: 0, byMode: {} }
    for (const entry of this.#hosts.values()) {
      const { collector } = entry
      const s = statusOf(entry)
      statuses.push(s)
      stats.byState[s.state] = (stats.byState[s.state] ?? 0) + 1
      stats.handshakes += s.handshakes
      stats.droppedFrames += collector.droppedFrames
      if (collector.mode) stats.byMode[collector.mode] = (stats.byMode[collector.mode] ?? 0) + 1
    }
    for (const j of this.#jumps.values()) stats.handshakes += j.status().handshakes
    this.#port.postMessage({ type: 'status-result', id, statuses, seq, stats })
  }

  /** Close every actor (in-flight work gets KAY_CLOSED), flush events, leave no timer behind. */
  async stop(id: number): Promise<void> {
    this.#stopping = true
    if (this.#eventTimer) clearTimeout(this.#eventTimer)
    this.#eventTimer = undefined
    // Commands stopped by an interrupt or a deadline have had TERM: give them the grace to exit before the
    // connections close (closing KILLs whatever is left).
    for (const ac of this.#fanOuts.values()) ac.abort()
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, STOP_GRACE_MS)
      void Promise.all([...this.#hosts.values()].map((e) => e.actor.stopped())).then(() => {
        clearTimeout(t)
        resolve()
      })
    })
    await this.remove([...this.#hosts.keys()])
    await Promise.all([...this.#jumps.values()].map((j) => j.close()))
    this.#jumps.clear()
    this.#resolver.close()
    for (const g of [this.#deps.gate, this.#deps.workGate] as Array<(DialGate & { close?: () => void }) | undefined>)
      g?.close?.()
    this.#port.postMessage({ type: 'stopped', id })
  }

  /** Dispatch one request. Never throws: every request with an id gets exactly one reply. */
  handle(req: ShardRequest): void {
    switch (req.type) {
      case 'add':
        this.add(req.hosts)
        return
      case 'remove':
        void this.remove(req.ids)
        return
      case 'collect':
        void this.collect(req.id, req.timeoutMs)
        return
      case 'run':
        void this.run(req.id, req.host, req.command, req.opts)
        return
      case 'exec':
        void this.exec(req)
        return
      case 'copy':
        void this.copy(req)
        return
      case 'cancel':
        this.cancel(req.target)
        return
      case 'hurry':
        this.hurry()
        return
      case 'detail':
        void this.detail(req.id, req.host, req.timeoutMs)
        return
      case 'status':
        this.status(req.id)
        return
      case 'stop':
        void this.stop(req.id)
        return
      case 'resolved':
        this.#resolver.settle(req)
        return
      case 'crash':
        if (!this.#config.testHooks) return
        if (req.how === 'exit') process.exit(70)
        setImmediate(() => {
          throw new Error('shard crash requested (test hook)')
        })
        return
    }
  }
}

function interrupted(host: string, when: string) {
  return new AbortedError(`${host}: interrupted ${when}`, { host }).toJSON()
}

/**
 * Results and output chunks of one exec or copy, batched per short window across the thread boundary: a message
 * goes up when EXEC_BATCH results or EXEC_BATCH_BYTES of output are pending, or when the window ends, never one per
 * chunk. Consecutive chunks of one host's stream are joined. A host's chunks always precede its result.
 */
class ExecBatcher {
  #items: HostExecResult[] = []
  /** Pending output, in arrival order; a host's consecutive chunks of one stream are kept together as parts. */
  #chunks: Array<{ host: string; stream: 'stdout' | 'stderr'; parts: Buffer[] }> = []
  #bytes = 0
  #timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly port: ShardPort,
    private readonly id: number,
    private readonly windowMs: number,
  ) {}

  chunk(host: string, stream: 'stdout' | 'stderr', data: Buffer): void {
    const last = this.#chunks.at(-1)
    if (last !== undefined && last.host === host && last.stream === stream) last.parts.push(data)
    else this.#chunks.push({ host, stream, parts: [data] })
    this.#bytes += data.length
    if (this.#bytes >= EXEC_BATCH_BYTES) this.#flush(false)
    else this.#arm()
  }

  item(item: HostExecResult): void {
    this.#items.push(item)
    if (this.#items.length >= EXEC_BATCH) this.#flush(false)
    else this.#arm()
  }

  done(): void {
    this.#flush(true)
  }

  #arm(): void {
    this.#timer ??= setTimeout(() => this.#flush(false), this.windowMs)
  }

  #flush(done: boolean): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#items.length === 0 && this.#chunks.length === 0 && !done) return
    const msg: ShardMessage = { type: 'exec-items', id: this.id, items: this.#items, done }
    if (this.#chunks.length > 0) {
      // One copy per run of chunks, into bytes of its own (ssh2's buffers may be slices of a pooled one).
      msg.chunks = this.#chunks.map((c): ExecChunk => {
        const data = new Uint8Array(c.parts.reduce((n, p) => n + p.length, 0))
        let at = 0
        for (const p of c.parts) {
          data.set(p, at)
          at += p.length
        }
        return { host: c.host, stream: c.stream, data }
      })
    }
    this.#items = []
    this.#chunks = []
    this.#bytes = 0
    this.port.postMessage(msg)
  }
}

/** A host reached by TCP to its own name: no ProxyJump and no ProxyCommand. */
function isDirectTcp(t: HostTarget): boolean {
  return (t.jump === undefined || t.jump.length === 0) && t.proxyCommand === undefined
}

function unknownHost(host: string) {
  return new UnknownHostError(`${host}: not managed by this supervisor`, { host }).toJSON()
}
