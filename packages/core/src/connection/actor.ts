import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2'
// ssh2 has no exports map: its algorithm tables are reachable, and the defaults must not be duplicated here.
import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import {
  AbortedError,
  ChannelOpenError,
  ClosedError,
  ConnectError,
  ConnectionLostError,
  HandshakeTimeoutError,
  HOST_KEY_ERROR_CODES,
  InternalError,
  KayError,
  KeepaliveTimeoutError,
  NotReadyError,
  OutputLimitError,
  ProtocolError,
  QueueFullError,
  ResolveError,
  TimeoutError,
} from '../errors.js'
import { type AuthState, createAuthState } from '../trust/keys.js'
import { verdictError } from '../trust/known-hosts.js'
import type {
  ActorState,
  Connector,
  HostKeyVerdict,
  HostKeyVerifier,
  HostStatus,
  HostTarget,
  Identity,
} from '../types.js'
import { type BackoffOptions, backoffDelay, verifyBackoff } from './backoff.js'
import { directConnector } from './connector.js'
import type { DialGate, DialOutcome, DialSlot } from './dial-gate.js'
import { hostKeyAlgorithms } from './probe.js'
import { defaultResolver, type Resolver } from './resolver.js'

export interface HostActorOptions {
  target: HostTarget
  /** Keys (and agent) for public-key auth; a promise when they are still being loaded (per-host IdentityFile). */
  identity: Identity | Promise<Identity>
  /** Decides on the host key. Required: kay never accepts any host key by default. */
  verifier: HostKeyVerifier
  /** Admission control for dials; held from TCP connect until ready or failed. */
  dialGate: DialGate
  connector?: Connector
  /**
   * Resolves the host's name before the dial asks for a slot (DNS never holds one); the connector then dials the
   * address. Default: for a plain TCP host (no connector given, no ProxyCommand) the thread's shared `dns.lookup`
   * resolver; none for a custom connector or a ProxyCommand (ProxyJump: the jump host resolves the name), unless given.
   */
  resolver?: Resolver
  clock?: Clock
  random?: () => number
  backoff?: Partial<BackoffOptions>
  /** TCP connect + key exchange + auth, as a whole, ms. Default 10000 (or the target's ConnectTimeout). */
  handshakeTimeoutMs?: number
  /**
   * Probe when nothing was received for this long, ms (from 10 s on, checked on the next whole second of the clock —
   * below it, the next tenth of the interval —, so a shard's hosts are checked together, not each on a wake-up of its
   * own; below 1 s, exactly). Default 15000. 0 disables keepalive.
   */
  keepaliveIntervalMs?: number
  /** A probe not answered within this deadline tears the connection down, ms. Default 5000. */
  probeDeadlineMs?: number
  /** Channels in flight on this connection (OpenSSH MaxSessions is 10; see DESIGN.md). Default 4. */
  maxChannels?: number
  /** Runs waiting for a channel; past it, KAY_QUEUE_FULL. Default 256. */
  maxQueued?: number
  /** Default command deadline, ms. Default 30000. */
  defaultTimeoutMs?: number
  /** Default output cap (stdout + stderr), bytes. Default 1 MiB. */
  defaultMaxOutputBytes?: number
}

export interface RunOptions {
  /** Deadline from the call, including any wait for a channel, ms. */
  timeoutMs?: number
  /** stdout + stderr cap, bytes. */
  maxOutputBytes?: number
  signal?: AbortSignal
  /** Data written to the command's stdin, then EOF. */
  stdin?: string | Uint8Array
  /**
   * Receive output as it arrives instead of in the result (whose stdout and stderr are then empty). Output up to the
   * cap is delivered, so a command that times out or passes the cap has shown what it printed until then.
   */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void
}

export interface SftpOptions {
  /** Deadline from the call, including any wait for a channel, ms. */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface RunResult {
  stdout: string
  stderr: string
  /** Exit status, or null if the command was killed by a signal (see `signal`) or the server sent none. */
  exitCode: number | null
  signal: string | null
  durationMs: number
}

export interface HostActorEvents {
  /** Every state transition, with the reason kept in the snapshot. */
  state: [HostStatus]
  /** A host key was pinned on first use. */
  pinned: [{ id: string; fingerprint: string }]
}

const CHANNEL_RETRY_DELAYS_MS = [25, 100, 250]

/** Keepalive checks fall on multiples of this (ms of the clock), or of a tenth of a shorter interval: #armKeepalive. */
const KEEPALIVE_GRID_MS = 1000
/** How long a command told to stop (TERM) has to exit before it gets KILL and its channel is closed, ms. */
export const STOP_GRACE_MS = 1000

/**
 * Bytes kay lets pile up unsent on one connection while the peer keeps sending: above what window-limited channel
 * writes can legitimately queue (4 channels × OpenSSH's 2 MiB window), far below what hurts (docs/adr/0009).
 */
const MAX_UNSENT_BYTES = 16 * 1024 * 1024
/**
 * Writes kay lets pile up unsent while the peer keeps sending. Each queued write costs bookkeeping several times the
 * size of a small reply, so against a flood of tiny requests the byte cap alone is far too loose (docs/adr/0009).
 * kay itself queues a few writes per tick.
 */
const MAX_UNSENT_WRITES = 4096
/**
 * Bytes a server may send before its `SSH-` version line. OpenSSH accepts 1024 lines of 8 KiB; kay accepts far
 * less, because ssh2 re-scans its whole pre-version buffer for every chunk that arrives (quadratic CPU). A real
 * server's pre-version text is a few lines (docs/adr/0009).
 */
const MAX_GREETING_BYTES = 16 * 1024
/** RFC 4254 SSH_OPEN_CONNECT_FAILED (2): what OpenSSH answers past MaxSessions (see DESIGN.md facts). */
const OPEN_CONNECT_FAILED = 2

interface Waiter {
  resolve: () => void
  reject: (err: Error) => void
}

/**
 * One host = one actor = one ssh2 Client. The actor dials through the DialGate, keeps the connection
 * alive (idle-only keepalive probe with a deadline), redials with full-jitter backoff when it is lost, and
 * multiplexes work onto channels of that one connection. It never waits for a dial on behalf of a caller:
 * while not ready every request fails at once with KAY_NOT_READY (invariant 2).
 *
 * State machine: idle → dialing → ready → (lost) → backoff → dialing … ; dialing → quarantined on a host-key
 * mismatch (terminal, no redial); any → closed.
 */
export class HostActor extends EventEmitter<HostActorEvents> {
  readonly id: string
  readonly target: HostTarget
  readonly #opts: HostActorOptions
  readonly #clock: Clock
  readonly #random: () => number
  readonly #backoff: BackoffOptions
  readonly #connector: Connector
  readonly #resolver: Resolver | undefined
  readonly #handshakeTimeoutMs: number
  readonly #keepaliveIntervalMs: number
  readonly #probeDeadlineMs: number
  readonly #maxChannels: number
  readonly #maxQueued: number

  #state: ActorState = 'idle'
  #client: Client | undefined
  /** The transport under #client, set with it; destroyed directly (ssh2's destroy() skips a stream it has ended). */
  #sock: Duplex | undefined
  #slot: DialSlot | undefined
  #attempts = 0
  #handshakes = 0
  #nextRetryAt: number | undefined
  #readySince: number | undefined
  #lastError: KayError | undefined
  #rttMs: number | undefined
  #timer: TimerHandle | undefined // backoff or handshake deadline
  #kaTimer: TimerHandle | undefined
  readonly #onKeepalive = () => this.#keepaliveTick()
  #probeTimer: TimerHandle | undefined
  #rxCount = 0
  #rxSeen = 0
  #channelsInUse = 0
  #reservedChannels = 0
  readonly #waiters: Waiter[] = []
  readonly #inflight = new Set<(err: KayError) => void>()
  /** Channels told to stop (TERM sent) that have not closed yet. */
  readonly #stopping = new Map<ClientChannel, { kill: () => void; closed: Promise<void> }>()
  #connGen = 0
  #dialAbort: AbortController | undefined

  constructor(opts: HostActorOptions) {
    super()
    if (!opts.verifier) throw new TypeError('HostActor: a host-key verifier is required')
    if (!opts.identity) throw new TypeError('HostActor: an identity (username + keys) is required')
    this.#opts = opts
    this.target = opts.target
    this.id = opts.target.id
    this.#clock = opts.clock ?? systemClock
    this.#random = opts.random ?? Math.random
    this.#backoff = verifyBackoff(opts.backoff)
    this.#connector = opts.connector ?? directConnector(opts.target)
    this.#resolver =
      opts.resolver ??
      (opts.connector === undefined && opts.target.proxyCommand === undefined ? defaultResolver() : undefined)
    this.#handshakeTimeoutMs = opts.handshakeTimeoutMs ?? opts.target.connectTimeoutMs ?? 10_000
    this.#keepaliveIntervalMs = opts.keepaliveIntervalMs ?? opts.target.keepaliveIntervalMs ?? 15_000
    this.#probeDeadlineMs = opts.probeDeadlineMs ?? 5_000
    this.#maxChannels = opts.maxChannels ?? 4
    this.#maxQueued = opts.maxQueued ?? 256
    if (!Number.isInteger(this.#maxChannels) || this.#maxChannels < 1) throw new RangeError('maxChannels must be >= 1')
  }

  get state(): ActorState {
    return this.#state
  }

  /** An immutable snapshot for tables, JSON and metrics. */
  status(): HostStatus {
    const s: HostStatus = { id: this.id, state: this.#state, attempts: this.#attempts, handshakes: this.#handshakes }
    if (this.#nextRetryAt !== undefined) s.nextRetryAt = this.#nextRetryAt
    if (this.#lastError) s.lastError = this.#lastError.toJSON()
    if (this.#rttMs !== undefined) s.rttMs = this.#rttMs
    if (this.#readySince !== undefined) s.readySince = this.#readySince
    return s
  }

  /** Start dialing (idempotent). */
  start(): void {
    if (this.#state !== 'idle') return
    void this.#dial()
  }

  /** Fail fast unless ready. The error carries the state and the next retry time. */
  notReady(): KayError {
    const details: Record<string, unknown> = { state: this.#state }
    if (this.#nextRetryAt !== undefined) details.nextRetryAt = this.#nextRetryAt
    const last = this.#lastError
    if (last) details.lastError = { code: last.code, message: last.message }
    if (this.#state === 'closed') return new ClosedError(`${this.id}: actor closed`, { host: this.id, details })
    // The cause of a host that is down travels with the refusal, so a caller need not look up its status.
    const why = last ? `; last error ${last.code}: ${withoutHost(last.message, this.id)}` : ''
    return new NotReadyError(`${this.id}: not ready (${this.#state})${why}`, { host: this.id, details, cause: last })
  }

  /**
   * Why a channel cannot be opened now: NotReady while not connected; while still `ready`, the connection died
   * under us (ssh2's socket ended, its close is pending), which is a connection loss, not "not ready (ready)".
   */
  #unavailable(): KayError {
    if (this.#state !== 'ready') return this.notReady()
    return new ConnectionLostError(`${this.id}: connection lost`, { host: this.id })
  }

  // ---------------------------------------------------------------------------------------------- dialing

  async #dial(): Promise<void> {
    const gen = ++this.#connGen
    this.#setState('dialing')
    const abort = new AbortController()
    this.#dialAbort = abort
    // The name first, outside the dial slot: a name that resolves slowly or not at all never holds one.
    let target = this.target
    if (this.#resolver) {
      try {
        const a = await this.#resolver.resolve(this.target.hostname, abort.signal)
        target = { ...this.target, hostname: a.address }
      } catch (err) {
        if (gen !== this.#connGen || this.#state === 'closed') return
        this.#dialFailed(gen, resolveFailure(this.id, err), 'failed')
        return
      }
      if (gen !== this.#connGen || this.#state !== 'dialing') return
    }
    let slot: DialSlot
    try {
      slot = await this.#opts.dialGate.acquire(abort.signal)
    } catch (err) {
      if (gen !== this.#connGen || this.#state === 'closed') return
      this.#dialFailed(gen, err instanceof KayError ? err : new ConnectError(String(err), { host: this.id }), 'failed')
      return
    }
    // Only the lookup and the wait for a slot listen to it; a connected actor need not keep it (and its listener
    // tables) for the connection's life.
    if (this.#dialAbort === abort) this.#dialAbort = undefined
    if (gen !== this.#connGen || this.#state !== 'dialing') {
      slot.release('failed')
      return
    }
    this.#slot = slot
    this.#handshakes++
    this.#timer = this.#clock.setTimeout(() => {
      this.#dialFailed(
        gen,
        new HandshakeTimeoutError(`${this.id}: handshake not done within ${this.#handshakeTimeoutMs} ms`, {
          host: this.id,
        }),
        'failed',
      )
    }, this.#handshakeTimeoutMs)

    let sock: Duplex
    let preferred: string[] = []
    let identity: Identity
    try {
      identity = await this.#opts.identity
      preferred = (await this.#opts.verifier.preferredHostKeyAlgorithms?.(this.target).catch(() => [])) ?? []
      sock = await this.#connector(target)
    } catch (err) {
      this.#dialFailed(gen, classifyConnectError(this.id, err), connectOutcome(err))
      return
    }
    if (gen !== this.#connGen || this.#state !== 'dialing') {
      sock.destroy()
      return
    }
    this.#handshake(gen, sock, identity, preferred)
  }

  #handshake(gen: number, sock: Duplex, identity: Identity, preferredHostKeys: string[]): void {
    const client = new Client()
    this.#client = client
    this.#sock = sock
    let verdict: HostKeyVerdict | undefined
    // The login name is the host's (ssh_config User, -l, user@host); the identity supplies the keys.
    const username = this.target.user || identity.username
    const auth = createAuthState({ ...identity, username })
    let firstError: unknown
    let sawBanner = false
    const dialOutcome = (err: unknown): DialOutcome => (!sawBanner && isPressure(err) ? 'pressure' : 'failed')

    // ssh2 may emit several 'error' events for one failure (readyTimeout emits two): keep a permanent listener.
    // A fatal error ends the connection here and now, whatever the peer does next: ssh2 itself only half-closes
    // the socket and goes on parsing what a hostile peer keeps sending (after a bad packet length, into a buffer
    // sized by that length). See docs/adr/0009-bounded-peers-any-shell.md.
    client.on('error', (err) => {
      if (firstError === undefined) firstError = err
      if (gen !== this.#connGen || !isFatal(err)) return
      if (this.#state === 'dialing') {
        // A verifier that threw put its own error first; otherwise this error is the cause.
        const cause = firstError instanceof KayError ? firstError : err
        this.#dialFailed(gen, classifyHandshakeError(this.target, cause, verdict, auth), dialOutcome(cause))
      } else if (this.#state === 'ready') {
        this.#lost(classifyLostError(this.id, err))
      }
    })
    client.on('handshake', () => {
      sawBanner = true
    })
    client.on('ready', () => {
      if (gen !== this.#connGen || this.#state !== 'dialing') {
        client.end()
        return
      }
      this.#clock.clearTimeout(this.#timer)
      this.#timer = undefined
      this.#releaseSlot('ok')
      this.#readySince = this.#clock.now()
      this.#nextRetryAt = undefined
      this.#lastError = undefined
      this.#setState('ready')
      this.#armKeepalive()
    })
    client.on('close', () => {
      if (gen !== this.#connGen) return
      if (this.#state === 'dialing') {
        const err = classifyHandshakeError(this.target, firstError, verdict, auth)
        this.#dialFailed(gen, err, dialOutcome(firstError))
      } else if (this.#state === 'ready') {
        this.#lost(
          new ConnectionLostError(`${this.id}: connection lost${firstError ? `: ${errMessage(firstError)}` : ''}`, {
            host: this.id,
            cause: firstError,
          }),
        )
      }
    })
    if ('setNoDelay' in sock && typeof (sock as Socket).setNoDelay === 'function') (sock as Socket).setNoDelay(true)
    const greeting = new GreetingScan()
    sock.on('data', (chunk: Buffer) => {
      this.#rxCount++
      if (!greeting.feed(chunk) && gen === this.#connGen && this.#state === 'dialing') {
        const err = new ProtocolError(
          `${this.id}: protocol error: no SSH version line in the first ${MAX_GREETING_BYTES} bytes`,
          { host: this.id, details: { limit: MAX_GREETING_BYTES } },
        )
        this.#dialFailed(gen, err, 'failed')
        return
      }
      // A peer that keeps sending while it reads nothing makes ssh2 queue its replies (window adjusts, request
      // failures, channel-open refusals) in the socket without bound: past the cap the connection goes.
      const unsent = sock.writableLength
      const writes = queuedWrites(sock)
      if ((unsent > MAX_UNSENT_BYTES || writes > MAX_UNSENT_WRITES) && gen === this.#connGen) {
        const err = new ProtocolError(
          `${this.id}: protocol error: the peer keeps sending but reads nothing (${unsent} bytes in ${writes} writes unsent)`,
          { host: this.id, details: { maxBytes: MAX_UNSENT_BYTES, maxWrites: MAX_UNSENT_WRITES } },
        )
        if (this.#state === 'dialing') this.#dialFailed(gen, err, 'failed')
        else if (this.#state === 'ready') this.#lost(err)
      }
    })

    const hostVerifier = (key: Buffer, verify: (ok: boolean) => void) => {
      // The whole target: the store honours the host's own StrictHostKeyChecking and UserKnownHostsFile.
      this.#opts.verifier.verify(this.target, key).then(
        (v) => {
          verdict = v
          if (v.kind === 'pinned') this.emit('pinned', { id: this.id, fingerprint: v.fingerprint })
          verify(v.kind === 'trusted' || v.kind === 'pinned')
        },
        (err) => {
          firstError = err
          verify(false)
        },
      )
    }
    try {
      client.connect({
        sock,
        username,
        authHandler: auth.authHandler,
        hostVerifier: hostVerifier as never,
        // No compression: a small zlib packet can inflate a thousandfold, and kay's traffic is small.
        algorithms: { ...hostKeyAlgorithms(preferredHostKeys), compress: ['none'] },
        readyTimeout: 0, // the actor's own deadline covers TCP + kex + auth as a whole
        keepaliveInterval: 0, // ssh2's keepalive is replaced by the idle-only probe below
      })
    } catch (err) {
      this.#dialFailed(gen, new ConnectError(`${this.id}: ${errMessage(err)}`, { host: this.id, cause: err }), 'failed')
    }
  }

  #releaseSlot(outcome: DialOutcome): void {
    const slot = this.#slot
    this.#slot = undefined
    slot?.release(outcome)
  }

  #dialFailed(gen: number, err: KayError, outcome: DialOutcome): void {
    if (gen !== this.#connGen) return
    this.#connGen++ // late events of this attempt are ignored from now on
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#releaseSlot(outcome)
    this.#destroyClient()
    this.#lastError = err
    if (this.#state === 'closed') return
    if (HOST_KEY_ERROR_CODES.has(err.code)) {
      // Quarantine: a changed key (or a refused certificate) is a hard refusal; only an operator gets it out.
      this.#nextRetryAt = undefined
      this.#setState('quarantined')
      return
    }
    this.#scheduleRedial(err.code === 'KAY_AUTH_FAILED')
  }

  #lost(err: KayError): void {
    const stable = this.#readySince !== undefined && this.#clock.now() - this.#readySince >= this.#backoff.stableAfterMs
    if (stable) this.#attempts = 0
    this.#readySince = undefined
    this.#connGen++
    this.#lastError = err
    this.#stopKeepalive()
    this.#failAll(err)
    // Channels of a dead connection will not close by themselves: drop their stop timers.
    for (const s of this.#stopping.values()) s.kill()
    this.#stopping.clear()
    this.#destroyClient()
    this.#scheduleRedial(false)
  }

  #scheduleRedial(slow: boolean): void {
    // Auth failures will not fix themselves in a second: wait a cap-sized window (never hammer: PerSourcePenalties).
    const delay = slow
      ? Math.floor(this.#backoff.capMs / 2 + (this.#random() * this.#backoff.capMs) / 2)
      : backoffDelay(this.#attempts, this.#backoff, this.#random)
    this.#attempts++
    this.#nextRetryAt = this.#clock.now() + delay
    this.#setState('backoff')
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined
      if (this.#state === 'backoff') void this.#dial()
    }, delay)
  }

  /**
   * Redial now if backing off: the path to the host is known to be back (its ProxyJump hop just became ready), so
   * the wait for an outage of unknown length no longer applies. The attempt goes through the dial gate as any other.
   */
  retryNow(): void {
    if (this.#state !== 'backoff') return
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#attempts = 0
    this.#nextRetryAt = undefined
    void this.#dial()
  }

  #destroyClient(): void {
    const c = this.#client
    const sock = this.#sock
    this.#client = undefined
    this.#sock = undefined
    if (c) {
      c.removeAllListeners('ready')
      c.on('error', () => {})
    }
    sock?.destroy()
  }

  #setState(state: ActorState): void {
    this.#state = state
    this.emit('state', this.status())
  }

  // -------------------------------------------------------------------------------------------- keepalive

  /**
   * The check falls on the next whole second after the interval (a tenth of the interval, in 100 ms steps, if that is
   * shorter; exactly on the interval below 1 s): hosts armed within the same second share one wake-up of their
   * thread, so a shard's keepalives cost at most one wake-up per second, not one per host per interval (traffic
   * re-arms the check: with ticks shorter than the interval, these checks were most of a steady host's wake-ups
   * between ticks).
   */
  #armKeepalive(): void {
    if (this.#keepaliveIntervalMs <= 0) return
    this.#rxSeen = this.#rxCount
    const now = this.#clock.now()
    const grid = Math.max(1, Math.min(KEEPALIVE_GRID_MS, Math.floor(this.#keepaliveIntervalMs / 1000) * 100))
    const at = Math.ceil((now + this.#keepaliveIntervalMs) / grid) * grid
    this.#kaTimer = this.#clock.setTimeout(this.#onKeepalive, at - now)
  }

  #keepaliveTick(): void {
    this.#kaTimer = undefined
    if (this.#state !== 'ready') return
    if (this.#rxCount !== this.#rxSeen) {
      // Traffic arrived during the interval: proof of life, no probe needed.
      this.#armKeepalive()
      return
    }
    this.#probe()
  }

  /**
   * A caller saw the connection go quiet when it expected an answer (e.g. a collection frame did not arrive): probe
   * now instead of waiting out the idle interval, so a half-open path is found within the probe deadline.
   * No-op unless ready, keepalive is on, and no probe is already in flight.
   */
  suspect(): void {
    if (this.#state !== 'ready' || this.#keepaliveIntervalMs <= 0 || this.#probeTimer !== undefined) return
    this.#clock.clearTimeout(this.#kaTimer)
    this.#kaTimer = undefined
    this.#probe()
  }

  #probe(): void {
    const client = this.#client
    if (!client) return
    const gen = this.#connGen
    const sent = this.#clock.now()
    const onReply = () => {
      if (gen !== this.#connGen || this.#probeTimer === undefined) return
      this.#clock.clearTimeout(this.#probeTimer)
      this.#probeTimer = undefined
      this.#rttMs = this.#clock.now() - sent
      this.#armKeepalive()
    }
    this.#probeTimer = this.#clock.setTimeout(() => {
      this.#probeTimer = undefined
      if (gen !== this.#connGen || this.#state !== 'ready') return
      this.#lost(
        new KeepaliveTimeoutError(`${this.id}: keepalive probe not answered within ${this.#probeDeadlineMs} ms`, {
          host: this.id,
        }),
      )
    }, this.#probeDeadlineMs)
    sendProbe(client, onReply)
  }

  #stopKeepalive(): void {
    this.#clock.clearTimeout(this.#kaTimer)
    this.#clock.clearTimeout(this.#probeTimer)
    this.#kaTimer = undefined
    this.#probeTimer = undefined
  }

  // ---------------------------------------------------------------------------------------------- channels

  /**
   * Reserve one channel slot for the life of a long-lived channel (the collection stream); returns false if
   * that would leave no slot for ordinary runs.
   */
  reserveChannel(): boolean {
    if (this.#reservedChannels + 1 >= this.#maxChannels) return false
    this.#reservedChannels++
    return true
  }

  releaseReservedChannel(): void {
    if (this.#reservedChannels > 0) this.#reservedChannels--
    this.#pump()
  }

  #acquireChannel(signal: AbortSignal | undefined): Promise<void> {
    if (this.#channelsInUse + this.#reservedChannels < this.#maxChannels && this.#waiters.length === 0) {
      this.#channelsInUse++
      return Promise.resolve()
    }
    if (this.#waiters.length >= this.#maxQueued) {
      return Promise.reject(
        new QueueFullError(`${this.id}: ${this.#maxQueued} runs already waiting for a channel`, { host: this.id }),
      )
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = { resolve, reject }
      const onAbort = () => {
        const i = this.#waiters.indexOf(w)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(new AbortedError(`${this.id}: aborted while waiting for a channel`, { host: this.id }))
      }
      if (signal) {
        signal.addEventListener('abort', onAbort, { once: true })
        w.resolve = () => {
          signal.removeEventListener('abort', onAbort)
          resolve()
        }
      }
      this.#waiters.push(w)
    })
  }

  #releaseChannel(): void {
    this.#channelsInUse--
    this.#pump()
  }

  #pump(): void {
    while (this.#waiters.length > 0 && this.#channelsInUse + this.#reservedChannels < this.#maxChannels) {
      this.#channelsInUse++
      this.#waiters.shift()!.resolve()
    }
  }

  /**
   * Open an exec channel on the pooled connection, retrying briefly on reason-2 refusals (sshd frees a
   * MaxSessions slot only after reaping the child). Does not take a channel slot: callers do. `setup` runs
   * synchronously when the channel opens, before any of its data, exit or close events can be emitted (ssh2 may
   * parse the open confirmation, the output and the close from one TCP chunk).
   */
  openExec(command: string, setup?: (channel: ClientChannel) => void): Promise<ClientChannel> {
    const client = this.#client
    if (this.#state !== 'ready' || !client) return Promise.reject(this.notReady())
    const gen = this.#connGen
    return new Promise((resolve, reject) => {
      const attempt = (n: number) => {
        if (gen !== this.#connGen || !this.#client) {
          reject(this.#unavailable())
          return
        }
        try {
          client.exec(command, (err, channel) => {
            if (!err) {
              setup?.(channel)
              resolve(channel)
              return
            }
            const reason = (err as Error & { reason?: number }).reason
            if (reason === OPEN_CONNECT_FAILED && n < CHANNEL_RETRY_DELAYS_MS.length) {
              this.#clock.setTimeout(() => attempt(n + 1), CHANNEL_RETRY_DELAYS_MS[n]!)
              return
            }
            if (gen !== this.#connGen) {
              reject(this.#unavailable())
              return
            }
            reject(
              new ChannelOpenError(`${this.id}: channel open failed: ${err.message}`, {
                host: this.id,
                details: { reason: reason ?? null },
              }),
            )
          })
        } catch {
          reject(this.#unavailable())
        }
      }
      attempt(0)
    })
  }

  /** Forward a TCP connection through this host (ProxyJump): the returned channel carries the next hop's SSH. */
  forwardOut(hostname: string, port: number): Promise<Duplex> {
    const client = this.#client
    if (this.#state !== 'ready' || !client) return Promise.reject(this.notReady())
    return new Promise((resolve, reject) => {
      client.forwardOut('127.0.0.1', 0, hostname, port, (err, ch) => {
        if (err) reject(new ConnectError(`${this.id}: jump to ${hostname}:${port} failed: ${err.message}`))
        else resolve(ch)
      })
    })
  }

  /**
   * Run one command on a new channel of the existing connection. Rejects at once with KAY_NOT_READY when the
   * connection is not ready (never waits for a dial).
   *
   * A command stopped early (deadline, output cap, abort, close) is sent TERM at once (OpenSSH delivers it to the
   * command's whole process group); if its channel has not closed after {@link STOP_GRACE_MS} it gets KILL and the
   * channel is closed, so nothing kay started keeps running on the host.
   */
  run(command: string, opts: RunOptions = {}): Promise<RunResult> {
    if (this.#state !== 'ready') return Promise.reject(this.notReady())
    const timeoutMs = opts.timeoutMs ?? this.#opts.defaultTimeoutMs ?? 30_000
    const maxOutput = opts.maxOutputBytes ?? this.#opts.defaultMaxOutputBytes ?? 1024 * 1024
    const signal = opts.signal
    const onOutput = opts.onOutput
    if (signal?.aborted) return Promise.reject(new AbortedError(`${this.id}: aborted`, { host: this.id }))
    const started = this.#clock.now()
    const gen = this.#connGen

    return new Promise<RunResult>((resolve, reject) => {
      let settled = false
      let channel: ClientChannel | undefined
      let channelClosed = false
      let holdsSlot = false
      const queueAbort = new AbortController()
      const releaseSlot = () => {
        if (!holdsSlot) return
        holdsSlot = false
        // A connection lost since the slot was taken already reset the count (#failAll).
        if (gen === this.#connGen) this.#releaseChannel()
      }
      const finish = (err: KayError | undefined, result?: RunResult) => {
        if (settled) return
        settled = true
        this.#clock.clearTimeout(deadline)
        signal?.removeEventListener('abort', onAbort)
        this.#inflight.delete(onConnLoss)
        queueAbort.abort()
        if (channel) {
          channel.removeAllListeners('data')
          channel.stderr.removeAllListeners('data')
          // Closing a channel is asynchronous: sshd frees the session only after the close exchange, so the slot is
          // given back when the channel has closed (or at once if it never opened).
          if (err && !channelClosed) {
            channel.once('close', releaseSlot)
            this.#stopChannel(channel)
          } else releaseSlot()
        } else releaseSlot()
        if (err) reject(err)
        else resolve(result!)
      }
      const onConnLoss = (err: KayError) => finish(err)
      const onAbort = () => finish(new AbortedError(`${this.id}: aborted`, { host: this.id }))
      const deadline = this.#clock.setTimeout(
        () => finish(new TimeoutError(`${this.id}: command timed out after ${timeoutMs} ms`, { host: this.id })),
        timeoutMs,
      )
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#inflight.add(onConnLoss)

      const out: Buffer[] = []
      const errOut: Buffer[] = []
      let bytes = 0
      let exitCode: number | null = null
      let exitSignal: string | null = null
      const onData = (stream: 'stdout' | 'stderr', into: Buffer[]) => (chunk: Buffer) => {
        if (settled) return
        const room = maxOutput - bytes
        bytes += chunk.length
        // What fits under the cap is kept (and shown), so a command stopped at the cap has printed that much.
        const kept = chunk.length > room ? chunk.subarray(0, Math.max(0, room)) : chunk
        if (kept.length > 0) {
          if (onOutput) onOutput(stream, kept)
          else into.push(kept)
        }
        if (bytes > maxOutput) {
          finish(
            new OutputLimitError(`${this.id}: output exceeded ${maxOutput} bytes`, {
              host: this.id,
              details: { maxOutputBytes: maxOutput },
            }),
          )
        }
      }
      const setup = (ch: ClientChannel) => {
        channel = ch
        ch.once('close', () => {
          channelClosed = true
        })
        if (settled) {
          this.#stopChannel(ch)
          return
        }
        ch.on('data', onData('stdout', out))
        ch.stderr.on('data', onData('stderr', errOut))
        ch.on('exit', (code: number | null, sig?: string) => {
          if (typeof code === 'number') exitCode = code
          if (sig) exitSignal = sig
        })
        ch.on('close', () => {
          releaseSlot()
          finish(undefined, {
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(errOut).toString('utf8'),
            exitCode,
            signal: exitSignal,
            durationMs: this.#clock.now() - started,
          })
        })
        // Send stdin then EOF. The channel stays open for signals (see signalChannel).
        if (opts.stdin !== undefined) ch.end(opts.stdin)
        else ch.end()
      }

      this.#acquireChannel(queueAbort.signal)
        .then(() => {
          holdsSlot = true
          if (settled) {
            releaseSlot()
            return undefined
          }
          return this.openExec(command, setup)
        })
        .then(undefined, (err: unknown) => finish(err instanceof KayError ? err : this.notReady()))
    })
  }

  /**
   * Stop a channel whose command must not go on: TERM now; KILL and close if it has not closed within the grace.
   * Tracked in #stopping until it closes, so close() and killStopping() can finish the job.
   */
  #stopChannel(channel: ClientChannel): void {
    if (this.#stopping.has(channel)) return
    signalChannel(channel, 'TERM')
    let timer: TimerHandle | undefined
    const kill = () => {
      this.#clock.clearTimeout(timer)
      timer = undefined
      signalChannel(channel, 'KILL')
      try {
        channel.close()
      } catch {
        // already closing
      }
    }
    const closed = new Promise<void>((resolve) => {
      channel.once('close', () => {
        this.#clock.clearTimeout(timer)
        this.#stopping.delete(channel)
        resolve()
      })
    })
    this.#stopping.set(channel, { kill, closed })
    timer = this.#clock.setTimeout(kill, STOP_GRACE_MS)
  }

  /** KILL every command that was told to stop (TERM) and has not exited yet, and close its channel, now. */
  killStopping(): void {
    for (const s of this.#stopping.values()) s.kill()
  }

  /** Resolves when every command told to stop has closed its channel (at the latest after the grace and KILL). */
  stopped(): Promise<void> {
    return Promise.all([...this.#stopping.values()].map((s) => s.closed)).then(() => undefined)
  }

  /**
   * Open an SFTP session on the pooled connection (one channel slot, queued like a run), run `fn` with it, then
   * close it. Rejects at once with KAY_NOT_READY while not connected. The deadline and the signal cover the wait
   * for a slot and `fn`: past them the session is closed (failing `fn`'s pending requests) and the call rejects.
   */
  withSftp<T>(fn: (sftp: SFTPWrapper) => Promise<T>, opts: SftpOptions = {}): Promise<T> {
    if (this.#state !== 'ready') return Promise.reject(this.notReady())
    const timeoutMs = opts.timeoutMs ?? this.#opts.defaultTimeoutMs ?? 30_000
    const signal = opts.signal
    if (signal?.aborted) return Promise.reject(new AbortedError(`${this.id}: aborted`, { host: this.id }))
    const gen = this.#connGen
    return new Promise<T>((resolve, reject) => {
      let settled = false
      let holdsSlot = false
      let session: SFTPWrapper | undefined
      const queueAbort = new AbortController()
      const release = () => {
        if (!holdsSlot) return
        holdsSlot = false
        if (gen === this.#connGen) this.#releaseChannel()
      }
      const finish = (err: unknown, value?: T) => {
        if (settled) return
        settled = true
        this.#clock.clearTimeout(deadline)
        signal?.removeEventListener('abort', onAbort)
        this.#inflight.delete(onConnLoss)
        queueAbort.abort()
        if (session) {
          const s = session
          s.once('close', release)
          try {
            s.end()
          } catch {
            release()
          }
        } else release()
        if (err === undefined) resolve(value as T)
        else reject(err instanceof KayError ? err : new InternalError(errMessage(err), { host: this.id, cause: err }))
      }
      const onConnLoss = (err: KayError) => finish(err)
      const onAbort = () => finish(new AbortedError(`${this.id}: aborted`, { host: this.id }))
      const deadline = this.#clock.setTimeout(
        () => finish(new TimeoutError(`${this.id}: file transfer timed out after ${timeoutMs} ms`, { host: this.id })),
        timeoutMs,
      )
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#inflight.add(onConnLoss)
      this.#acquireChannel(queueAbort.signal)
        .then(() => {
          holdsSlot = true
          if (settled) {
            release()
            return
          }
          const client = this.#client
          if (this.#state !== 'ready' || !client || gen !== this.#connGen) {
            finish(this.#unavailable())
            return
          }
          client.sftp((err, s) => {
            if (err) {
              finish(
                new ChannelOpenError(`${this.id}: sftp session failed: ${err.message}`, {
                  host: this.id,
                  details: { reason: (err as Error & { reason?: number }).reason ?? null },
                }),
              )
              return
            }
            session = s
            if (settled) {
              s.once('close', release)
              s.end()
              return
            }
            s.on('error', () => {})
            fn(s).then(
              (v) => finish(undefined, v),
              (e: unknown) => finish(e ?? new InternalError('sftp operation failed', { host: this.id })),
            )
          })
        })
        .then(undefined, (err: unknown) => finish(err instanceof KayError ? err : this.notReady()))
    })
  }

  #failAll(err: KayError): void {
    for (const w of this.#waiters.splice(0)) w.reject(err)
    for (const fail of [...this.#inflight]) fail(err)
    this.#channelsInUse = 0
    this.#reservedChannels = 0
  }

  /**
   * Close the connection, reject queued and in-flight work with KAY_CLOSED, clear every timer. Commands still running
   * get TERM then KILL, and their channels close, so closing never leaves them behind (await {@link stopped} first
   * to give TERM its grace). Idempotent.
   */
  close(): Promise<void> {
    if (this.#state === 'closed') return Promise.resolve()
    this.#connGen++
    this.#dialAbort?.abort()
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#stopKeepalive()
    this.#releaseSlot('failed')
    this.#nextRetryAt = undefined
    this.#readySince = undefined
    this.#setState('closed')
    this.#failAll(new ClosedError(`${this.id}: closed`, { host: this.id }))
    const client = this.#client
    const sock = this.#sock
    this.#client = undefined
    this.#sock = undefined
    if (!client) return Promise.resolve()
    // Commands told to stop (TERM) that are still running get KILL now: closing never leaves them behind. A caller
    // that can wait gives them the grace first (stopped()).
    this.killStopping()
    this.#stopping.clear()
    return new Promise((resolve) => {
      client.removeAllListeners('ready')
      client.on('error', () => {})
      client.once('close', () => resolve())
      client.end()
      // If the peer does not answer the disconnect promptly, destroy the transport (ssh2's own destroy() does
      // nothing to a stream it has ended, and a peer that never closes would keep it half-open).
      const t = this.#clock.setTimeout(() => {
        sock?.destroy()
        resolve()
      }, 1000)
      client.once('close', () => this.#clock.clearTimeout(t))
    })
  }
}

// ------------------------------------------------------------------------------------------------ helpers

/** Writes queued in a stream and not yet handed to the OS (Node's own bookkeeping; 0 where it is not kept so). */
function queuedWrites(sock: Duplex): number {
  const st = (sock as unknown as { _writableState?: { buffered?: unknown[]; bufferedIndex?: number } })._writableState
  return Array.isArray(st?.buffered) ? st.buffered.length - (st.bufferedIndex ?? 0) : 0
}

const SSH_DASH = [83, 83, 72, 45] // 'SSH-'
const LF = 10

/**
 * Follows the bytes a server sends until a line starting `SSH-` (the version line), counting the bytes before it.
 * This listener runs before ssh2's own, so a greeting past the cap never reaches ssh2's parser.
 */
class GreetingScan {
  /** 0–3: bytes of `SSH-` matched at the start of the current line; -1: inside another line; 4: found. */
  #matched = 0
  #bytes = 0

  /** Feeds one chunk; false once more than MAX_GREETING_BYTES came before the version line. */
  feed(chunk: Buffer): boolean {
    for (let i = 0; i < chunk.length && this.#matched < 4; i++) {
      const c = chunk[i]!
      if (this.#matched >= 0 && c === SSH_DASH[this.#matched]) this.#matched++
      else this.#matched = c === LF ? 0 : -1
      if (this.#matched < 4 && ++this.#bytes > MAX_GREETING_BYTES) return false
    }
    return true
  }
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/**
 * Send a `signal` channel request. ssh2's `channel.signal()` refuses once our side sent EOF (it checks
 * `writable`), but the channel is still open and RFC 4254 §6.9 allows the request: send it directly.
 */
function signalChannel(channel: ClientChannel, name: string): void {
  const ch = channel as unknown as {
    outgoing?: { id: number; state: string }
    _client?: { _protocol?: { signal?: (id: number, name: string) => void } }
  }
  try {
    const st = ch.outgoing?.state
    if ((st === 'open' || st === 'eof') && ch._client?._protocol?.signal)
      ch._client._protocol.signal(ch.outgoing!.id, name)
    else channel.signal(name)
  } catch {
    // the channel is already closing: nothing to signal
  }
}

/** A want-reply global request (`keepalive@openssh.com`); any reply, success or failure, proves liveness. */
function sendProbe(client: Client, onReply: () => void): void {
  const internal = client as unknown as { _protocol?: { ping?: () => void }; _callbacks?: Array<() => void> }
  if (internal._protocol?.ping && Array.isArray(internal._callbacks)) {
    // ssh2's own keepalive path: replies to global requests are matched in order through _callbacks.
    internal._callbacks.push(onReply)
    internal._protocol.ping()
    return
  }
  // Public fallback: cancel a forward that does not exist; the failure reply proves liveness.
  client.unforwardIn('kay-probe.invalid', 1, () => onReply())
}

const PRESSURE_CODES = new Set(['ECONNRESET', 'EPIPE'])

function isPressure(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const code = (err as NodeJS.ErrnoException).code
  if (code && PRESSURE_CODES.has(code)) return true
  return /before handshake|Connection lost|ECONNRESET|socket hang up/i.test(err.message)
}

function connectOutcome(err: unknown): DialOutcome {
  return isPressure(err) ? 'pressure' : 'failed'
}

/** A failed name lookup, named for the host (its alias may differ from the name looked up). */
function resolveFailure(host: string, err: unknown): KayError {
  const e = err instanceof KayError ? err : undefined
  const message = e?.message ?? errMessage(err)
  return new ResolveError(message.startsWith(`${host}:`) ? message : `${host}: ${message}`, {
    host,
    cause: err,
    details: e?.details,
  })
}

function classifyConnectError(host: string, err: unknown): KayError {
  if (err instanceof KayError) return err
  const code = (err as NodeJS.ErrnoException)?.code
  return new ConnectError(`${host}: connect failed: ${errMessage(err)}`, {
    host,
    cause: err,
    details: code ? { errno: code } : undefined,
  })
}

/**
 * Whether an ssh2 'error' ends the connection. ssh2 reports a failing agent or key signature and goes on with the
 * next key; everything else it emits (a parse error, a fatal protocol error, a socket error, auth exhausted, a
 * DISCONNECT) is the end of the connection.
 */
function isFatal(err: unknown): boolean {
  const level = (err as { level?: string } | undefined)?.level
  if (level === 'agent') return false
  return !(level === 'client-authentication' && /^Error signing data with key/.test(errMessage(err)))
}

/**
 * A protocol violation by the peer: what ssh2's parser throws (no level: bad packet length, bad MAC, garbage version
 * exchange) or reports as a fatal protocol/handshake error (a malformed packet, a bad host-key signature) — but not a
 * connection that closed before the banner (pressure), a key exchange with no algorithm in common (a config
 * mismatch), a host key kay refused (the trust error says why), or a DISCONNECT the peer sent (numeric code).
 */
function protocolViolation(host: string, err: unknown): KayError | undefined {
  if (!(err instanceof Error) || err instanceof KayError) return undefined
  const e = err as Error & { level?: string; code?: unknown }
  if (typeof e.code === 'number' || typeof e.code === 'string') return undefined
  if (e.level !== undefined && e.level !== 'protocol' && e.level !== 'handshake') return undefined
  if (/before handshake|^Handshake failed: no matching|^Host denied/.test(e.message)) return undefined
  return new ProtocolError(`${host}: protocol error: ${e.message}`, {
    host,
    cause: err,
    details: e.level ? { level: e.level } : undefined,
  })
}

/** Why an established connection ended on an ssh2 error: a protocol violation, or a plain loss. */
function classifyLostError(host: string, err: unknown): KayError {
  return (
    protocolViolation(host, err) ??
    new ConnectionLostError(`${host}: connection lost: ${errMessage(err)}`, { host, cause: err })
  )
}

function classifyHandshakeError(
  target: HostTarget,
  err: unknown,
  verdict: HostKeyVerdict | undefined,
  auth: AuthState,
): KayError {
  if (err instanceof KayError) return err
  const host = target.id
  // The host-key verdict, if it refused, is the cause (the trust layer words it, with the repin hint).
  const refused = verdict && verdictError(target, verdict)
  if (refused) return refused
  const level = (err as { level?: string } | undefined)?.level
  if (level === 'client-authentication') return auth.toError(host)
  const violation = protocolViolation(host, err)
  if (violation) return violation
  return new ConnectError(`${host}: handshake failed: ${err === undefined ? 'connection closed' : errMessage(err)}`, {
    host,
    cause: err,
    details: level ? { level } : undefined,
  })
}

/** An error message without its leading `host: ` (the refusal that quotes it names the host already). */
function withoutHost(message: string, host: string): string {
  return message.startsWith(`${host}: `) ? message.slice(host.length + 2) : message
}
