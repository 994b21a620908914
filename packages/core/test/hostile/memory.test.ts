import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { STREAM_FLAVOURS } from '../../src/collection/commands.js'
import type { ProbeResult, ProbeSpec } from './support/rss-probe.js'
import { type HostileBehaviour, type HostileServer, startHostileServer } from './support/servers.js'
import { type HostileSshServer, startHostileSshServer } from './support/ssh-servers.js'

// Invariant 11: whatever a peer sends, the memory it costs is capped in every phase, and a protocol error closes
// the connection at once with a typed error. Each case runs one actor against one hostile server in a child
// process (nothing else in it), for several rounds (redials included), and bounds the child's peak RSS above its
// baseline. Before the bound, a peer sending endless bytes after its banner grew RSS by ~170 MB/s.
const MiB = 1024 * 1024
const RSS_BOUND = 50 * MiB
const ROUNDS = 3
const probe = fileURLToPath(new URL('./support/rss-probe.ts', import.meta.url))
const coreDir = fileURLToPath(new URL('../../', import.meta.url))

const servers: Array<HostileServer | HostileSshServer> = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

function runProbe(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', '--conditions=kay-source', '--import', 'tsx', probe, JSON.stringify(spec)],
      { cwd: coreDir, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    let err = ''
    child.stdout.on('data', (b: Buffer) => {
      out += b
    })
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 16 * 1024) err += b
    })
    // The probe bounds itself; this only guards against a wedged child.
    const killer = setTimeout(() => child.kill('SIGKILL'), spec.budgetMs + 15_000)
    child.on('close', (code) => {
      clearTimeout(killer)
      const last = out.trim().split('\n').pop() ?? ''
      if (code !== 0) reject(new Error(`probe exited ${code}: ${err.trim()}`))
      else resolve(JSON.parse(last) as ProbeResult)
    })
  })
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
    servers.push(server)
    // A 60 s handshake deadline: only the protocol error can end these dials in time.
    const r = await runProbe({
      port: server.port,
      phase: 'dial',
      rounds: ROUNDS,
      handshakeTimeoutMs: 60_000,
      budgetMs: 30_000,
    })
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_PROTOCOL_ERROR'))
    expect(server.accepted).toBeGreaterThanOrEqual(ROUNDS)
    expectBounded(r)
  })

  it.each([
    ['stalls the key exchange after its banner', 'banner-then-stall'],
    ['sends a truncated KEXINIT, then stalls', 'truncated-kexinit'],
  ] as const)('a host that %s: KAY_HANDSHAKE_TIMEOUT, bounded', async (_what, behaviour: HostileBehaviour) => {
    const server = await startHostileServer(behaviour)
    servers.push(server)
    const r = await runProbe({
      port: server.port,
      phase: 'dial',
      rounds: ROUNDS,
      handshakeTimeoutMs: 500,
      budgetMs: 30_000,
    })
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_HANDSHAKE_TIMEOUT'))
    expectBounded(r)
  })

  it('a host that floods requests while stalling the user auth: KAY_HANDSHAKE_TIMEOUT, bounded', async () => {
    const server = await startHostileSshServer('auth-stall-flood')
    servers.push(server)
    const r = await runProbe({
      port: server.port,
      phase: 'dial',
      rounds: ROUNDS,
      handshakeTimeoutMs: 1500,
      budgetMs: 30_000,
    })
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_HANDSHAKE_TIMEOUT'))
    expectBounded(r)
  })

  it('a host that sends garbage once the connection is up: KAY_PROTOCOL_ERROR at once, on every redial', async () => {
    const server = await startHostileSshServer('garbage-after-auth')
    servers.push(server)
    const r = await runProbe({
      port: server.port,
      phase: 'dial',
      rounds: ROUNDS,
      handshakeTimeoutMs: 10_000,
      budgetMs: 30_000,
    })
    expect(r.lost.slice(0, ROUNDS)).toEqual(Array(ROUNDS).fill('KAY_PROTOCOL_ERROR'))
    expect(r.handshakes).toBeGreaterThanOrEqual(ROUNDS)
    expectBounded(r)
  })

  it('a host that floods requests and reads nothing: KAY_PROTOCOL_ERROR once the unsent replies pass the cap', async () => {
    const server = await startHostileSshServer('flood-unread')
    servers.push(server)
    const r = await runProbe({
      port: server.port,
      phase: 'dial',
      rounds: 1,
      handshakeTimeoutMs: 10_000,
      budgetMs: 30_000,
    })
    // The dial succeeds (the flood starts after auth); the connection is then lost to the cap.
    expect(r.lost[0]).toBe('KAY_PROTOCOL_ERROR')
    expectBounded(r)
  })

  it('an exec channel flooded without end: KAY_OUTPUT_LIMIT at the cap, the connection kept', async () => {
    const server = await startHostileSshServer('exec-flood')
    servers.push(server)
    const r = await runProbe({
      port: server.port,
      phase: 'run',
      rounds: ROUNDS,
      handshakeTimeoutMs: 10_000,
      budgetMs: 45_000,
    })
    expect(r.codes).toEqual(Array(ROUNDS).fill('KAY_OUTPUT_LIMIT'))
    expect(r.lost).toEqual([])
    expect(r.handshakes).toBe(1) // one connection served every round
    expectBounded(r)
  })

  it('collection streams flooded without end: each fails at the frame cap, ticks go on over exec', async () => {
    const server = await startHostileSshServer('exec-flood')
    servers.push(server)
    const r = await runProbe({
      port: server.port,
      phase: 'collect',
      rounds: ROUNDS,
      handshakeTimeoutMs: 10_000,
      budgetMs: 45_000,
    })
    expect(r.codes).toEqual(Array(ROUNDS).fill('ok'))
    expect(r.lost).toEqual([])
    expect(r.streamsOpened).toBe(STREAM_FLAVOURS.length) // every flavour was tried, flooded and closed
    expect(server.streams).toBe(STREAM_FLAVOURS.length)
    expect(r.streamsClosed).toBe(r.streamsOpened)
    expectBounded(r)
  })
})
