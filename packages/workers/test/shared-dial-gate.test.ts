import { Worker } from 'node:worker_threads'
import type { DialSlot } from '@kay/core'
import { afterEach, describe, expect, it } from 'vitest'
import { CAP, heldIndex, IN_FLIGHT, SharedDialGate } from '../src/shared-dial-gate.js'
import {
  COMPLETED,
  controlBuffer,
  type GateWorkerTask,
  GO,
  MAX_HOLDERS,
  MAX_IN_FLIGHT,
  MIN_IN_FLIGHT,
  QUEUED,
  resultIndex,
} from './fixtures/control.js'

/** Resolves after pending promise callbacks and one macrotask turn have run (lets a pump make progress). */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

function track<T>(p: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let done = false
  const promise = p.finally(() => {
    done = true
  })
  promise.catch(() => {})
  return { settled: () => done, promise }
}

function take(gate: SharedDialGate, n: number): DialSlot[] {
  const slots: DialSlot[] = []
  for (let i = 0; i < n; i++) slots.push(gate.tryAcquire()!)
  expect(slots.every((s) => s !== null)).toBe(true)
  return slots
}

describe('SharedDialGate (one thread)', () => {
  it('counts acquires and releases globally and per shard, and never hands out more than the cap', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 3, maxShards: 4 })
    const a = new SharedDialGate(buffer, 0)
    const b = new SharedDialGate(buffer, 2)
    expect(a.stats()).toEqual({ inFlight: 0, cap: 3, effectiveCap: 3, waiting: 0 })
    const s1 = a.tryAcquire()!
    const s2 = b.tryAcquire()!
    const s3 = b.tryAcquire()!
    expect(a.tryAcquire()).toBeNull()
    expect(b.tryAcquire()).toBeNull()
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ inFlight: 3, heldByShard: [1, 0, 2, 0] })
    s2.release('ok')
    expect(b.stats().inFlight).toBe(2)
    const s4 = a.tryAcquire()!
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ inFlight: 3, heldByShard: [2, 0, 1, 0] })
    for (const s of [s1, s3, s4]) s.release('failed')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ inFlight: 0, heldByShard: [0, 0, 0, 0] })
  })

  it('counts a slot once however many times it is released', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 2 })
    const gate = new SharedDialGate(buffer, 0)
    const [s1, s2] = take(gate, 2)
    s1!.release('ok')
    s1!.release('ok')
    s1!.release('pressure')
    expect(gate.stats()).toMatchObject({ inFlight: 1, effectiveCap: 2 })
    expect(SharedDialGate.snapshot(buffer).pressureEvents).toBe(0)
    s2!.release('ok')
    expect(gate.stats().inFlight).toBe(0)
  })

  it('serves waiters of one shard in FIFO order, one freed slot at a time', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 1 })
    const gate = new SharedDialGate(buffer, 0)
    const [held] = take(gate, 1)
    const order: string[] = []
    const waiters = ['a', 'b', 'c'].map((name) =>
      track(
        gate.acquire().then((slot) => {
          order.push(name)
          return slot
        }),
      ),
    )
    expect(gate.stats()).toMatchObject({ inFlight: 1, waiting: 3 })
    held!.release('ok')
    // Queued dials go first: a direct tryAcquire may not jump the queue even though a slot is free.
    expect(gate.tryAcquire()).toBeNull()
    const sa = await waiters[0]!.promise
    await turn()
    expect(order).toEqual(['a'])
    expect(waiters[1]!.settled()).toBe(false)
    sa.release('ok')
    const sb = await waiters[1]!.promise
    sb.release('ok')
    const sc = await waiters[2]!.promise
    expect(order).toEqual(['a', 'b', 'c'])
    expect(gate.stats()).toMatchObject({ inFlight: 1, waiting: 0 })
    sc.release('ok')
    expect(gate.stats().inFlight).toBe(0)
  })

  it('removes an aborted waiter from the queue and rejects it with KAY_ABORTED', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 1 })
    const gate = new SharedDialGate(buffer, 0)
    const [held] = take(gate, 1)
    const ac = new AbortController()
    const first = gate.acquire(ac.signal)
    const second = gate.acquire()
    expect(gate.localWaiting).toBe(2)
    ac.abort()
    await expect(first).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    expect(gate.localWaiting).toBe(1)
    expect(SharedDialGate.snapshot(buffer).waitingByShard[0]).toBe(1)
    held!.release('ok')
    const slot = await second
    expect(gate.stats()).toMatchObject({ inFlight: 1, waiting: 0 })
    slot.release('ok')
    const done = new AbortController()
    done.abort()
    await expect(gate.acquire(done.signal)).rejects.toMatchObject({ code: 'KAY_ABORTED' })
  })

  it('rejects with KAY_QUEUE_FULL past maxWaiting', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 1 })
    const gate = new SharedDialGate(buffer, 0, { maxWaiting: 2 })
    const [held] = take(gate, 1)
    const w1 = gate.acquire()
    const w2 = gate.acquire()
    await expect(gate.acquire()).rejects.toMatchObject({ code: 'KAY_QUEUE_FULL' })
    held!.release('ok')
    ;(await w1).release('ok')
    ;(await w2).release('ok')
    expect(gate.stats()).toMatchObject({ inFlight: 0, waiting: 0 })
  })

  it('rejects queued and new dials with KAY_CLOSED after close, and keeps held slots counted', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 1 })
    const gate = new SharedDialGate(buffer, 0)
    const [held] = take(gate, 1)
    const queued = gate.acquire()
    gate.close()
    gate.close()
    await expect(queued).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    await expect(gate.acquire()).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    expect(gate.tryAcquire()).toBeNull()
    expect(gate.stats()).toMatchObject({ inFlight: 1, waiting: 0 })
    held!.release('ok')
    expect(gate.stats().inFlight).toBe(0)
  })

  it('sums waiters over all shards in stats', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 1, maxShards: 3 })
    const a = new SharedDialGate(buffer, 0)
    const c = new SharedDialGate(buffer, 2)
    const [held] = take(a, 1)
    const waits = [a.acquire(), c.acquire(), c.acquire()]
    expect(a.stats().waiting).toBe(3)
    expect(SharedDialGate.snapshot(buffer).waitingByShard).toEqual([1, 0, 2])
    held!.release('ok')
    for (let i = 0; i < 3; i++) {
      const slot = await Promise.race(waits.map((p) => p.then((s) => ({ s, p }))))
      waits.splice(waits.indexOf(slot.p), 1)
      slot.s.release('ok')
    }
    expect(a.stats()).toMatchObject({ inFlight: 0, waiting: 0 })
  })

  it('reclaims the slots of a dead shard and wakes waiters in other shards', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 3, maxShards: 2 })
    const live = new SharedDialGate(buffer, 0)
    const dead = new SharedDialGate(buffer, 1)
    take(live, 1)
    take(dead, 2)
    const waiting = live.acquire()
    expect(SharedDialGate.reclaim(buffer, 1)).toBe(2)
    const slot = await waiting
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ inFlight: 2, heldByShard: [2, 0] })
    expect(SharedDialGate.reclaim(buffer, 1)).toBe(0)
    slot.release('ok')
  })

  it('rejects bad options, shard indexes and foreign buffers with KAY_CONFIG', () => {
    const config = expect.objectContaining({ code: 'KAY_CONFIG' })
    for (const cap of [0, -1, 1.5, Number.NaN]) expect(() => SharedDialGate.createBuffer({ cap })).toThrow(config)
    expect(() => SharedDialGate.createBuffer({ maxShards: 0 })).toThrow(config)
    const buffer = SharedDialGate.createBuffer({ maxShards: 2 })
    for (const i of [-1, 2, 0.5]) expect(() => new SharedDialGate(buffer, i)).toThrow(config)
    expect(() => new SharedDialGate(buffer, 0, { pollMs: 0 })).toThrow(config)
    expect(() => new SharedDialGate(buffer, 0, { maxWaiting: -1 })).toThrow(config)
    expect(() => new SharedDialGate(new SharedArrayBuffer(1024), 0)).toThrow(config)
    expect(() => SharedDialGate.reclaim(new SharedArrayBuffer(8), 0)).toThrow(config)
    expect(() => new SharedDialGate(new ArrayBuffer(1024) as unknown as SharedArrayBuffer, 0)).toThrow(config)
  })
})

describe('the pushback governor', () => {
  it('halves the effective cap on pressure and holds new dials to it', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 16 })
    const gate = new SharedDialGate(buffer, 0)
    gate.tryAcquire()!.release('pressure')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ effectiveCap: 8, pressureEvents: 1, decreases: 1 })
    const slots = take(gate, 8)
    expect(gate.tryAcquire()).toBeNull()
    expect(gate.stats()).toMatchObject({ inFlight: 8, cap: 16, effectiveCap: 8 })
    for (const s of slots) s.release('failed')
  })

  it('halves once for a burst of pressure from dials that started before the decrease', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 16 })
    const gate = new SharedDialGate(buffer, 0)
    const burst = take(gate, 12)
    for (const s of burst) s.release('pressure')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ effectiveCap: 8, pressureEvents: 12, decreases: 1 })
    // A dial that started after the decrease and still meets pressure halves again.
    gate.tryAcquire()!.release('pressure')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ effectiveCap: 4, decreases: 2 })
  })

  it('never goes below one', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 5 })
    const gate = new SharedDialGate(buffer, 0)
    for (let i = 0; i < 6; i++) gate.tryAcquire()!.release('pressure')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ effectiveCap: 1, pressureEvents: 6, decreases: 2 })
    const one = gate.tryAcquire()!
    expect(gate.tryAcquire()).toBeNull()
    one.release('ok')
  })

  it('adds one after effectiveCap successes, up to the cap and never above it', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 10 })
    const gate = new SharedDialGate(buffer, 0)
    gate.tryAcquire()!.release('pressure')
    expect(gate.stats().effectiveCap).toBe(5)
    for (let i = 0; i < 4; i++) gate.tryAcquire()!.release('ok')
    expect(gate.stats().effectiveCap).toBe(5)
    gate.tryAcquire()!.release('ok')
    expect(gate.stats().effectiveCap).toBe(6)
    for (let i = 0; i < 6; i++) gate.tryAcquire()!.release('ok')
    expect(gate.stats().effectiveCap).toBe(7)
    for (let i = 0; i < 200; i++) gate.tryAcquire()!.release('ok')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ effectiveCap: 10, cap: 10, increases: 5, decreases: 1 })
  })

  it('ignores plain failures, and a pressure event restarts the run of successes', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 8 })
    const gate = new SharedDialGate(buffer, 0)
    gate.tryAcquire()!.release('pressure')
    expect(gate.stats().effectiveCap).toBe(4)
    for (let i = 0; i < 20; i++) gate.tryAcquire()!.release('failed')
    expect(gate.stats().effectiveCap).toBe(4)
    const stale = take(gate, 1)[0]!
    // Lower the cap again with a newer dial, so `stale` is from an old epoch.
    gate.tryAcquire()!.release('pressure')
    expect(gate.stats().effectiveCap).toBe(2)
    gate.tryAcquire()!.release('ok')
    // Stale pressure does not halve again ...
    stale.release('pressure')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ effectiveCap: 2, decreases: 2, pressureEvents: 3 })
    // ... but it breaks the run of successes: the one before it no longer counts.
    gate.tryAcquire()!.release('ok')
    expect(gate.stats().effectiveCap).toBe(2)
    gate.tryAcquire()!.release('ok')
    expect(gate.stats().effectiveCap).toBe(3)
  })

  it('holds waiters to the effective cap, not the configured one', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 4 })
    const gate = new SharedDialGate(buffer, 0)
    gate.tryAcquire()!.release('pressure')
    const held = take(gate, 2)
    const waiter = track(gate.acquire())
    await turn()
    expect(waiter.settled()).toBe(false)
    expect(gate.stats()).toMatchObject({ inFlight: 2, cap: 4, effectiveCap: 2, waiting: 1 })
    held[0]!.release('ok')
    const slot = await waiter.promise
    expect(gate.stats()).toMatchObject({ inFlight: 2, effectiveCap: 2, waiting: 0 })
    slot.release('ok')
    held[1]!.release('ok')
  })

  it('leaves the cap alone when turned off, but still counts pressure', () => {
    const buffer = SharedDialGate.createBuffer({ cap: 8, governor: false })
    const gate = new SharedDialGate(buffer, 0)
    for (const s of take(gate, 8)) s.release('pressure')
    gate.tryAcquire()!.release('pressure')
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({
      governor: false,
      effectiveCap: 8,
      pressureEvents: 9,
      decreases: 0,
      increases: 0,
    })
    expect(take(gate, 8)).toHaveLength(8)
  })
})

// ---------------------------------------------------------------------------------------------------------
// Real worker threads
// ---------------------------------------------------------------------------------------------------------

const BOOT = new URL('./fixtures/boot.mjs', import.meta.url)
const ENTRY = new URL('./fixtures/gate-worker.ts', import.meta.url).href
const DEADLINE_MS = 30_000
const started: Worker[] = []

function startWorker(task: GateWorkerTask): Worker {
  const w = new Worker(BOOT, { workerData: { ...task, entry: ENTRY }, execArgv: ['--conditions=kay-source'] })
  started.push(w)
  return w
}

/** The next message from `w` that satisfies `match`; rejects on a worker error, an early exit or the deadline. */
function message<T>(w: Worker, match: (m: unknown) => m is T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error('no message from worker before the deadline')), DEADLINE_MS)
    const onMessage = (m: unknown) => {
      if (match(m)) finish(undefined, m)
    }
    const onError = (e: Error) => finish(e)
    const onExit = (code: number) => finish(new Error(`worker exited (${code}) before the message`))
    function finish(err: Error | undefined, value?: T) {
      clearTimeout(timer)
      w.off('message', onMessage).off('error', onError).off('exit', onExit)
      if (err) reject(err)
      else resolve(value as T)
    }
    w.on('message', onMessage).on('error', onError).on('exit', onExit)
  })
}

/** The exit code of `w`. Attach it right after start (an exit is not replayed). Rejects at the deadline. */
function exited(w: Worker): Promise<number> {
  const p = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('worker did not exit before the deadline')), DEADLINE_MS)
    w.once('exit', (code) => {
      clearTimeout(timer)
      resolve(code)
    })
  })
  // Marked handled: when an earlier await fails the test, this one must not also surface as unhandled.
  p.catch(() => {})
  return p
}

const is =
  <T>(value: T) =>
  (m: unknown): m is T =>
    m === value
const hasKey =
  <K extends string>(key: K) =>
  (m: unknown): m is Record<K, number> =>
    typeof m === 'object' && m !== null && key in m

afterEach(async () => {
  await Promise.all(started.splice(0).map((w) => w.terminate()))
})

describe('SharedDialGate across worker threads', () => {
  it('keeps 4 threads × 2,000 acquire/release cycles within a cap of 3, with no lost wake-ups', async () => {
    const WORKERS = 4
    const CYCLES = 2000
    const buffer = SharedDialGate.createBuffer({ cap: 3, maxShards: WORKERS, governor: false })
    const control = controlBuffer(WORKERS)
    const c32 = new Int32Array(control)
    const workers = Array.from({ length: WORKERS }, (_, shardIndex) =>
      startWorker({ mode: 'contention', buffer, shardIndex, control, cycles: CYCLES, concurrency: 3 }),
    )
    await Promise.all(workers.map((w) => message(w, is('ready'))))
    const done = workers.map((w) => message(w, is('done')))
    const exits = workers.map(exited)
    Atomics.store(c32, GO, 1)
    Atomics.notify(c32, GO)
    await Promise.all(done)
    expect(await Promise.all(exits)).toEqual([0, 0, 0, 0])

    let queued = 0
    let maxHolders = 0
    for (let w = 0; w < WORKERS; w++) {
      expect(Atomics.load(c32, resultIndex(w, COMPLETED))).toBe(CYCLES)
      expect(Atomics.load(c32, resultIndex(w, MAX_IN_FLIGHT))).toBeLessThanOrEqual(3)
      expect(Atomics.load(c32, resultIndex(w, MIN_IN_FLIGHT))).toBeGreaterThanOrEqual(1)
      expect(Atomics.load(c32, resultIndex(w, MAX_HOLDERS))).toBeLessThanOrEqual(3)
      queued += Atomics.load(c32, resultIndex(w, QUEUED))
      maxHolders = Math.max(maxHolders, Atomics.load(c32, resultIndex(w, MAX_HOLDERS)))
    }
    // The run really was contended: the cap was reached and acquires had to wait (how many depends on how the OS
    // schedules the threads: on a loaded 2-core machine only a handful overlap, so only "some" is asserted).
    expect(maxHolders).toBe(3)
    expect(queued).toBeGreaterThan(0)
    const i32 = new Int32Array(buffer)
    expect(Atomics.load(i32, IN_FLIGHT)).toBe(0)
    expect(Atomics.load(i32, CAP)).toBe(3)
    for (let w = 0; w < WORKERS; w++) expect(Atomics.load(i32, heldIndex(w))).toBe(0)
    expect(SharedDialGate.snapshot(buffer).waiting).toBe(0)
  })

  it('reclaims the slots of a terminated worker and so wakes a worker waiting in another thread', async () => {
    const buffer = SharedDialGate.createBuffer({ cap: 2, maxShards: 2 })
    const holder = startWorker({ mode: 'hold', buffer, shardIndex: 0, slots: 2 })
    await message(holder, is('holding'))
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ inFlight: 2, heldByShard: [2, 0] })

    const waiter = startWorker({ mode: 'wait', buffer, shardIndex: 1 })
    const waiterExit = exited(waiter)
    const acquired = message(waiter, hasKey('acquired'))
    expect(await message(waiter, hasKey('queued'))).toEqual({ queued: 1 })
    expect(SharedDialGate.snapshot(buffer).waitingByShard).toEqual([0, 1])

    const holderExit = exited(holder)
    await holder.terminate()
    await holderExit
    // Until the supervisor reclaims, the dead worker's slots still count: the waiter stays queued.
    expect(SharedDialGate.snapshot(buffer).inFlight).toBe(2)
    expect(SharedDialGate.reclaim(buffer, 0)).toBe(2)
    // The reclaim's notify wakes the other thread (its pollMs is a minute, so this is not the safety net).
    expect(await acquired).toEqual({ acquired: 1 })
    expect(await waiterExit).toBe(0)
    expect(SharedDialGate.snapshot(buffer)).toMatchObject({ inFlight: 0, heldByShard: [0, 0], waiting: 0 })
  })
})
