/**
 * The shard: a worker thread hosting many HostActors. It answers the supervisor's batched requests (one
 * `collect` per tick, one reply with all its hosts) and coalesces host events per short window.
 *
 * `runShard` is transport-agnostic (it takes a port-like object) so tests can run a shard in-thread;
 * `shard-worker.ts` is the thread entry that binds it to `parentPort`.
 */
import {
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
import { CollectPacker, type CollectReply } from './packed.js'
import type {
  HostCollectResult,
  HostEvent,
  HostExecResult,
  RunOptionsWire,
  ShardConfig,
  ShardMessage,
  ShardRequest,
  ShardStats,
} from './protocol.js'

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
/** exec results are flushed when this many are pending, or at the event window. */
const EXEC_BATCH = 200

/** One managed host: its connection and its collector. */
export interface ShardEntry {
  actor: HostActor
  collector: HostCollector
}

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
 * through a callback (`collectTo`), not a promise: on a steady stream a host's tick is a frame and a row. Exported
 * for the tick-path micro bench.
 */
export function collectTick(entries: Iterable<ShardEntry>, timeoutMs: number): Promise<CollectReply> {
  const list = Array.isArray(entries) ? (entries as ShardEntry[]) : Array.from(entries)
  const packer = new CollectPacker(list.length)
  if (list.length === 0) return Promise.resolve(packer.finish())
  return new Promise((resolve) => {
    let left = list.length
    const report = (e: ShardEntry, metrics: HostMetrics | undefined, err: unknown): void => {
      packer.add(hostResult(e, metrics, err))
      if (--left === 0) resolve(packer.finish())
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
  readonly #pendingEvents = new Map<string, HostEvent>()
  readonly #pendingPins: HostEvent[] = []
  #eventTimer: ReturnType<typeof setTimeout> | undefined
  #stopping = false

  constructor(port: ShardPort, config: ShardConfig, deps: ShardDeps) {
    this.#port = port
    this.#config = config
    this.#deps = deps
  }

  add(targets: HostTarget[]): void {
    if (this.#stopping) return
    for (const t of targets) {
      if (this.#hosts.has(t.id)) continue
      const { connector, via } = this.#connectorFor(t)
      const actor = this.#makeActor(t, connector)
      if (via) this.#follow(via, actor)
      let entry: ShardEntry | undefined
      const collector = new HostCollector(actor, {
        mode: this.#config.collect.mode,
        dfEvery: this.#config.collect.dfEvery,
        ...(this.#config.collect.flavours ? { flavours: this.#config.collect.flavours } : {}),
        ...(this.#deps.workGate ? { workGate: this.#deps.workGate } : {}),
        onPhase: () => {
          if (entry) this.#queueEvent({ kind: 'state', status: statusOf(entry) })
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
    const files = t.identityFiles ?? []
    const only = t.identitiesOnly === true
    if (files.length === 0 && !only && t.identityAgent === undefined) return this.#deps.identity
    const cacheKey = `${only ? 'only' : ''}\0${t.identityAgent ?? ''}\0${files.join('\0')}`
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
   * The fleet's keys plus the host's own IdentityFile keys, with the host's IdentityAgent (`none`: no agent) or
   * else the fleet's agent. With IdentitiesOnly the agent offers only the keys that match those files (the fleet's
   * `-i` files, or the default ones when there are none, and the host's), as OpenSSH does; passphrase-protected
   * ones are matched through their `.pub`.
   */
  async #loadHostIdentity(t: HostTarget, files: string[], only: boolean): Promise<Identity> {
    const base = this.#deps.identity
    const agent = t.identityAgent ?? base.agent ?? 'none'
    const load = (identityFiles: string[] | undefined, defaultIdentityFiles?: string[]) =>
      loadIdentity({
        username: t.user,
        skipMissing: true,
        agent,
        identitiesOnly: only,
        ...(identityFiles ? { identityFiles } : {}),
        ...(defaultIdentityFiles ? { defaultIdentityFiles } : {}),
      })
    // No defaults here: the fleet identity already has its keys (its -i files or the defaults).
    const own = await load(files, [])
    const seen = new Set(base.keys.map((k) => k.source))
    const keys = [...base.keys, ...own.keys.filter((k) => !seen.has(k.source))]
    const id: Identity = { username: base.username, keys }
    const a = own.agent
    if (a !== undefined) id.agent = a
    if (only && a !== undefined) {
      const { keyFiles, keys: inline = [] } = this.#config.identity
      // The files the fleet identity came from: its -i files; else the defaults, unless it had inline keys only.
      // Their load gives the `.pub` blobs of passphrase-protected ones, which `keys` cannot hold.
      const fleet =
        keyFiles.length > 0 || inline.length === 0 ? await load(keyFiles.length > 0 ? keyFiles : undefined) : undefined
      id.agentKeys = [...keys.map((k) => k.key.getPublicSSH()), ...(fleet?.agentKeys ?? []), ...(own.agentKeys ?? [])]
    }
    return id
  }

  #makeActor(t: HostTarget, connector: Connector): HostActor {
    const a = this.#config.actor
    const actor = new HostActor({
      target: t,
      identity: this.#identityFor(t),
      verifier: this.#deps.verifier,
      dialGate: this.#deps.gate,
      connector,
      backoff: a.backoff,
      handshakeTimeoutMs: t.connectTimeoutMs ?? a.handshakeTimeoutMs,
      keepaliveIntervalMs: t.keepaliveIntervalMs ?? a.keepaliveIntervalMs,
      probeDeadlineMs: a.probeDeadlineMs,
      maxChannels: a.maxChannels,
    })
    actor.on('state', (status) => {
      if (this.#retryOnFailure.size > 0) this.#retryAfterHop(actor, status)
      const entry = this.#hosts.get(status.id)
      this.#queueEvent({ kind: 'state', status: entry?.actor === actor ? statusOf(entry) : status })
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
        actor = this.#makeActor({ ...j, id: `jump:${key}` }, conn)
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

  #queueEvent(e: HostEvent & { kind: 'state' }): void {
    if (this.#stopping) return
    this.#pendingEvents.set(e.status.id, e)
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
    const events = [...this.#pendingPins.splice(0), ...this.#pendingEvents.values()]
    this.#pendingEvents.clear()
    this.#port.postMessage({ type: 'events', events })
  }

  async collect(id: number, timeoutMs: number): Promise<void> {
    const { results, packed } = await collectTick(this.#hosts.values(), timeoutMs)
    this.#port.postMessage({ type: 'collect-result', id, results, packed }, [packed.values.buffer as ArrayBuffer])
  }

  async run(id: number, host: string, command: string, opts: RunOptionsWire): Promise<void> {
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

  async exec(req: ShardRequest & { type: 'exec' }): Promise<void> {
    let pending: HostExecResult[] = []
    let flushTimer: ReturnType<typeof setTimeout> | undefined
    const flush = (done: boolean) => {
      if (flushTimer) clearTimeout(flushTimer)
      flushTimer = undefined
      const items = pending
      pending = []
      if (items.length > 0 || done) this.#port.postMessage({ type: 'exec-items', id: req.id, items, done })
    }
    const push = (item: HostExecResult) => {
      pending.push(item)
      if (pending.length >= EXEC_BATCH) flush(false)
      else if (!flushTimer) flushTimer = setTimeout(() => flush(false), this.#config.eventWindowMs)
    }
    let next = 0
    const worker = async () => {
      while (next < req.hosts.length) {
        const host = req.hosts[next++]!
        const e = this.#hosts.get(host)
        if (!e) {
          push({ host, error: unknownHost(host) })
          continue
        }
        try {
          push({ host, result: await e.actor.run(req.command, req.opts) })
        } catch (err) {
          push({ host, error: toKayError(err, host).toJSON() })
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(EXEC_CONCURRENCY, req.hosts.length) }, worker))
    flush(true)
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
    this.#port.postMessage({ type: 'status-result', id, statuses, stats })
  }

  /** Close every actor (in-flight work gets KAY_CLOSED), flush events, leave no timer behind. */
  async stop(id: number): Promise<void> {
    this.#stopping = true
    if (this.#eventTimer) clearTimeout(this.#eventTimer)
    this.#eventTimer = undefined
    await this.remove([...this.#hosts.keys()])
    await Promise.all([...this.#jumps.values()].map((j) => j.close()))
    this.#jumps.clear()
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
      case 'detail':
        void this.detail(req.id, req.host, req.timeoutMs)
        return
      case 'status':
        this.status(req.id)
        return
      case 'stop':
        void this.stop(req.id)
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

function unknownHost(host: string) {
  return new UnknownHostError(`${host}: not managed by this supervisor`, { host }).toJSON()
}
