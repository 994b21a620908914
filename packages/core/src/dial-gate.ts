import { AbortedError, QueueFullError } from './errors.js'

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

interface GateWaiter {
  resolve: (s: DialSlot) => void
  reject: (e: Error) => void
  signal?: AbortSignal
  onAbort?: () => void
}

/** The in-process gate: a counter and a FIFO of waiters. One thread only (workers ships the shared one). */
export class LocalDialGate implements DialGate {
  readonly cap: number
  readonly #maxWaiting: number
  #inFlight = 0
  readonly #waiters: GateWaiter[] = []

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
      const w: GateWaiter = { resolve, reject }
      if (signal) {
        w.signal = signal
        w.onAbort = () => {
          const i = this.#waiters.indexOf(w)
          if (i >= 0) this.#waiters.splice(i, 1)
          reject(new AbortedError('dial wait aborted'))
        }
        signal.addEventListener('abort', w.onAbort, { once: true })
      }
      this.#waiters.push(w)
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
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort)
      this.#inFlight++
      w.resolve(this.#slot())
    }
  }
}
