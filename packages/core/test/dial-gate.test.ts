import { describe, expect, it } from 'vitest'
import { LocalDialGate } from '../src/dial-gate.js'

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
