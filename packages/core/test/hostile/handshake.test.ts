import { afterEach, describe, expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { until } from '../../src/testing/index.js'
import { clientIdentity, memoryVerifier } from '../support/fixtures.js'
import { ManualClock } from '../support/manual-clock.js'
import { type HostileBehaviour, type HostileServer, startHostileServer } from './support/servers.js'

const HANDSHAKE_MS = 10_000
const identity = clientIdentity().identity
const servers: HostileServer[] = []
const actors: HostActor[] = []

afterEach(async () => {
  await Promise.all(actors.splice(0).map((a) => a.close()))
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

async function dialHostile(behaviour: HostileBehaviour) {
  const server = await startHostileServer(behaviour)
  servers.push(server)
  const clock = new ManualClock()
  const gate = new LocalDialGate({ cap: 1 })
  const actor = new HostActor({
    target: { id: `hostile-${behaviour}`, hostname: server.host, port: server.port, user: 'kay' },
    identity,
    verifier: memoryVerifier(),
    dialGate: gate,
    clock,
    random: () => 0.5,
    handshakeTimeoutMs: HANDSHAKE_MS,
    backoff: { baseMs: 1000, capMs: 10_000 },
  })
  actors.push(actor)
  return { server, clock, gate, actor }
}

/** Lets one dial attempt run until it fails by itself or only the (manual) handshake deadline can end it. */
async function failOneDial(
  server: HostileServer,
  clock: ManualClock,
  gate: LocalDialGate,
  actor: HostActor,
  attempt: number,
) {
  await until(
    `dial ${attempt} reached the server`,
    () => actor.state === 'backoff' || (server.accepted >= attempt && gate.stats().inFlight === 1),
    5000,
  )
  // Give the client a few turns of the event loop to read what the server sent (and fail on it, if it does).
  for (let i = 0; i < 20 && actor.state === 'dialing'; i++) await new Promise((r) => setTimeout(r, 2))
  const failedAlone = actor.state === 'backoff'
  if (!failedAlone) clock.advance(HANDSHAKE_MS)
  return failedAlone
}

describe('hostile hosts during the handshake', () => {
  it.each([
    ['never sends a banner', 'silent', ['KAY_HANDSHAKE_TIMEOUT']],
    // Garbage is a protocol error the moment it arrives: the dial fails at once, not at the deadline.
    ['sends 64 KiB of random bytes instead of a banner', 'garbage-burst', ['KAY_PROTOCOL_ERROR']],
    ['streams random bytes until the client hangs up', 'garbage-stream', ['KAY_PROTOCOL_ERROR']],
    ['sends a version line, then stalls the key exchange', 'banner-then-stall', ['KAY_HANDSHAKE_TIMEOUT']],
    ['sends a truncated KEXINIT, then stalls', 'truncated-kexinit', ['KAY_HANDSHAKE_TIMEOUT']],
  ] as const)(
    'a host that %s fails the dial within the deadline, frees its slot and backs off',
    async (_what, behaviour, codes) => {
      const { server, clock, gate, actor } = await dialHostile(behaviour)
      const t0 = clock.now()
      actor.start()
      const failedAlone = await failOneDial(server, clock, gate, actor, 1)
      // A protocol error ends the dial by itself; only a quiet host needs the deadline.
      expect(failedAlone).toBe(codes[0] === 'KAY_PROTOCOL_ERROR')
      expect(clock.now() - t0).toBeLessThanOrEqual(HANDSHAKE_MS)
      expect(actor.state).toBe('backoff')
      const st = actor.status()
      expect(codes).toContain(st.lastError?.code)
      expect(st.lastError?.host).toBe(actor.id)
      expect(gate.stats().inFlight).toBe(0)
      expect(st.nextRetryAt).toBe(clock.now() + 500) // full jitter, random 0.5 × base 1000
      await expect(actor.run('echo x')).rejects.toMatchObject({ code: 'KAY_NOT_READY', details: { state: 'backoff' } })
      // The client let go of the socket (no leaked connection on the server).
      await until('socket closed by the client', () => server.open === 0, 5000)

      // Not stuck: the backoff fires, the actor dials again and fails the same way, with a larger window.
      clock.advance(500)
      await failOneDial(server, clock, gate, actor, 2)
      expect(server.accepted).toBe(2)
      expect(actor.state).toBe('backoff')
      expect(actor.status().attempts).toBe(2)
      expect(actor.status().nextRetryAt).toBe(clock.now() + 1000) // 0.5 × 2000
      expect(gate.stats().inFlight).toBe(0)
      await until('second socket closed by the client', () => server.open === 0, 5000)

      await actor.close()
      expect(clock.pending).toBe(0)
      expect(gate.stats().inFlight).toBe(0)
    },
  )

  it('many actors against a silent host never hold more dial slots than the cap, and give every slot back', async () => {
    const server = await startHostileServer('silent')
    servers.push(server)
    const clock = new ManualClock()
    const gate = new LocalDialGate({ cap: 3 })
    const fleet = Array.from({ length: 10 }, (_, i) => {
      const a = new HostActor({
        target: { id: `silent-${i}`, hostname: server.host, port: server.port, user: 'kay' },
        identity,
        verifier: memoryVerifier(),
        dialGate: gate,
        clock,
        random: () => 0.999,
        handshakeTimeoutMs: HANDSHAKE_MS,
        backoff: { baseMs: 60_000, capMs: 60_000 },
      })
      actors.push(a)
      return a
    })
    for (const a of fleet) a.start()
    // Three waves of three (the cap) and a last one; each wave ends at its handshake deadline.
    for (let wave = 1; wave <= 4; wave++) {
      const expected = Math.min(10, wave * 3)
      const wanted = expected - (wave - 1) * 3
      // The previous wave's sockets close asynchronously on the server side: wait for them to be gone.
      await until(`wave ${wave} connected`, () => server.accepted === expected && server.open === wanted, 5000)
      expect(gate.stats().inFlight).toBe(wanted)
      expect(server.accepted).toBe(expected) // nobody dialed past the cap
      clock.advance(HANDSHAKE_MS)
    }
    expect(fleet.every((a) => a.state === 'backoff' && a.status().lastError?.code === 'KAY_HANDSHAKE_TIMEOUT')).toBe(
      true,
    )
    expect(gate.stats()).toMatchObject({ inFlight: 0, waiting: 0 })
    await until('every socket closed', () => server.open === 0, 5000)
  })
})
