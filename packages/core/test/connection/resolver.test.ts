import { describe, expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { CachingResolver, type LookupAnswer, type LookupFn } from '../../src/connection/resolver.js'
import { errorFromJSON, type KayError, lastErrorOf } from '../../src/errors.js'
import { startSimFleet } from '../../src/sim/index.js'
import type { HostTarget } from '../../src/types.js'
import { clientIdentity, memoryVerifier, waitForState } from '../support/fixtures.js'
import { ManualClock } from '../support/manual-clock.js'

/** A lookup the test answers by hand: every call is recorded, with its signal, until settled. */
function manualLookup() {
  const calls: Array<{
    hostname: string
    signal: AbortSignal
    answer: (a: LookupAnswer) => void
    fail: (code?: string) => void
  }> = []
  let inFlight = 0
  let maxInFlight = 0
  const lookup: LookupFn = (hostname, signal) =>
    new Promise((resolve, reject) => {
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      const done = () => inFlight--
      calls.push({
        hostname,
        signal,
        answer: (a) => {
          done()
          resolve(a)
        },
        fail: (code = 'ENOTFOUND') => {
          done()
          reject(Object.assign(new Error(`getaddrinfo ${code} ${hostname}`), { code }))
        },
      })
    })
  return {
    lookup,
    calls,
    get inFlight() {
      return inFlight
    },
    get maxInFlight() {
      return maxInFlight
    },
  }
}

const flush = () => new Promise((r) => setImmediate(r))
const A = (address: string, ttlMs?: number): LookupAnswer => ({ address, family: 4, ...(ttlMs ? { ttlMs } : {}) })

describe('CachingResolver', () => {
  it('answers an IP literal at once, without a lookup', async () => {
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup })
    await expect(r.resolve('127.0.0.5')).resolves.toEqual({ address: '127.0.0.5', family: 4 })
    await expect(r.resolve('::1')).resolves.toEqual({ address: '::1', family: 6 })
    expect(l.calls).toHaveLength(0)
  })

  it('caches an answer for the positive TTL (or the lookup’s shorter one), then looks it up again', async () => {
    const clock = new ManualClock()
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup, clock, positiveTtlMs: 60_000 })
    const p = r.resolve('web1')
    l.calls[0]!.answer(A('127.0.0.1'))
    await expect(p).resolves.toEqual({ address: '127.0.0.1', family: 4 })
    clock.advance(59_999)
    await expect(r.resolve('web1')).resolves.toEqual({ address: '127.0.0.1', family: 4 })
    expect(l.calls).toHaveLength(1)
    clock.advance(1)
    const again = r.resolve('web1')
    expect(l.calls).toHaveLength(2)
    l.calls[1]!.answer(A('127.0.0.2', 5000)) // the name moved; this answer may be kept 5 s only
    await expect(again).resolves.toEqual({ address: '127.0.0.2', family: 4 })
    clock.advance(5000)
    void r.resolve('web1')
    expect(l.calls).toHaveLength(3)
    l.calls[2]!.answer(A('127.0.0.2'))
  })

  it('caches a failure for the negative TTL: the name fails at once, with the same typed error, no lookup', async () => {
    const clock = new ManualClock()
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup, clock, negativeTtlMs: 30_000 })
    const p = r.resolve('gone.example')
    l.calls[0]!.fail()
    await expect(p).rejects.toMatchObject({
      code: 'KAY_RESOLVE_FAILED',
      message: 'gone.example: name does not resolve: no such host',
      details: { hostname: 'gone.example', errno: 'ENOTFOUND' },
    })
    for (let i = 0; i < 5; i++) {
      clock.advance(5000)
      await expect(r.resolve('gone.example')).rejects.toMatchObject({
        code: 'KAY_RESOLVE_FAILED',
        details: { cached: true },
      })
    }
    expect(l.calls).toHaveLength(1)
    clock.advance(5000) // 30 s after the failure
    void r.resolve('gone.example').catch(() => {})
    expect(l.calls).toHaveLength(2)
    l.calls[1]!.fail()
  })

  it('coalesces concurrent lookups of one name into one', async () => {
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup })
    const ps = Array.from({ length: 10 }, () => r.resolve('db1'))
    expect(l.calls).toHaveLength(1)
    l.calls[0]!.answer(A('127.0.0.9'))
    for (const p of ps) await expect(p).resolves.toMatchObject({ address: '127.0.0.9' })
  })

  it('keeps at most `concurrency` lookups in flight; the rest wait in order', async () => {
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup, concurrency: 3 })
    const ps = Array.from({ length: 10 }, (_, i) => r.resolve(`h${i}`).catch(() => undefined))
    expect(l.calls.map((c) => c.hostname)).toEqual(['h0', 'h1', 'h2'])
    expect(r.stats()).toMatchObject({ inFlight: 3, queued: 7 })
    for (let n = 0; n < 10; n++) {
      l.calls[n]!.answer(A('127.0.0.1'))
      await flush()
    }
    await Promise.all(ps)
    expect(l.calls.map((c) => c.hostname)).toEqual(Array.from({ length: 10 }, (_, i) => `h${i}`))
    expect(l.maxInFlight).toBe(3)
    expect(r.stats()).toMatchObject({ inFlight: 0, queued: 0, maxInFlight: 3, lookups: 10 })
  })

  it('fails a lookup past its deadline, but keeps its slot until the lookup itself returns', async () => {
    const clock = new ManualClock()
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup, clock, concurrency: 1, timeoutMs: 5000 })
    const slow = r.resolve('slow')
    const next = r.resolve('next')
    clock.advance(5000)
    await expect(slow).rejects.toMatchObject({ code: 'KAY_RESOLVE_FAILED', details: { errno: 'ETIMEDOUT' } })
    expect(l.calls[0]!.signal.aborted).toBe(true) // asked to stop
    expect(l.calls).toHaveLength(1) // getaddrinfo cannot be cancelled: 'next' waits for the thread it holds
    l.calls[0]!.fail('EAI_AGAIN')
    await flush()
    expect(l.calls.map((c) => c.hostname)).toEqual(['slow', 'next'])
    l.calls[1]!.answer(A('127.0.0.3'))
    await expect(next).resolves.toMatchObject({ address: '127.0.0.3' })
  })

  it('serves names that never failed before the ones whose last lookup failed', async () => {
    const clock = new ManualClock()
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup, clock, concurrency: 1, negativeTtlMs: 1000 })
    const bad = r.resolve('bad').catch(() => undefined)
    l.calls[0]!.fail()
    await bad
    clock.advance(1000) // the failure expired: 'bad' is looked up again, but behind a fresh name
    const blocker = r.resolve('blocker')
    const retried = r.resolve('bad').catch(() => undefined)
    const fresh = r.resolve('fresh')
    l.calls[1]!.answer(A('127.0.0.1'))
    await blocker
    await flush()
    expect(l.calls.map((c) => c.hostname)).toEqual(['bad', 'blocker', 'fresh'])
    l.calls[2]!.answer(A('127.0.0.2'))
    await fresh
    await flush()
    expect(l.calls.at(-1)!.hostname).toBe('bad')
    l.calls[3]!.fail()
    await retried
  })

  it('bounds its queue (KAY_QUEUE_FULL), reports a lookup that returns no address, and rejects what waits on close', async () => {
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup, concurrency: 1, maxQueued: 2 })
    const inFlight = r.resolve('a').catch((e: unknown) => e)
    const q1 = r.resolve('b').catch((e: unknown) => e)
    const q2 = r.resolve('c').catch((e: unknown) => e)
    await expect(r.resolve('d')).rejects.toMatchObject({ code: 'KAY_QUEUE_FULL' })
    l.calls[0]!.answer({ address: 'not-an-ip', family: 4 })
    await expect(inFlight).resolves.toMatchObject({ code: 'KAY_RESOLVE_FAILED' })
    await flush()
    r.close()
    await expect(q2).resolves.toMatchObject({ code: 'KAY_RESOLVE_FAILED', message: 'c: resolver closed' })
    expect(l.calls[1]!.signal.aborted).toBe(true)
    l.calls[1]!.fail()
    await expect(q1).resolves.toMatchObject({ code: 'KAY_RESOLVE_FAILED' })
    await expect(r.resolve('e')).rejects.toMatchObject({ code: 'KAY_RESOLVE_FAILED' })
  })

  it('lets one caller give up (KAY_ABORTED) while the shared lookup goes on for the others', async () => {
    const l = manualLookup()
    const r = new CachingResolver({ lookup: l.lookup })
    const ac = new AbortController()
    const gaveUp = r.resolve('x', ac.signal)
    const stays = r.resolve('x')
    ac.abort()
    await expect(gaveUp).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    l.calls[0]!.answer(A('127.0.0.4'))
    await expect(stays).resolves.toMatchObject({ address: '127.0.0.4' })
  })
})

describe('an actor resolves its name before asking for a dial slot', () => {
  it('never holds a slot while its name resolves, and dials the address the resolver gave', async () => {
    const l = manualLookup()
    const resolver = new CachingResolver({ lookup: l.lookup })
    const gate = new LocalDialGate({ cap: 1 })
    const { identity } = clientIdentity()
    const dialed: string[] = []
    const actor = new HostActor({
      target: { id: 'web1', hostname: 'web1.example', port: 22, user: 'kay' },
      identity,
      verifier: memoryVerifier(),
      dialGate: gate,
      resolver,
      connector: async (t: HostTarget) => {
        dialed.push(t.hostname)
        throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })
      },
    })
    actor.start()
    await flush()
    expect(actor.state).toBe('dialing')
    expect(l.calls.map((c) => c.hostname)).toEqual(['web1.example'])
    expect(gate.stats().inFlight).toBe(0) // the slot is free for others while the name resolves
    l.calls[0]!.answer(A('127.0.0.77'))
    await waitForState(actor, 'backoff')
    expect(dialed).toEqual(['127.0.0.77'])
    expect(actor.status().lastError?.code).toBe('KAY_CONNECT_FAILED')
    await actor.close()
  })

  it('fails the dial with KAY_RESOLVE_FAILED, holding no slot, and backs off', async () => {
    const l = manualLookup()
    const gate = new LocalDialGate({ cap: 1 })
    const actor = new HostActor({
      target: { id: 'gone', hostname: 'gone.example', port: 22, user: 'kay' },
      identity: clientIdentity().identity,
      verifier: memoryVerifier(),
      dialGate: gate,
      resolver: new CachingResolver({ lookup: l.lookup }),
    })
    actor.start()
    await flush()
    l.calls[0]!.fail()
    await waitForState(actor, 'backoff')
    expect(actor.status()).toMatchObject({
      handshakes: 0,
      lastError: {
        code: 'KAY_RESOLVE_FAILED',
        host: 'gone',
        message: 'gone: gone.example: name does not resolve: no such host',
      },
    })
    // The refusal carries the host's last cause: code and message in details, in the message, and as `cause`.
    const refused = await actor.run('true').then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(refused).toMatchObject({
      code: 'KAY_NOT_READY',
      message:
        'gone: not ready (backoff); last error KAY_RESOLVE_FAILED: gone.example: name does not resolve: no such host',
      details: {
        lastError: { code: 'KAY_RESOLVE_FAILED', message: 'gone: gone.example: name does not resolve: no such host' },
      },
      cause: { code: 'KAY_RESOLVE_FAILED' },
    })
    // Across a thread boundary (plain data), the cause is re-created too.
    const again = errorFromJSON((refused as KayError).toJSON())
    expect(again.cause).toMatchObject({ code: 'KAY_RESOLVE_FAILED', host: 'gone' })
    expect(lastErrorOf(again)).toEqual({
      code: 'KAY_RESOLVE_FAILED',
      message: 'gone: gone.example: name does not resolve: no such host',
    })
    expect(gate.stats().inFlight).toBe(0)
    await actor.close()
  })

  it('reaches a simulated host by a name only the injected resolver knows (no second lookup in net.connect)', async () => {
    const { identity, publicKey } = clientIdentity()
    const fleet = await startSimFleet({ hosts: 1, authorizedKeys: [publicKey] })
    try {
      const h = fleet.hosts[0]!
      const resolver = new CachingResolver({
        lookup: async (name) => {
          if (name !== 'sim-host.kay.invalid') throw Object.assign(new Error('nope'), { code: 'ENOTFOUND' })
          return A(h.host)
        },
      })
      const actor = new HostActor({
        target: { id: 'sim', hostname: 'sim-host.kay.invalid', port: h.port, user: 'kay' },
        identity,
        verifier: memoryVerifier(),
        dialGate: new LocalDialGate(),
        resolver,
        keepaliveIntervalMs: 0,
      })
      actor.start()
      await waitForState(actor, 'ready')
      expect((await actor.run('echo hi')).stdout).toBe('hi\n')
      await actor.close()
    } finally {
      await fleet.close()
    }
  })
})
