import { describe, expect, it } from 'vitest'
import { LocalDialGate, RateLimitedDialGate } from '../../src/connection/dial-gate.js'
import { ManualClock } from '../support/manual-clock.js'

describe('LocalDialGate', () => {
  it('hands out at most cap slots and serves waiters in order', async () => {
    const gate = new LocalDialGate({ cap: 2 })
    const a = gate.tryAcquire()!
    const b = gate.tryAcquire()!
    expect(gate.tryAcquire()).toBeNull()
    const order: number[] = []
    const w1 = gate.acquire().then((s) => {
      order.push(1)
      return s
    })
    const w2 = gate.acquire().then((s) => {
      order.push(2)
      return s
    })
    expect(gate.stats()).toMatchObject({ inFlight: 2, waiting: 2 })
    a.release('ok')
    a.release('ok') // idempotent
    const s1 = await w1
    expect(gate.stats()).toMatchObject({ inFlight: 2, waiting: 1 })
    b.release('failed')
    const s2 = await w2
    expect(order).toEqual([1, 2])
    s1.release('ok')
    s2.release('ok')
    expect(gate.stats()).toMatchObject({ inFlight: 0, waiting: 0 })
  })

  it('removes an aborted waiter and rejects it with KAY_ABORTED', async () => {
    const gate = new LocalDialGate({ cap: 1 })
    const held = gate.tryAcquire()!
    const ac = new AbortController()
    const p = gate.acquire(ac.signal)
    ac.abort()
    await expect(p).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    held.release('ok')
    expect(gate.stats()).toMatchObject({ inFlight: 0, waiting: 0 })
  })

  it('bounds the wait queue', async () => {
    const gate = new LocalDialGate({ cap: 1, maxWaiting: 1 })
    gate.tryAcquire()
    void gate.acquire()
    await expect(gate.acquire()).rejects.toMatchObject({ code: 'KAY_QUEUE_FULL' })
  })

  it('rejects a cap below one', () => {
    expect(() => new LocalDialGate({ cap: 0 })).toThrow(RangeError)
  })
})

describe('RateLimitedDialGate', () => {
  it('lets a burst through, then spaces dials at the rate, in order', async () => {
    const clock = new ManualClock()
    const gate = new RateLimitedDialGate(new LocalDialGate({ cap: 100 }), { ratePerSec: 10, burst: 2, clock })
    const got: number[] = []
    const ps = Array.from({ length: 6 }, (_, i) =>
      gate.acquire().then((s) => {
        got.push(i)
        s.release('failed') // a refused connect frees its slot at once: only the rate holds the storm back
      }),
    )
    await flush()
    expect(got).toEqual([0, 1]) // the burst
    expect(gate.stats().waiting).toBe(4)
    clock.advance(99)
    await flush()
    expect(got).toEqual([0, 1])
    clock.advance(1) // 100 ms at 10/s: one more token
    await flush()
    expect(got).toEqual([0, 1, 2])
    clock.advance(300)
    await Promise.all(ps)
    expect(got).toEqual([0, 1, 2, 3, 4, 5])
    expect(clock.pending).toBe(0)
  })

  it('bounds attempts per second whatever the concurrency cap', async () => {
    const clock = new ManualClock()
    const gate = new RateLimitedDialGate(new LocalDialGate({ cap: 16 }), { ratePerSec: 50, clock })
    let attempts = 0
    for (let i = 0; i < 1000; i++) {
      void gate.acquire().then((s) => {
        attempts++
        s.release('failed')
      })
    }
    await flush()
    const perSecond: number[] = []
    for (let sec = 0; sec < 5; sec++) {
      const before = attempts
      for (let ms = 0; ms < 1000; ms += 10) {
        clock.advance(10)
        await flush()
      }
      perSecond.push(attempts - before)
    }
    // The first second also spends the initial burst (50); after that, 50 per second.
    expect(perSecond.every((n) => n <= 51)).toBe(true)
    expect(perSecond.slice(1).every((n) => n >= 49)).toBe(true)
  })

  it('tryAcquire never jumps the queue or overdraws the bucket', () => {
    const clock = new ManualClock()
    const gate = new RateLimitedDialGate(new LocalDialGate({ cap: 10 }), { ratePerSec: 1, burst: 1, clock })
    expect(gate.tryAcquire()).not.toBeNull()
    expect(gate.tryAcquire()).toBeNull()
    clock.advance(1000)
    expect(gate.tryAcquire()).not.toBeNull()
  })

  it('rejects aborted and closed waiters with KAY_ABORTED and leaves no timer', async () => {
    const clock = new ManualClock()
    const gate = new RateLimitedDialGate(new LocalDialGate(), { ratePerSec: 1, burst: 1, clock })
    ;(await gate.acquire()).release('ok')
    const ac = new AbortController()
    const a = gate.acquire(ac.signal)
    const b = gate.acquire()
    ac.abort()
    await expect(a).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    gate.close()
    await expect(b).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    expect(clock.pending).toBe(0)
    expect(() => new RateLimitedDialGate(new LocalDialGate(), { ratePerSec: 0 })).toThrow(RangeError)
  })
})

async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve()
}
