import { afterEach, describe, expect, it } from 'vitest'
import { STREAM_FLAVOURS } from '../../src/collection/commands.js'
import { type ProbeResult, type ProbeSpec, runProbe } from './support/run-probe.js'
import { type HostileBehaviour, startHostileServer } from './support/servers.js'
import { startHostileSshServer } from './support/ssh-servers.js'

// Invariant 11: whatever a peer sends, the memory it costs is capped in every phase, and a protocol error closes
// the connection at once with a typed error. Each case runs one actor against one hostile server in a child
// process (nothing else in it), for several rounds (redials included), and bounds the child's peak RSS above its
// baseline. Before the bound, a peer sending endless bytes after its banner grew RSS by ~170 MB/s.
const MiB = 1024 * 1024
const RSS_BOUND = 50 * MiB
const ROUNDS = 3

const servers: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

/** Runs the probe against `server` (closed after the test) and checks the bound every case shares. */
async function probe<S extends { port: number; close(): Promise<void> }>(
  server: S,
  phase: ProbeSpec['phase'],
  handshakeTimeoutMs: number,
  rounds = ROUNDS,
): Promise<ProbeResult> {
  servers.push(server)
  const r = await runProbe({ port: server.port, phase, rounds, handshakeTimeoutMs, budgetMs: 45_000 })
  expectBounded(r)
  return r
}

function expectBounded(r: ProbeResult): void {
  const growth = r.peakRss - r.baselineRss
  expect(growth, `peak RSS ${(growth / MiB).toFixed(1)} MiB above baseline`).toBeLessThan(RSS_BOUND)
}

describe('a hostile peer costs bounded memory and gets a typed error, on every redial', () => {
  it.each([
    ['random bytes instead of a banner', 'garbage-stream'],
    ['a valid banner, then random bytes without end', 'banner-then-garbage'],
    ['a valid banner, then a 2 GiB packet length and zeros without end', 'huge-packet-length'],
    ['8000-byte greeting lines without end (ssh2 and OpenSSH allow 1024)', 'long-greeting'],
  ] as const)('%s: KAY_PROTOCOL_ERROR at once, the socket closed', async (_what, behaviour: HostileBehaviour) => {
    const server = await startHostileServer(behaviour)
    // A 60 s handshake deadline: only the protocol error can end these dials in time.
    const r = await probe(server, 'dial', 60_000)
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_PROTOCOL_ERROR'))
    expect(server.accepted).toBeGreaterThanOrEqual(ROUNDS)
  })

  it.each([
    ['stalls the key exchange after its banner', 'banner-then-stall'],
    ['sends a truncated KEXINIT, then stalls', 'truncated-kexinit'],
  ] as const)('a host that %s: KAY_HANDSHAKE_TIMEOUT, bounded', async (_what, behaviour: HostileBehaviour) => {
    const server = await startHostileServer(behaviour)
    const r = await probe(server, 'dial', 500)
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_HANDSHAKE_TIMEOUT'))
  })

  it('a host that floods requests while stalling the user auth: KAY_HANDSHAKE_TIMEOUT, bounded', async () => {
    const server = await startHostileSshServer('auth-stall-flood')
    const r = await probe(server, 'dial', 1500)
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_HANDSHAKE_TIMEOUT'))
  })

  it('a host that sends garbage once the connection is up: KAY_PROTOCOL_ERROR at once, on every redial', async () => {
    const server = await startHostileSshServer('garbage-after-auth')
    const r = await probe(server, 'dial', 10_000)
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_PROTOCOL_ERROR'))
    expect(r.handshakes).toBeGreaterThanOrEqual(ROUNDS)
  })

  it('a host that floods requests and reads nothing: KAY_PROTOCOL_ERROR once the unsent replies pass the cap', async () => {
    const server = await startHostileSshServer('flood-unread')
    const r = await probe(server, 'dial', 10_000, 1)
    // The dial succeeds (the flood starts after auth); the connection is then lost to the cap.
    expect(r.lost[0]).toBe('KAY_PROTOCOL_ERROR')
  })

  it('an exec channel flooded without end: KAY_OUTPUT_LIMIT at the cap, the connection kept', async () => {
    const server = await startHostileSshServer('exec-flood')
    const r = await probe(server, 'run', 10_000)
    expect(r.codes).toEqual(Array(ROUNDS).fill('KAY_OUTPUT_LIMIT'))
    expect(r.lost).toEqual([])
    expect(r.handshakes).toBe(1) // one connection served every round
  })

  it('collection streams flooded without end: each fails at the frame cap, ticks go on over exec', async () => {
    const server = await startHostileSshServer('exec-flood')
    const r = await probe(server, 'collect', 10_000)
    expect(r.codes).toEqual(Array(ROUNDS).fill('ok'))
    expect(r.lost).toEqual([])
    // Every probe tried every flavour, each flooded and closed (the collector may probe again after a jittered wait).
    expect(r.streamsOpened).toBeGreaterThanOrEqual(STREAM_FLAVOURS.length)
    expect(r.streamsOpened % STREAM_FLAVOURS.length).toBe(0)
    expect(server.streams).toBe(r.streamsOpened)
    expect(r.streamsClosed).toBe(r.streamsOpened)
  })
})
