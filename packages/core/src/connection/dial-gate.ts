import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import { AbortedError, QueueFullError } from '../errors.js'

/**
 * How a dial ended, reported when its slot is released. The pushback governor (workers) lowers the
 * fleet-wide dial concurrency on `pressure` (connection closed or reset before the SSH banner or during
 * key exchange: MaxStartups / PerSourcePenalties style) and raises it slowly on `ok`.
 */
export type DialOutcome = 'ok' | 'pressure' | 'failed'

/** A held dial slot. `release` is idempotent: only the first call counts. */
export interface DialSlot {
  release(outcome: DialOutcome): void
}

export interface DialGateStats {
  /** Dials in flight (slots held) right now. */
  inFlight: number
  /** The configured cap. */
  cap: number
  /** The effective cap right now (the governor may hold it below `cap`). */
  effectiveCap: number
  /** Dials waiting for a slot. */
  waiting: number
}

/**
 * Admission control for dials (TCP connect + key exchange + auth). A slot is held from TCP connect
 * until the connection is ready or failed, and released exactly once on every path.
 */
export interface DialGate {
  /** A slot now, or null if none is free. Never waits. */
  tryAcquire(): DialSlot | null
  /** A slot when one is free, in FIFO order. Rejects with KAY_ABORTED if `signal` fires first. */
  acquire(signal?: AbortSignal): Promise<DialSlot>
  stats(): DialGateStats
}

export interface LocalDialGateOptions {
  /** Maximum dials in flight. Default 16. Must be >= 1. */
  cap?: number
  /** Maximum dials waiting for a slot. Default 100_000. */
  maxWaiting?: number
}

/**
 * A dial waiting in a gate's queue for a slot. If its AbortSignal fires while it waits, `dequeue` takes it out of
 * the queue and, if it was still there, it is rejected with KAY_ABORTED. A gate that serves or rejects it otherwise
 * calls `detach()` first, so the signal no longer refers to it. Every gate's waiters are these.
 */
export class SlotWaiter {
  readonly signal: AbortSignal | undefined
  readonly resolve: (s: DialSlot) => void
  readonly reject: (e: Error) => void
  readonly #onAbort: (() => void) | undefined

  constructor(
    resolve: (s: DialSlot) => void,
    reject: (e: Error) => void,
    signal: AbortSignal | undefined,
    dequeue: (w: SlotWaiter) => boolean,
  ) {
    this.resolve = resolve
    this.reject = reject
    this.signal = signal
    if (signal) {
      this.#onAbort = () => {
        if (dequeue(this)) reject(new AbortedError('dial wait aborted'))
      }
      signal.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  /** Stop listening to the signal: the gate is serving or rejecting this waiter itself. */
  detach(): void {
    if (this.signal && this.#onAbort) this.signal.removeEventListener('abort', this.#onAbort)
  }
}

/** Removes `w` from an array queue; false if it was no longer there. */
function removeFrom(queue: SlotWaiter[], w: SlotWaiter): boolean {
  const i = queue.indexOf(w)
  if (i < 0) return false
  queue.splice(i, 1)
  return true
}

/** The in-process gate: a counter and a FIFO of waiters. One thread only (workers ships the shared one). */
export class LocalDialGate implements DialGate {
  readonly cap: number
  readonly #maxWaiting: number
  #inFlight = 0
  readonly #waiters: SlotWaiter[] = []

  constructor(opts: LocalDialGateOptions = {}) {
    const cap = opts.cap ?? 16
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError(`dial cap must be an integer >= 1, got ${cap}`)
    this.cap = cap
    this.#maxWaiting = opts.maxWaiting ?? 100_000
  }

  tryAcquire(): DialSlot | null {
    if (this.#inFlight >= this.cap || this.#waiters.length > 0) return null
    this.#inFlight++
    return this.#slot()
  }

  acquire(signal?: AbortSignal): Promise<DialSlot> {
    if (signal?.aborted) return Promise.reject(new AbortedError('dial wait aborted'))
    const now = this.tryAcquire()
    if (now) return Promise.resolve(now)
    if (this.#waiters.length >= this.#maxWaiting) {
      return Promise.reject(new QueueFullError(`dial queue full (${this.#maxWaiting} waiting)`))
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push(new SlotWaiter(resolve, reject, signal, (w) => removeFrom(this.#waiters, w)))
    })
  }

  stats(): DialGateStats {
    return { inFlight: this.#inFlight, cap: this.cap, effectiveCap: this.cap, waiting: this.#waiters.length }
  }

  #slot(): DialSlot {
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.#inFlight--
        this.#wake()
      },
    }
  }

  #wake(): void {
    while (this.#inFlight < this.cap && this.#waiters.length > 0) {
      const w = this.#waiters.shift()!
      w.detach()
      this.#inFlight++
      w.resolve(this.#slot())
    }
  }
}

export interface RateLimitedDialGateOptions {
  /** Dial attempts allowed per second (a token bucket refilled continuously). Must be > 0. */
  ratePerSec: number
  /** Tokens the bucket holds: attempts allowed in a burst. Default: one second's worth (at least 1). */
  burst?: number
  clock?: Clock
  /** Dials waiting for a token; past it, KAY_QUEUE_FULL. Default 100_000. */
  maxWaiting?: number
}

/**
 * Caps the *rate* of dial attempts on top of another gate's cap on *concurrent* dials. The concurrency cap alone
 * does not stop a storm after a fleet-wide outage: refused connects free their slot in under a millisecond, so
 * 1,000 hosts redialing within their first backoff window hit the network at ~1,000 attempts/s. A token bucket
 * spreads them to `ratePerSec`. Waiters are served in order; a token is spent per attempt, before the slot is
 * taken from the inner gate.
 */
export class RateLimitedDialGate implements DialGate {
  readonly #inner: DialGate
  readonly #rate: number
  readonly #burst: number
  readonly #clock: Clock
  readonly #maxWaiting: number
  #tokens: number
  #last: number
  readonly #waiters: SlotWaiter[] = []
  #timer: TimerHandle | undefined

  constructor(inner: DialGate, opts: RateLimitedDialGateOptions) {
    if (!(opts.ratePerSec > 0) || !Number.isFinite(opts.ratePerSec)) {
      throw new RangeError(`dial rate must be a finite number > 0 per second, got ${opts.ratePerSec}`)
    }
    this.#inner = inner
    this.#rate = opts.ratePerSec
    this.#burst = Math.max(1, opts.burst ?? opts.ratePerSec)
    this.#clock = opts.clock ?? systemClock
    this.#maxWaiting = opts.maxWaiting ?? 100_000
    this.#tokens = this.#burst
    this.#last = this.#clock.now()
  }

  #refill(): void {
    const now = this.#clock.now()
    if (now > this.#last) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) * this.#rate) / 1000)
      this.#last = now
    }
  }

  tryAcquire(): DialSlot | null {
    if (this.#waiters.length > 0) return null
    this.#refill()
    if (this.#tokens < 1) return null
    const slot = this.#inner.tryAcquire()
    if (slot) this.#tokens -= 1
    return slot
  }

  acquire(signal?: AbortSignal): Promise<DialSlot> {
    if (signal?.aborted) return Promise.reject(new AbortedError('dial wait aborted'))
    if (this.#waiters.length >= this.#maxWaiting) {
      return Promise.reject(new QueueFullError(`dial queue full (${this.#maxWaiting} waiting for the dial rate)`))
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push(new SlotWaiter(resolve, reject, signal, (w) => removeFrom(this.#waiters, w)))
      this.#pump()
    })
  }

  /** Hand tokens to waiters in order; each then waits for an inner slot. Re-arms one timer for the next token. */
  #pump(): void {
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#refill()
    while (this.#waiters.length > 0 && this.#tokens >= 1) {
      const w = this.#waiters.shift()!
      w.detach()
      this.#tokens -= 1
      this.#inner.acquire(w.signal).then(w.resolve, w.reject)
    }
    if (this.#waiters.length > 0) {
      const waitMs = Math.max(1, Math.ceil(((1 - this.#tokens) * 1000) / this.#rate))
      this.#timer = this.#clock.setTimeout(() => this.#pump(), waitMs)
    }
  }

  stats(): DialGateStats {
    const s = this.#inner.stats()
    return { ...s, waiting: s.waiting + this.#waiters.length }
  }

  /** Reject queued dials, clear the refill timer, and close the inner gate if it can be closed (the wrapper owns it). */
  close(): void {
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    ;(this.#inner as DialGate & { close?: () => void }).close?.()
    for (const w of this.#waiters.splice(0)) {
      w.detach()
      w.reject(new AbortedError('dial gate closed'))
    }
  }
}
