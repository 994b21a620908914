import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Client, type ClientChannel, type ServerHostKeyAlgorithm } from 'ssh2'
// ssh2 has no exports map: its algorithm tables are reachable, and the defaults must not be duplicated here.
import ssh2Constants from 'ssh2/lib/protocol/constants.js'
import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import {
  AbortedError,
  ChannelOpenError,
  ClosedError,
  ConnectError,
  ConnectionLostError,
  HandshakeTimeoutError,
  KayError,
  KeepaliveTimeoutError,
  NotReadyError,
  OutputLimitError,
  QueueFullError,
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

export interface HostActorOptions {
  target: HostTarget
  /** Keys (and agent) for public-key auth; a promise when they are still being loaded (per-host IdentityFile). */
  identity: Identity | Promise<Identity>
  /** Decides on the host key. Required: kay never accepts any host key by default. */
  verifier: HostKeyVerifier
  /** Admission control for dials; held from TCP connect until ready or failed. */
  dialGate: DialGate
  connector?: Connector
  clock?: Clock
  random?: () => number
  backoff?: Partial<BackoffOptions>
  /** TCP connect + key exchange + auth, as a whole, ms. Default 10000 (or the target's ConnectTimeout). */
  handshakeTimeoutMs?: number
  /** Probe when nothing was received for this long, ms. Default 15000. 0 disables keepalive. */
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
  stdin?: string | Buffer
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
  #probeTimer: TimerHandle | undefined
  #rxCount = 0
  #rxSeen = 0
  #channelsInUse = 0
  #reservedChannels = 0
  readonly #waiters: Waiter[] = []
  readonly #inflight = new Set<(err: KayError) => void>()
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
    if (this.#lastError) details.lastError = this.#lastError.code
    if (this.#state === 'closed') return new ClosedError(`${this.id}: actor closed`, { host: this.id, details })
    return new NotReadyError(`${this.id}: not ready (${this.#state})`, { host: this.id, details })
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
    let slot: DialSlot
    try {
      slot = await this.#opts.dialGate.acquire(abort.signal)
    } catch (err) {
      if (gen !== this.#connGen || this.#state === 'closed') return
      this.#dialFailed(gen, err instanceof KayError ? err : new ConnectError(String(err), { host: this.id }), 'failed')
      return
    }
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
      sock = await this.#connector(this.target)
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

    // ssh2 may emit several 'error' events for one failure (readyTimeout emits two): keep a permanent listener.
    client.on('error', (err) => {
      if (firstError === undefined) firstError = err
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
        const outcome: DialOutcome = !sawBanner && isPressure(firstError) ? 'pressure' : 'failed'
        this.#dialFailed(gen, err, outcome)
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
    sock.on('data', () => {
      this.#rxCount++
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
        ...hostKeyAlgorithms(preferredHostKeys),
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
    if (
      err.code === 'KAY_HOST_KEY_MISMATCH' ||
      err.code === 'KAY_HOST_KEY_REVOKED' ||
      err.code === 'KAY_HOST_KEY_UNKNOWN'
    ) {
      // Quarantine: a changed key is a hard refusal; only an operator (kay trust repin) gets it out.
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

  #armKeepalive(): void {
    if (this.#keepaliveIntervalMs <= 0) return
    this.#rxSeen = this.#rxCount
    this.#kaTimer = this.#clock.setTimeout(() => this.#keepaliveTick(), this.#keepaliveIntervalMs)
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
   */
  run(command: string, opts: RunOptions = {}): Promise<RunResult> {
    if (this.#state !== 'ready') return Promise.reject(this.notReady())
    const timeoutMs = opts.timeoutMs ?? this.#opts.defaultTimeoutMs ?? 30_000
    const maxOutput = opts.maxOutputBytes ?? this.#opts.defaultMaxOutputBytes ?? 1024 * 1024
    const signal = opts.signal
    if (signal?.aborted) return Promise.reject(new AbortedError(`${this.id}: aborted`, { host: this.id }))
    const started = this.#clock.now()

    return new Promise<RunResult>((resolve, reject) => {
      let settled = false
      let channel: ClientChannel | undefined
      let holdsSlot = false
      const queueAbort = new AbortController()
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
          if (err) {
            // Ask the remote process to stop where the server allows it, then close the channel.
            signalChannel(channel, 'TERM')
            try {
              channel.close()
            } catch {}
          }
        }
        if (holdsSlot) {
          holdsSlot = false
          // Closing a channel is asynchronous: sshd frees the session only after the close exchange, so the slot
          // is given back when the channel has closed (or at once if it never opened).
          if (channel && err) channel.once('close', () => this.#releaseChannel())
          else this.#releaseChannel()
        }
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
      const onData = (into: Buffer[]) => (chunk: Buffer) => {
        if (settled) return
        bytes += chunk.length
        if (bytes > maxOutput) {
          finish(
            new OutputLimitError(`${this.id}: output exceeded ${maxOutput} bytes`, {
              host: this.id,
              details: { maxOutputBytes: maxOutput },
            }),
          )
          return
        }
        into.push(chunk)
      }
      const setup = (ch: ClientChannel) => {
        channel = ch
        if (settled) {
          ch.close()
          return
        }
        ch.on('data', onData(out))
        ch.stderr.on('data', onData(errOut))
        ch.on('exit', (code: number | null, sig?: string) => {
          if (typeof code === 'number') exitCode = code
          if (sig) exitSignal = sig
        })
        ch.on('close', () => {
          if (holdsSlot) {
            holdsSlot = false
            this.#releaseChannel()
          }
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
            holdsSlot = false
            this.#releaseChannel()
            return undefined
          }
          return this.openExec(command, setup)
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

  /** Close the connection, reject queued and in-flight work with KAY_CLOSED, clear every timer. Idempotent. */
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

/** Known key types first (in their order), then ssh2's defaults; types ssh2 cannot verify are left out. */
function hostKeyAlgorithms(preferred: string[]): { algorithms?: { serverHostKey: ServerHostKeyAlgorithm[] } } {
  const supported = ssh2Constants.SUPPORTED_SERVER_HOST_KEY
  const first = preferred.filter((a) => supported.includes(a))
  if (first.length === 0) return {}
  const rest = ssh2Constants.DEFAULT_SERVER_HOST_KEY.filter((a) => !first.includes(a))
  return { algorithms: { serverHostKey: [...first, ...rest] as ServerHostKeyAlgorithm[] } }
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

function classifyConnectError(host: string, err: unknown): KayError {
  if (err instanceof KayError) return err
  const code = (err as NodeJS.ErrnoException)?.code
  return new ConnectError(`${host}: connect failed: ${errMessage(err)}`, {
    host,
    cause: err,
    details: code ? { errno: code } : undefined,
  })
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
  return new ConnectError(`${host}: handshake failed: ${err === undefined ? 'connection closed' : errMessage(err)}`, {
    host,
    cause: err,
    details: level ? { level } : undefined,
  })
}
