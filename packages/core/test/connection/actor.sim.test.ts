import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { HostActor, type HostActorOptions } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { type SimFleet, startSimFleet } from '../../src/sim/index.js'
import { until } from '../../src/testing/index.js'
import type { Identity } from '../../src/types.js'
import { clientIdentity, memoryVerifier, settledNow, waitForState } from '../support/fixtures.js'
import { ManualClock } from '../support/manual-clock.js'

let fleet: SimFleet
let identity: Identity
const actors: HostActor[] = []

beforeAll(async () => {
  const c = clientIdentity()
  identity = c.identity
  fleet = await startSimFleet({ hosts: 8, authorizedKeys: [c.publicKey] })
})

afterAll(async () => {
  await fleet.close()
})

afterEach(async () => {
  await Promise.all(actors.splice(0).map((a) => a.close()))
  for (let i = 0; i < fleet.hosts.length; i++) {
    fleet.setFault(i, {
      refuse: false,
      halfOpen: false,
      stallHandshake: false,
      maxSessions: 10,
      passwordOnly: false,
    })
  }
})

function actorFor(i: number, extra: Partial<HostActorOptions> = {}): HostActor {
  const h = fleet.hosts[i]!
  const a = new HostActor({
    target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate({ cap: 4 }),
    ...extra,
  })
  actors.push(a)
  return a
}

describe('HostActor against the simulator', () => {
  it('runs 100 commands over one connection with exactly one handshake', async () => {
    const a = actorFor(0)
    fleet.host(0).stats() // touch
    const before = fleet.host(0).stats().handshakesStarted
    a.start()
    await waitForState(a, 'ready')
    for (let i = 0; i < 100; i++) {
      const r = await a.run(`echo tick${i}`)
      expect(r.stdout).toBe(`tick${i}\n`)
      expect(r.exitCode).toBe(0)
    }
    expect(fleet.host(0).stats().handshakesStarted - before).toBe(1)
    expect(a.status().handshakes).toBe(1)
  })

  it('answers NotReady at once while dialing and while backing off, without any time passing', async () => {
    const clock = new ManualClock()
    fleet.setFault(1, { refuse: true })
    const a = actorFor(1, { clock, random: () => 0.5 })
    const p0 = a.run('echo x')
    expect(await settledNow(p0)).toBe(true)
    await expect(p0).rejects.toMatchObject({ code: 'KAY_NOT_READY', details: { state: 'idle' } })
    a.start()
    const p1 = a.run('echo x')
    expect(await settledNow(p1)).toBe(true)
    await expect(p1).rejects.toMatchObject({ code: 'KAY_NOT_READY', details: { state: 'dialing' } })
    await waitForState(a, 'backoff')
    const p2 = a.run('echo x')
    expect(await settledNow(p2)).toBe(true)
    const err = await p2.catch((e) => e)
    expect(err.code).toBe('KAY_NOT_READY')
    expect(err.details.state).toBe('backoff')
    expect(err.details.nextRetryAt).toBe(clock.now() + 500) // random 0.5 × base 1000 for attempt 0
  })

  it('detects a half-open host within keepalive interval + probe deadline', async () => {
    const clock = new ManualClock()
    const a = actorFor(2, { clock, keepaliveIntervalMs: 15_000, probeDeadlineMs: 5_000, random: () => 0.5 })
    a.start()
    await waitForState(a, 'ready')
    // A live host answers the probe: RTT recorded, still ready.
    clock.advance(15_000)
    await until('probe reply', () => a.status().rttMs !== undefined, 5000)
    expect(a.state).toBe('ready')
    fleet.setFault(2, { halfOpen: true })
    clock.advance(15_000) // idle interval: probe sent (its deadline armed within advance()), no reply
    expect(a.state).toBe('ready')
    clock.advance(5_000) // probe deadline
    expect(a.state).toBe('backoff')
    expect(a.status().lastError?.code).toBe('KAY_KEEPALIVE_TIMEOUT')
    fleet.setFault(2, { halfOpen: false })
  })

  it('checks keepalive on whole seconds, so hosts that came up within one second share one wake-up', async () => {
    // Keepalive timers (the only ones of 15 s here), by the absolute time they fall due.
    const clock = new (class extends ManualClock {
      keepaliveDue: number[] = []
      override setTimeout(fn: () => void, ms: number) {
        if (ms >= 14_000) this.keepaliveDue.push(this.now() + ms)
        return super.setTimeout(fn, ms)
      }
    })(1_700_000_000_300)
    const a = actorFor(5, { clock, keepaliveIntervalMs: 15_000 })
    a.start()
    await waitForState(a, 'ready')
    clock.advance(400) // the second host comes up 400 ms later, in the same second
    const b = actorFor(6, { clock, keepaliveIntervalMs: 15_000 })
    b.start()
    await waitForState(b, 'ready')
    // Due 15 s after each came up, rounded up to the next whole second: the same instant for both.
    expect(clock.keepaliveDue).toEqual([1_700_000_016_000, 1_700_000_016_000])
    clock.advance(15_000) // 15.7 s after the first: not yet
    expect(clock.keepaliveDue).toHaveLength(2)
    clock.advance(300) // the whole second: both probed (no traffic meanwhile), both answer
    await until('both probes answered', () => a.status().rttMs !== undefined && b.status().rttMs !== undefined, 5000)
    // Re-armed on the grid again, 15 s after the answers.
    expect(clock.keepaliveDue.slice(2)).toEqual([1_700_000_031_000, 1_700_000_031_000])
  })

  it('counts inbound traffic as proof of life: no probe while data flows', async () => {
    const clock = new ManualClock()
    const a = actorFor(3, { clock, keepaliveIntervalMs: 15_000 })
    a.start()
    await waitForState(a, 'ready')
    const g0 = fleet.host(3).stats().globalRequests
    clock.advance(10_000)
    await a.run('echo alive')
    clock.advance(5_000) // interval ends with traffic seen: re-arm, no probe
    // A probe would have been written before this command's channel: once the host has answered it, it has seen both.
    await a.run('echo after')
    expect(fleet.host(3).stats().globalRequests).toBe(g0)
    expect(a.state).toBe('ready')
  })

  it('redials with backoff after a host restart and heals', async () => {
    const clock = new ManualClock()
    const a = actorFor(4, { clock, random: () => 0.25 })
    a.start()
    await waitForState(a, 'ready')
    await fleet.restart(4)
    await waitForState(a, 'backoff')
    expect(a.status().lastError?.code).toBe('KAY_CONNECTION_LOST')
    expect(a.status().nextRetryAt).toBe(clock.now() + 250)
    clock.advance(250)
    await waitForState(a, 'ready')
    expect((await a.run('hostname')).stdout.trim()).toBe(fleet.hosts[4]!.name)
    expect(a.status().handshakes).toBe(2)
  })

  it('resets the backoff attempts only after the connection stayed up for the stable period', async () => {
    const clock = new ManualClock()
    const a = actorFor(4, {
      clock,
      random: () => 0.999,
      keepaliveIntervalMs: 0,
      backoff: { baseMs: 1000, capMs: 60_000, stableAfterMs: 30_000 },
    })
    a.start()
    await waitForState(a, 'ready')
    // Lost twice quickly: the attempt counter grows, and so does the window.
    await fleet.restart(4)
    await waitForState(a, 'backoff')
    expect(a.status().nextRetryAt! - clock.now()).toBe(999) // attempt 0: window 1 s
    clock.advance(1000)
    await waitForState(a, 'ready')
    await fleet.restart(4)
    await waitForState(a, 'backoff')
    expect(a.status().nextRetryAt! - clock.now()).toBe(1998) // attempt 1: window 2 s
    clock.advance(2000)
    await waitForState(a, 'ready')
    // Up for the stable period: the next loss starts from the base window again.
    clock.advance(30_000)
    await fleet.restart(4)
    await waitForState(a, 'backoff')
    expect(a.status().nextRetryAt! - clock.now()).toBe(999)
  })

  it('never opens more channels than its limit and queues the rest', async () => {
    const a = actorFor(5, { maxChannels: 2 })
    a.start()
    await waitForState(a, 'ready')
    const before = fleet.host(5).stats()
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => a.run(`echo ${i}`)))
    expect(results.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 20 }, (_, i) => String(i)))
    const after = fleet.host(5).stats()
    expect(after.maxConcurrentChannels).toBeLessThanOrEqual(2)
    expect(after.channelsOpened - before.channelsOpened).toBe(20)
  })

  it('bounds the channel queue with KAY_QUEUE_FULL', async () => {
    const a = actorFor(5, { maxChannels: 1, maxQueued: 2 })
    a.start()
    await waitForState(a, 'ready')
    const ps = Array.from({ length: 4 }, () => a.run('echo q'))
    const settled = await Promise.allSettled(ps)
    expect(settled.filter((s) => s.status === 'rejected').map((s) => (s as PromiseRejectedResult).reason.code)).toEqual(
      ['KAY_QUEUE_FULL'],
    )
  })

  it('retries reason-2 channel refusals (MaxSessions) instead of failing the run', async () => {
    fleet.setFault(6, { maxSessions: 1 })
    const a = actorFor(6, { maxChannels: 3 })
    a.start()
    await waitForState(a, 'ready')
    const before = fleet.host(6).stats()
    const rs = await Promise.allSettled(Array.from({ length: 3 }, () => a.run('echo s')))
    const after = fleet.host(6).stats()
    expect(after.channelsRejected - before.channelsRejected).toBeGreaterThan(0)
    expect(rs.every((r) => r.status === 'fulfilled')).toBe(true)
    expect(a.state).toBe('ready')
  })

  // The signal itself is asserted against real sshd (actor.sshd.test.ts): ssh2's Server drops channel requests
  // that arrive after the client's EOF, so the simulator cannot observe it.
  it('times out a command, closes its channel and keeps the connection', async () => {
    const clock = new ManualClock()
    const a = actorFor(7, { clock })
    a.start()
    await waitForState(a, 'ready')
    const p = a.run('sleep 30', { timeoutMs: 1000 })
    await until('command started', () => fleet.host(7).stats().commands > 0, 5000)
    clock.advance(1000)
    await expect(p).rejects.toMatchObject({ code: 'KAY_TIMEOUT', host: fleet.hosts[7]!.name })
    await until('still connected', () => fleet.host(7).stats().currentConnections === 1, 5000)
    expect((await a.run('echo still')).stdout).toBe('still\n')
    expect(a.status().handshakes).toBe(1)
  })

  it('caps output with KAY_OUTPUT_LIMIT and keeps the connection', async () => {
    const a = actorFor(7)
    a.start()
    await waitForState(a, 'ready')
    await expect(a.run('flood 10000000', { maxOutputBytes: 64 * 1024 })).rejects.toMatchObject({
      code: 'KAY_OUTPUT_LIMIT',
    })
    expect((await a.run('echo ok')).stdout).toBe('ok\n')
    expect(a.status().handshakes).toBe(1)
  })

  it('reports exit codes and stderr', async () => {
    const a = actorFor(0)
    a.start()
    await waitForState(a, 'ready')
    const r = await a.run('nosuchcommand')
    expect(r.exitCode).toBe(127)
    expect(r.stderr).toContain('not found')
  })

  it('close() is idempotent, rejects in-flight runs with KAY_CLOSED and leaves no timer', async () => {
    const clock = new ManualClock()
    const a = actorFor(0, { clock })
    a.start()
    await waitForState(a, 'ready')
    const opened = fleet.host(0).stats().channelsOpened
    const p = a.run('sleep 30', { timeoutMs: 60_000 })
    await until('the command on its channel', () => fleet.host(0).stats().channelsOpened > opened, 5000)
    const rejected = expect(p).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    await Promise.all([a.close(), a.close()])
    await rejected
    await expect(a.run('echo x')).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    expect(a.state).toBe('closed')
    expect(clock.pending).toBe(0)
  })
})

describe('dial slots are released exactly once on every path', () => {
  it.each([
    ['success', {}],
    ['refused', { refuse: true }],
    ['auth failure', { passwordOnly: true }],
  ] as const)('%s', async (_name, fault) => {
    const gate = new LocalDialGate({ cap: 1 })
    fleet.setFault(1, fault)
    const a = actorFor(1, { dialGate: gate, clock: new ManualClock() })
    a.start()
    await until('dial settled', () => a.state === 'ready' || a.state === 'backoff', 5000)
    expect(gate.stats().inFlight).toBe(0)
    await a.close()
    expect(gate.stats().inFlight).toBe(0)
  })

  it('handshake deadline (stalled banner)', async () => {
    const clock = new ManualClock()
    const gate = new LocalDialGate({ cap: 1 })
    fleet.setFault(1, { stallHandshake: true })
    const a = actorFor(1, { dialGate: gate, clock, handshakeTimeoutMs: 10_000 })
    a.start()
    await until('dial started', () => fleet.host(1).stats().accepted > 0 && gate.stats().inFlight === 1, 5000)
    clock.advance(10_000)
    expect(a.state).toBe('backoff')
    expect(a.status().lastError?.code).toBe('KAY_HANDSHAKE_TIMEOUT')
    expect(gate.stats().inFlight).toBe(0)
  })

  it('close while dialing', async () => {
    const gate = new LocalDialGate({ cap: 1 })
    fleet.setFault(1, { stallHandshake: true })
    const a = actorFor(1, { dialGate: gate, clock: new ManualClock() })
    a.start()
    await until('dial started', () => gate.stats().inFlight === 1, 5000)
    await a.close()
    expect(gate.stats().inFlight).toBe(0)
  })

  it('close while waiting for a dial slot takes the dial out of the queue; a later dial is not aborted', async () => {
    const gate = new LocalDialGate({ cap: 1 })
    const held = await gate.acquire()
    const a = actorFor(1, { dialGate: gate, clock: new ManualClock() })
    a.start()
    await until('waiting for a slot', () => gate.stats().waiting === 1, 5000)
    await a.close()
    expect(gate.stats().waiting).toBe(0)
    held.release('ok')
    // The actor drops its dial's abort controller once it holds a slot: a connected actor still closes cleanly.
    const b = actorFor(2, { dialGate: gate })
    b.start()
    await waitForState(b, 'ready')
    await b.close()
    expect(b.state).toBe('closed')
    expect(gate.stats()).toMatchObject({ inFlight: 0, waiting: 0 })
  })
})

describe('trust and auth outcomes', () => {
  it('quarantines a host whose key changed and never redials it', async () => {
    const clock = new ManualClock()
    const verifier = memoryVerifier()
    const a = actorFor(3, { clock, verifier })
    a.start()
    await waitForState(a, 'ready')
    await fleet.restart(3, { newHostKey: true })
    await waitForState(a, 'backoff')
    clock.advance(60_000)
    await waitForState(a, 'quarantined')
    const st = a.status()
    expect(st.lastError?.code).toBe('KAY_HOST_KEY_MISMATCH')
    expect(st.lastError?.details).toMatchObject({ expected: [expect.stringMatching(/^SHA256:/)] })
    const hs = st.handshakes
    clock.advance(10 * 60_000)
    expect(a.status().handshakes).toBe(hs)
    await expect(a.run('echo x')).rejects.toMatchObject({ code: 'KAY_NOT_READY', details: { state: 'quarantined' } })
  })

  it('types an auth failure, never tries a password, and backs off slowly', async () => {
    const clock = new ManualClock()
    fleet.setFault(2, { passwordOnly: true })
    const a = actorFor(2, { clock, random: () => 0 })
    const pw0 = fleet.host(2).stats().passwordAttempts
    a.start()
    await waitForState(a, 'backoff')
    const st = a.status()
    expect(st.lastError?.code).toBe('KAY_AUTH_FAILED')
    expect(st.lastError?.details).toMatchObject({ methodsOffered: ['password'] })
    expect(st.nextRetryAt! - clock.now()).toBeGreaterThanOrEqual(30_000)
    expect(fleet.host(2).stats().passwordAttempts).toBe(pw0)
  })
})
