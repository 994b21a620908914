/**
 * The global dial cap (DESIGN invariant 5): at most `cap` dials (TCP connect + key exchange + auth) in
 * flight across every worker thread, enforced by an atomic counter in a SharedArrayBuffer, plus the
 * pushback governor that lowers the effective cap when servers push back (MaxStartups-style drops).
 * A second buffer of the same layout, governor off, bounds remote collection work the same way
 * (invariant 10: stream probes and exec collections; docs/adr/0008-cold-start-converges.md).
 *
 * One buffer is created by the supervisor ({@link SharedDialGate.createBuffer}) and handed to every shard;
 * each shard wraps it as `new SharedDialGate(buffer, shardIndex)`. The buffer is touched only through
 * `Atomics`, and every slot has a name (as piscina `src/symbols.ts` and thread-stream `lib/indexes.js` do).
 */
import type { DialGate, DialGateStats, DialOutcome, DialSlot } from '@kay/core'
import { AbortedError, ClosedError, ConfigError, QueueFullError } from '@kay/core'
import { SlotWaiter } from '@kay/core/internal'

// ---------------------------------------------------------------------------------------------------------
// Buffer layout. Int32 slots; the header is fixed, then HELD[maxShards], then WAITING[maxShards].
// ---------------------------------------------------------------------------------------------------------

/** Marks a buffer made by {@link SharedDialGate.createBuffer} (ASCII 'KAY1'); bump it when the layout changes. */
const LAYOUT_MAGIC = 0x4b415931
/** Slot: {@link LAYOUT_MAGIC}. */
const MAGIC = 0
/** Slot: the configured cap (never changes after creation). */
export const CAP = 1
/** Slot: the governor's current cap, 1..CAP. Equal to CAP when the governor is off. */
const EFFECTIVE_CAP = 2
/** Slot: dials in flight across all shards. Never above min(CAP, EFFECTIVE_CAP at acquire time). */
export const IN_FLIGHT = 3
/** Slot: bumped and notified on every release (and reclaim); waiters `Atomics.waitAsync` on it. */
const WAKE_SEQ = 4
/** Slot: 1 when the governor is on, 0 when off. */
const GOVERNOR = 5
/** Slot: 'ok' releases since the last change of EFFECTIVE_CAP or the last pressure event. */
const SUCCESS_STREAK = 6
/** Slot: bumped on each decrease; slots are stamped with it at acquire so stale pressure is ignored. */
const DECREASE_EPOCH = 7
/** Slot: releases with outcome 'pressure' (counted whether or not the governor is on). */
const PRESSURE_EVENTS = 8
/** Slot: how many times the governor halved EFFECTIVE_CAP. */
const DECREASES = 9
/** Slot: how many times the governor raised EFFECTIVE_CAP by one. */
const INCREASES = 10
/** Slot: the number of shard slots in HELD and WAITING. */
const MAX_SHARDS = 11
/** Header size in Int32 slots (room left for new fields without moving the per-shard arrays). */
const HEADER_FIELDS = 16

/** Index of HELD[shard]: slots currently held by that shard (what {@link SharedDialGate.reclaim} returns). */
export function heldIndex(shardIndex: number): number {
  return HEADER_FIELDS + shardIndex
}

/** Index of WAITING[shard]: that shard's local queue length, for the gauge only. */
function waitingIndex(shardIndex: number, maxShards: number): number {
  return HEADER_FIELDS + maxShards + shardIndex
}

const DEFAULT_CAP = 16
const DEFAULT_MAX_SHARDS = 256
const MAX_MAX_SHARDS = 65_536
const DEFAULT_MAX_WAITING = 100_000
const DEFAULT_POLL_MS = 100
// A CAS only fails when another thread changed IN_FLIGHT, so this bound is never reached in practice; it is
// here so that even a pathological livelock degrades to "no slot now" instead of spinning forever.
const MAX_CAS_ATTEMPTS = 10_000

// lib ES2023 has no Atomics.waitAsync typing (ES2024); Node 20 has the function.
type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> }
const waitAsync = (
  Atomics as unknown as {
    waitAsync(ta: Int32Array, index: number, value: number, timeoutMs: number): WaitAsyncResult
  }
).waitAsync

// ---------------------------------------------------------------------------------------------------------
// Options and snapshots
// ---------------------------------------------------------------------------------------------------------

export interface SharedDialGateBufferOptions {
  /** Maximum dials in flight across all shards. Default 16. Integer >= 1. */
  cap?: number
  /** Number of shard indexes the buffer has room for (0..maxShards-1). Default 256. */
  maxShards?: number
  /**
   * The pushback governor (AIMD). Default true. When on, a release with outcome 'pressure' halves the
   * effective cap (at most once per generation of dials), and `effectiveCap` consecutive 'ok' releases
   * raise it by one, never above `cap`. When off, the effective cap is always `cap`.
   */
  governor?: boolean
}

export interface SharedDialGateOptions {
  /** Maximum dials waiting for a slot in this shard. Default 100_000. Integer >= 0 (0: acquire never queues). */
  maxWaiting?: number
  /**
   * Milliseconds between re-checks while the queue head waits for a slot. Every release notifies waiters, so
   * this only bounds the cost of a lost wake-up (e.g. a reclaim racing a wait). Default 100. Integer >= 1.
   */
  pollMs?: number
  /** What the slots are for, in error messages: `dial` (default), or `work` for the remote-work gate. */
  what?: string
}

/** A plain snapshot of the whole buffer, for the supervisor's gauges. */
export interface SharedDialGateSnapshot extends DialGateStats {
  governor: boolean
  pressureEvents: number
  decreases: number
  increases: number
  /** Slots held per shard index (length maxShards). */
  heldByShard: number[]
  /** Queue length per shard index (length maxShards). */
  waitingByShard: number[]
}

function checkBuffer(buffer: SharedArrayBuffer): Int32Array {
  if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_FIELDS * 4) {
    throw new ConfigError('dial gate buffer must be a SharedArrayBuffer from SharedDialGate.createBuffer()')
  }
  const i32 = new Int32Array(buffer)
  const maxShards = Atomics.load(i32, MAX_SHARDS)
  if (Atomics.load(i32, MAGIC) !== LAYOUT_MAGIC || i32.length < HEADER_FIELDS + 2 * maxShards) {
    throw new ConfigError('dial gate buffer has an unknown layout (not made by SharedDialGate.createBuffer())')
  }
  return i32
}

function checkShardIndex(i32: Int32Array, shardIndex: number): void {
  const maxShards = Atomics.load(i32, MAX_SHARDS)
  if (!Number.isInteger(shardIndex) || shardIndex < 0 || shardIndex >= maxShards) {
    throw new ConfigError(`shard index must be an integer in 0..${maxShards - 1}, got ${shardIndex}`)
  }
}

function checkInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer in ${min}..${max}, got ${value}`)
  }
  return value
}

// ---------------------------------------------------------------------------------------------------------
// The gate
// ---------------------------------------------------------------------------------------------------------

/**
 * A {@link DialGate} whose counter is shared by all worker threads through a SharedArrayBuffer.
 *
 * - `tryAcquire()` is a lock-free CAS loop on IN_FLIGHT bounded by min(CAP, EFFECTIVE_CAP).
 * - `acquire()` is FIFO within this shard: a local queue whose head alone contends for the shared counter,
 *   waiting with `Atomics.waitAsync` on WAKE_SEQ (never `Atomics.wait`, which would freeze every actor in
 *   the thread). Across shards there is no ordering: whichever head wakes first takes a freed slot.
 * - Each shard's holdings are counted in HELD[shard], so the supervisor can {@link SharedDialGate.reclaim}
 *   them after the worker dies.
 */
export class SharedDialGate implements DialGate {
  /**
   * Allocate and initialise the shared state. Called once, by the supervisor; pass the buffer to every
   * shard (it survives `postMessage`/`workerData` by reference).
   */
  static createBuffer(opts: SharedDialGateBufferOptions = {}): SharedArrayBuffer {
    const cap = checkInt('dial cap', opts.cap ?? DEFAULT_CAP, 1, 0x3fffffff)
    const maxShards = checkInt('maxShards', opts.maxShards ?? DEFAULT_MAX_SHARDS, 1, MAX_MAX_SHARDS)
    const buffer = new SharedArrayBuffer((HEADER_FIELDS + 2 * maxShards) * 4)
    const i32 = new Int32Array(buffer)
    Atomics.store(i32, CAP, cap)
    Atomics.store(i32, EFFECTIVE_CAP, cap)
    Atomics.store(i32, GOVERNOR, opts.governor === false ? 0 : 1)
    Atomics.store(i32, MAX_SHARDS, maxShards)
    // Written last: a buffer with the magic is fully initialised.
    Atomics.store(i32, MAGIC, LAYOUT_MAGIC)
    return buffer
  }

  /**
   * Give back every slot held by a shard whose worker has exited, and wake waiters. Returns the number of
   * slots reclaimed.
   *
   * Call it only after the worker's `exit` event: a live worker would later release the same slots again.
   * A replacement worker may then reuse the shard index.
   */
  static reclaim(buffer: SharedArrayBuffer, shardIndex: number): number {
    const i32 = checkBuffer(buffer)
    checkShardIndex(i32, shardIndex)
    const maxShards = Atomics.load(i32, MAX_SHARDS)
    const held = Atomics.exchange(i32, heldIndex(shardIndex), 0)
    Atomics.store(i32, waitingIndex(shardIndex, maxShards), 0)
    if (held > 0) Atomics.sub(i32, IN_FLIGHT, held)
    Atomics.add(i32, WAKE_SEQ, 1)
    Atomics.notify(i32, WAKE_SEQ)
    return held
  }

  /** Everything in the buffer, as plain numbers (for gauges and tests). */
  static snapshot(buffer: SharedArrayBuffer): SharedDialGateSnapshot {
    const i32 = checkBuffer(buffer)
    const maxShards = Atomics.load(i32, MAX_SHARDS)
    const heldByShard: number[] = []
    const waitingByShard: number[] = []
    let waiting = 0
    for (let s = 0; s < maxShards; s++) {
      heldByShard.push(Atomics.load(i32, heldIndex(s)))
      const w = Atomics.load(i32, waitingIndex(s, maxShards))
      waitingByShard.push(w)
      waiting += w
    }
    return {
      inFlight: Atomics.load(i32, IN_FLIGHT),
      cap: Atomics.load(i32, CAP),
      effectiveCap: Atomics.load(i32, EFFECTIVE_CAP),
      waiting,
      governor: Atomics.load(i32, GOVERNOR) === 1,
      pressureEvents: Atomics.load(i32, PRESSURE_EVENTS),
      decreases: Atomics.load(i32, DECREASES),
      increases: Atomics.load(i32, INCREASES),
      heldByShard,
      waitingByShard,
    }
  }

  readonly shardIndex: number
  readonly #i32: Int32Array
  readonly #maxShards: number
  readonly #held: number
  readonly #waiting: number
  readonly #maxWaiting: number
  readonly #pollMs: number
  readonly #what: string
  // A Set is an insertion-ordered queue with O(1) removal of an aborted waiter.
  readonly #queue = new Set<SlotWaiter>()
  #pumping = false
  #closed = false
  // Cuts the current wait short (close, or the last waiter aborted), so no timer outlives the queue.
  #interrupt: (() => void) | undefined

  constructor(buffer: SharedArrayBuffer, shardIndex: number, opts: SharedDialGateOptions = {}) {
    this.#i32 = checkBuffer(buffer)
    checkShardIndex(this.#i32, shardIndex)
    this.shardIndex = shardIndex
    this.#maxShards = Atomics.load(this.#i32, MAX_SHARDS)
    this.#held = heldIndex(shardIndex)
    this.#waiting = waitingIndex(shardIndex, this.#maxShards)
    this.#maxWaiting = checkInt('maxWaiting', opts.maxWaiting ?? DEFAULT_MAX_WAITING, 0, 0x3fffffff)
    this.#pollMs = checkInt('pollMs', opts.pollMs ?? DEFAULT_POLL_MS, 1, 60_000)
    this.#what = opts.what ?? 'dial'
  }

  /** A slot now, or null if none is free or this shard already has dials queued (they go first). */
  tryAcquire(): DialSlot | null {
    if (this.#closed || this.#queue.size > 0) return null
    return this.#take()
  }

  /**
   * A slot when one is free, FIFO within this shard. Rejects with KAY_ABORTED if `signal` fires first
   * (the dial leaves the queue), KAY_QUEUE_FULL when `maxWaiting` dials already wait, KAY_CLOSED after close().
   */
  acquire(signal?: AbortSignal): Promise<DialSlot> {
    if (this.#closed) return Promise.reject(new ClosedError(`${this.#what} gate closed`))
    if (signal?.aborted) return Promise.reject(new AbortedError('dial wait aborted'))
    if (this.#queue.size === 0) {
      const now = this.#take()
      if (now) return Promise.resolve(now)
    }
    if (this.#queue.size >= this.#maxWaiting) {
      return Promise.reject(new QueueFullError(`${this.#what} queue full (${this.#maxWaiting} waiting)`))
    }
    return new Promise<DialSlot>((resolve, reject) => {
      const w = new SlotWaiter(resolve, reject, signal, (left) => {
        if (!this.#queue.delete(left)) return false
        this.#publishWaiting()
        if (this.#queue.size === 0) this.#interrupt?.()
        return true
      })
      this.#queue.add(w)
      this.#publishWaiting()
      if (!this.#pumping) void this.#pump()
    })
  }

  /** inFlight, cap and effectiveCap are global; waiting is the sum over all shards. */
  stats(): DialGateStats {
    const i32 = this.#i32
    let waiting = 0
    for (let s = 0; s < this.#maxShards; s++) waiting += Atomics.load(i32, waitingIndex(s, this.#maxShards))
    return {
      inFlight: Atomics.load(i32, IN_FLIGHT),
      cap: Atomics.load(i32, CAP),
      effectiveCap: Atomics.load(i32, EFFECTIVE_CAP),
      waiting,
    }
  }

  /** Dials waiting in this shard's queue. */
  get localWaiting(): number {
    return this.#queue.size
  }

  /**
   * Reject every queued dial with KAY_CLOSED and refuse new ones. Held slots stay held until released
   * (their dials are still running). Idempotent.
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    const waiters = [...this.#queue]
    this.#queue.clear()
    this.#publishWaiting()
    this.#interrupt?.()
    for (const w of waiters) {
      w.detach()
      w.reject(new ClosedError(`${this.#what} gate closed`))
    }
  }

  /** One CAS attempt loop on IN_FLIGHT; on success the slot is also counted in HELD[shard]. */
  #take(): DialSlot | null {
    const i32 = this.#i32
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const cur = Atomics.load(i32, IN_FLIGHT)
      const cap = Atomics.load(i32, CAP)
      const eff = Atomics.load(i32, EFFECTIVE_CAP)
      if (cur >= eff || cur >= cap) return null
      if (Atomics.compareExchange(i32, IN_FLIGHT, cur, cur + 1) === cur) {
        // IN_FLIGHT first, then HELD: a worker stopped between the two (there is no JS call, so no interrupt
        // point, between them) leaves HELD one short, and reclaim then leaks a slot rather than over-freeing
        // one. Leaking errs towards fewer dials; over-freeing would break the cap.
        Atomics.add(i32, this.#held, 1)
        return new SharedSlot(i32, this.#held, Atomics.load(i32, DECREASE_EPOCH))
      }
    }
    return null
  }

  #publishWaiting(): void {
    Atomics.store(this.#i32, this.#waiting, this.#queue.size)
  }

  /**
   * Serves the local queue head by head. The wake sequence is read *before* trying, so a release that lands
   * between a failed try and the wait changes WAKE_SEQ and waitAsync returns 'not-equal' at once: no lost
   * wake-up. The pollMs timeout is a safety net only (e.g. an effective-cap raise is published by a release,
   * so it also wakes us, but a reclaim could race the read of the sequence).
   */
  async #pump(): Promise<void> {
    this.#pumping = true
    try {
      while (this.#queue.size > 0 && !this.#closed) {
        const seq = Atomics.load(this.#i32, WAKE_SEQ)
        const slot = this.#take()
        if (slot) {
          const head = this.#queue.values().next().value as SlotWaiter
          this.#queue.delete(head)
          this.#publishWaiting()
          head.detach()
          head.resolve(slot)
          continue
        }
        await this.#waitForWake(seq)
      }
    } finally {
      this.#pumping = false
    }
  }

  async #waitForWake(seq: number): Promise<void> {
    const r = waitAsync(this.#i32, WAKE_SEQ, seq, this.#pollMs)
    if (!r.async) return
    // A pending waitAsync does not keep Node's event loop alive (measured, Node 20): a shard whose only work
    // is a queued dial would exit. A ref'd timer over the same span keeps it alive and is always cleared.
    let timer: ReturnType<typeof setTimeout> | undefined
    const keepAlive = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#pollMs)
      this.#interrupt = resolve
    })
    try {
      await Promise.race([r.value, keepAlive])
    } finally {
      clearTimeout(timer)
      this.#interrupt = undefined
    }
  }
}

/**
 * A held slot. A small class rather than a closure: one allocation per dial, no context object (this is
 * the hot path the micro bench measures).
 */
class SharedSlot implements DialSlot {
  #released = false
  readonly #i32: Int32Array
  readonly #held: number
  readonly #epoch: number

  constructor(i32: Int32Array, held: number, epoch: number) {
    this.#i32 = i32
    this.#held = held
    this.#epoch = epoch
  }

  release(outcome: DialOutcome): void {
    if (this.#released) return
    this.#released = true
    const i32 = this.#i32
    // HELD first, then IN_FLIGHT, for the same reason as in #take: any torn state leaks, never over-frees.
    Atomics.sub(i32, this.#held, 1)
    Atomics.sub(i32, IN_FLIGHT, 1)
    govern(i32, outcome, this.#epoch)
    // Notify unconditionally: it costs about as much as the CAS, and skipping it when nobody waits would need
    // a waiter count that a dead worker could leave wrong.
    Atomics.add(i32, WAKE_SEQ, 1)
    Atomics.notify(i32, WAKE_SEQ)
  }
}

// ---------------------------------------------------------------------------------------------------------
// The pushback governor (AIMD)
// ---------------------------------------------------------------------------------------------------------

/**
 * Feed one release to the governor.
 *
 * - 'pressure' (the server closed or reset the connection before/during key exchange): halve EFFECTIVE_CAP,
 *   floor 1, but only if the dial was acquired in the current DECREASE_EPOCH. A burst of failures from dials
 *   that all started at the old concurrency therefore causes one halving, not a collapse to 1 (the TCP
 *   "one window reduction per round trip" rule). The CAS on DECREASE_EPOCH elects exactly one decreaser.
 * - 'ok': additive increase: after EFFECTIVE_CAP consecutive-ish successes, +1, never above CAP. Concurrent
 *   releases may race on the streak; a CAS on EFFECTIVE_CAP makes sure each step is applied once.
 * - 'failed' (refused, auth, timeout unrelated to load): no change.
 *
 * PRESSURE_EVENTS counts every 'pressure' release, also with the governor off (it is a useful gauge).
 */
function govern(i32: Int32Array, outcome: DialOutcome, epoch: number): void {
  if (outcome === 'failed') return
  if (outcome === 'pressure') {
    Atomics.add(i32, PRESSURE_EVENTS, 1)
    if (Atomics.load(i32, GOVERNOR) !== 1) return
    Atomics.store(i32, SUCCESS_STREAK, 0)
    if (Atomics.compareExchange(i32, DECREASE_EPOCH, epoch, (epoch + 1) | 0) !== epoch) return
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const eff = Atomics.load(i32, EFFECTIVE_CAP)
      if (eff <= 1) return
      if (Atomics.compareExchange(i32, EFFECTIVE_CAP, eff, Math.floor(eff / 2)) === eff) {
        Atomics.add(i32, DECREASES, 1)
        return
      }
    }
    return
  }
  if (Atomics.load(i32, GOVERNOR) !== 1) return
  const eff = Atomics.load(i32, EFFECTIVE_CAP)
  if (eff >= Atomics.load(i32, CAP)) return
  const streak = Atomics.add(i32, SUCCESS_STREAK, 1) + 1
  if (streak >= eff && Atomics.compareExchange(i32, EFFECTIVE_CAP, eff, eff + 1) === eff) {
    Atomics.store(i32, SUCCESS_STREAK, 0)
    Atomics.add(i32, INCREASES, 1)
  }
}
