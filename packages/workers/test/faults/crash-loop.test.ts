import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateClientKey, type SimFleet, startSimFleet } from '@kay/core/sim'
import { until } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Supervisor } from '../../src/supervisor.js'

const HOSTS = 40
let dir: string
let fleet: SimFleet
let sup: Supervisor

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-crash-'))
  const key = generateClientKey()
  fleet = await startSimFleet({ hosts: HOSTS, authorizedKeys: [key.publicKey] })
  sup = await Supervisor.start({
    hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })),
    threads: 2,
    testHooks: true,
    identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
    trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    backoff: { baseMs: 50, capMs: 500, stableAfterMs: 10_000 },
    restart: { intensity: 8, periodMs: 60_000 },
    handshakeTimeoutMs: 1000,
    dialCap: 8,
  })
})

afterAll(async () => {
  await sup?.stop({ timeoutMs: 2000 })
  await fleet?.close()
  await rm(dir, { recursive: true, force: true })
})

const allReady = () =>
  until(`all ${HOSTS} hosts ready`, async () => ((await sup.refreshStats()).byState.ready ?? 0) === HOSTS, 20_000)

const handshakesByHost = () => new Map(fleet.stats().hosts.map((h) => [h.name, h.handshakesStarted]))

describe('a shard worker killed again and again, within the restart intensity', () => {
  it('re-creates every host after each crash with exactly one new connection each, and leaks no dial slot', async () => {
    await allReady()
    await until('one connection per host', () => fleet.stats().hosts.every((h) => h.currentConnections === 1), 20_000)
    const crashes = ['terminate', 'throw', 'exit', 'terminate', 'throw', 'exit'] as const
    for (const [n, how] of crashes.entries()) {
      const victim = n % 2
      const victimHosts = new Set(fleet.hosts.map((h) => h.name).filter((name) => sup.shardOf(name) === victim))
      expect(victimHosts.size).toBeGreaterThan(0)
      const before = handshakesByHost()
      const restarted = new Promise<{ shard: number }>((r) => sup.once('shard-restart', r))
      sup.crashShard(victim, how)
      expect((await restarted).shard).toBe(victim)
      await allReady()
      // The dead shard's sockets are gone and its hosts hold exactly one new connection each.
      await until(
        `crash ${n}: old sockets closed`,
        () => fleet.stats().hosts.every((h) => h.currentConnections === 1),
        20_000,
      )
      await until(`crash ${n}: dial slots back`, () => sup.stats().dialsInFlight === 0, 20_000)
      const after = handshakesByHost()
      for (const [host, count] of after) {
        expect({ host, grew: count - before.get(host)! }).toEqual({ host, grew: victimHosts.has(host) ? 1 : 0 })
      }
      // A collect right after reaches every host with data.
      const tick = await sup.collect({ timeoutMs: 10_000 })
      expect(tick.hosts).toHaveLength(HOSTS)
      expect(tick.hosts.filter((h) => h.metrics).length).toBe(HOSTS)
    }
    const st = sup.stats()
    expect(st.restarts).toBe(crashes.length)
    expect(st.dialsInFlight).toBe(0)
    expect(st.dialsWaiting).toBe(0)
    expect(fleet.stats().totals.currentConnections).toBe(HOSTS)
  }, 120_000)

  it('reclaims the dial slots of a shard killed with dials in flight', async () => {
    await allReady()
    const restartsBefore = sup.stats().restarts
    for (let i = 0; i < HOSTS; i++) fleet.setFault(i, { stallHandshake: true })
    for (let i = 0; i < HOSTS; i++) fleet.drop(i)
    // Every host redials into a stalled handshake: the cap fills up across both shards.
    await until('dial cap full of stalled dials', () => sup.stats().dialsInFlight === 8, 20_000)
    const restarted = new Promise((r) => sup.once('shard-restart', r))
    sup.crashShard(0, 'terminate')
    await restarted
    expect(sup.stats().dialsInFlight).toBeLessThanOrEqual(8)
    for (let i = 0; i < HOSTS; i++) fleet.setFault(i, { stallHandshake: false })
    await allReady()
    await until("every slot back, the dead shard's included", () => sup.stats().dialsInFlight === 0, 20_000)
    expect(sup.stats()).toMatchObject({ dialsInFlight: 0, dialsWaiting: 0, restarts: restartsBefore + 1 })
    expect(fleet.stats().maxConcurrentHandshakes).toBeLessThanOrEqual(8)
    await until('one connection per host', () => fleet.stats().hosts.every((h) => h.currentConnections === 1), 20_000)
  }, 60_000)
})
