/**
 * Half-open paths against real OpenSSH sshd running in a network namespace this test creates (and deletes):
 * the path is cut without closing any socket, and the idle-only keepalive probe must notice within
 * interval + deadline; a slow but alive host must not be declared dead. Needs root (CI runs as root).
 *
 * The actor's timers (keepalive interval, probe deadline, handshake deadline, backoff) run on a manual clock that
 * the test moves in small steps, so the intervals below are simulated time; the network, sshd and the kernel's
 * TCP are real and get the event loop between steps.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor, type HostActorOptions } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import {
  type ClientKey,
  createNetns,
  descendantsOf,
  makeClientKey,
  type NetNamespace,
  type NetnsSshd,
  netnsAvailable,
  processTable,
  requireSshd,
  SSHD_LOG,
  startSshdInNetns,
  until,
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import type { HostStatus, Identity } from '../../src/types.js'
import { memoryVerifier, waitForState, waitForStatus } from '../support/fixtures.js'
import { ManualClock } from '../support/manual-clock.js'

const INTERVAL_MS = 400
const DEADLINE_MS = 300
/** Slack on the simulated detection time: the step size of `stepUntil` and one idle interval's phase. */
const MARGIN_MS = 400
/** Simulated time per step of the manual clock. */
const STEP_MS = 20

let dir: string
let key: ClientKey
let identity: Identity
let ns: NetNamespace | undefined
let srv: NetnsSshd | undefined
const actors: HostActor[] = []

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  if (!netnsAvailable()) throw new Error('half-open tests need root and iproute2 (ip netns); CI runs them as root')
  dir = await mkdtemp(join(tmpdir(), 'kay-halfopen-'))
  key = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
  ns = await createNetns()
  srv = await startSshdInNetns(ns, { authorizedKeys: [key.publicKey] })
})

afterAll(async () => {
  await Promise.all(actors.splice(0).map((a) => a.close()))
  await srv?.stop().catch(() => undefined)
  await ns?.destroy()
  if (dir) await rm(dir, { recursive: true, force: true })
})

function actorFor(clock: ManualClock, extra: Partial<HostActorOptions>): HostActor {
  const a = new HostActor({
    target: { id: 'netns-host', hostname: srv!.host, port: srv!.port, user: srv!.user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
    backoff: { baseMs: 50, capMs: 300 },
    handshakeTimeoutMs: 1000,
    clock,
    random: () => 0.5,
    ...extra,
  })
  actors.push(a)
  return a
}

/** One macrotask: lets sockets, sshd's replies and child processes be seen between clock steps. */
const tick = () => new Promise<void>((r) => setImmediate(r))

/**
 * Moves the manual clock in STEP_MS steps until `pred` holds for the actor's status (checked after each step and
 * its I/O), at most `maxMs` of simulated time; returns the simulated time it took. With `waitDials`, a dial in
 * progress is awaited in real time instead of being timed out by the clock (the path is up: it will finish).
 */
async function stepUntil(
  a: HostActor,
  clock: ManualClock,
  pred: (s: HostStatus) => boolean,
  maxMs: number,
  what: string,
  waitDials = false,
): Promise<number> {
  const start = clock.now()
  await tick()
  while (!pred(a.status())) {
    if (clock.now() - start > maxMs) throw new Error(`${a.id}: no ${what} within ${maxMs} ms simulated (${a.state})`)
    if (waitDials && a.state === 'dialing') {
      await waitForStatus(a, (s) => s.state !== 'dialing', 5000, 'the dial to end')
      continue
    }
    clock.advance(STEP_MS)
    await tick()
  }
  return clock.now() - start
}

describe('half-open path to a real sshd in a network namespace', () => {
  it('detects a silently dropped path within interval + deadline, then redials once the path heals', async () => {
    const clock = new ManualClock()
    const a = actorFor(clock, { keepaliveIntervalMs: INTERVAL_MS, probeDeadlineMs: DEADLINE_MS })
    a.start()
    await waitForState(a, 'ready', 5000)
    // At least one probe answered over the veth: the keepalive loop is running before the cut.
    clock.advance(INTERVAL_MS)
    await until('a first probe reply', () => a.status().rttMs !== undefined, 2000)

    await ns!.cut()
    const elapsed = await stepUntil(
      a,
      clock,
      (s) => s.lastError?.code === 'KAY_KEEPALIVE_TIMEOUT',
      4 * (INTERVAL_MS + DEADLINE_MS),
      'KAY_KEEPALIVE_TIMEOUT',
    )
    // The probe waits its whole deadline; it is sent at most one idle interval after the cut.
    expect(elapsed).toBeGreaterThanOrEqual(DEADLINE_MS - 20)
    expect(elapsed).toBeLessThanOrEqual(INTERVAL_MS + DEADLINE_MS + MARGIN_MS)
    expect(a.status().state).toBe('backoff')
    // Fail fast while down: no waiting for a dial that cannot succeed.
    await expect(a.run('true')).rejects.toMatchObject({ code: 'KAY_NOT_READY' })

    // While cut, redials time out at the SYN (never reach sshd): still exactly one accepted connection.
    await stepUntil(a, clock, (s) => s.lastError?.code === 'KAY_HANDSHAKE_TIMEOUT', 5000, 'KAY_HANDSHAKE_TIMEOUT')
    expect(await srv!.count(SSHD_LOG.acceptedPublickey)).toBe(1)

    await ns!.heal()
    await stepUntil(a, clock, (s) => s.state === 'ready', 8000, 'ready after the heal', true)
    expect((await a.run('echo healed')).stdout).toBe('healed\n')
    expect(await srv!.count(SSHD_LOG.acceptedPublickey)).toBe(2)
    expect(a.status().handshakes).toBeGreaterThanOrEqual(2)
    await a.close()
  })

  it('keeps a slow but alive host ready when replies come late but within the probe deadline', async () => {
    const interval = 400
    const deadline = 1000
    const clock = new ManualClock()
    const a = actorFor(clock, { keepaliveIntervalMs: interval, probeDeadlineMs: deadline })
    const states: string[] = []
    a.on('state', (s) => states.push(s.state))
    a.start()
    await waitForState(a, 'ready', 5000)
    clock.advance(interval)
    await until('a first probe reply', () => a.status().rttMs !== undefined, 2000)
    states.length = 0
    let maxRtt = 0
    const track = () => {
      maxRtt = Math.max(maxRtt, a.status().rttMs ?? 0)
    }

    const netem = await ns!.netemAvailable()
    if (netem) {
      // Real path delay: 300 ms one way on the root side of the veth. The clock follows real time while the probe
      // is in flight, so its round trip reads as the path's.
      await ns!.setDelay(300)
      try {
        const before = a.status().rttMs
        clock.advance(interval)
        while (a.status().rttMs === before && a.state === 'ready') {
          await new Promise((r) => setTimeout(r, 5))
          clock.advance(5)
        }
        track()
      } finally {
        await ns!.clearDelay()
      }
    } else {
      // No sch_netem on this kernel: make the host slow instead. Freeze the connection's sshd processes (the kernel
      // still acks TCP, the bytes wait in the socket) while a probe is sent and simulated time runs on for less
      // than the deadline; the reply comes once they are thawed, that late.
      const conn = descendantsOf(await processTable(), srv!.pid).map((p) => p.pid)
      expect(conn.length).toBeGreaterThan(0)
      for (const frozenMs of [700, 720, 740]) {
        for (const pid of conn) process.kill(pid, 'SIGSTOP')
        try {
          clock.advance(interval) // the idle interval is up: a probe goes out
          for (let t = 0; t < frozenMs; t += STEP_MS) {
            clock.advance(STEP_MS)
            await tick()
          }
        } finally {
          for (const pid of conn) process.kill(pid, 'SIGCONT')
        }
        await until(`the probe answered ${frozenMs} ms late`, () => a.status().rttMs === frozenMs, 2000)
        track()
      }
    }
    track()
    // Probes really were slow (so the test exercised the deadline), and nobody declared the host dead.
    expect(maxRtt).toBeGreaterThanOrEqual(netem ? 250 : 150)
    expect(maxRtt).toBeLessThan(deadline)
    expect(states).toEqual([])
    expect(a.state).toBe('ready')
    expect(a.status().handshakes).toBe(1)
    expect((await a.run('echo alive')).stdout).toBe('alive\n')
    await a.close()
  })
})
