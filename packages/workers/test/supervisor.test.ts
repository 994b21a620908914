import { execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Worker } from 'node:worker_threads'
import type { HostTarget } from '@kay/core'
import { generateClientKey, type SimFleet, startSimFleet } from '@kay/core/sim'
import { until } from '@kay/core/testing'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { defaultThreads, HOSTS_PER_SHARD, Supervisor, type SupervisorOptions } from '../src/supervisor.js'

const execFileP = promisify(execFile)

let dir: string
let key: ReturnType<typeof generateClientKey>
const running: Supervisor[] = []
const fleets: SimFleet[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-sup-'))
  key = generateClientKey()
})

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop({ timeoutMs: 2000 })))
  await Promise.all(fleets.splice(0).map((f) => f.close()))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function fleetOf(n: number, opts: Partial<Parameters<typeof startSimFleet>[0]> = {}) {
  const f = await startSimFleet({ hosts: n, authorizedKeys: [key.publicKey], ...opts })
  fleets.push(f)
  return f
}

function targets(f: SimFleet): HostTarget[] {
  return f.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' }))
}

let pinFile = 0
async function supervise(f: SimFleet, opts: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  const sup = await Supervisor.start({
    hosts: targets(f),
    threads: 2,
    identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
    trust: { knownHostsPath: join(dir, `known_hosts.${++pinFile}`), policy: 'accept-new' },
    backoff: { baseMs: 50, capMs: 500, stableAfterMs: 10_000 },
    ...opts,
  })
  running.push(sup)
  return sup
}

/** Hosts collecting over a stream, in any flavour. */
const streaming = (st: { byMode: Record<string, number> }) =>
  Object.entries(st.byMode).reduce((n, [mode, k]) => n + (mode.startsWith('stream-') ? k : 0), 0)

async function allReady(sup: Supervisor, n: number, ms = 60_000): Promise<void> {
  await until(
    `${n} hosts ready`,
    async () => {
      const st = await sup.refreshStats()
      if ((st.byState.ready ?? 0) === n) return true
      // Thrown, not returned: past the deadline, until() names the last one.
      throw new Error(
        `not all ready: ${JSON.stringify(st.byState)} ${JSON.stringify(
          sup
            .statuses()
            .filter((s) => s.state !== 'ready')
            .map((s) => [s.id, s.state, s.lastError?.code, s.lastError?.message]),
        )}`,
      )
    },
    { timeoutMs: ms, everyMs: 20 },
  )
}

describe('defaultThreads', () => {
  it('is one shard per HOSTS_PER_SHARD hosts, at most one per core, at least one', () => {
    expect(HOSTS_PER_SHARD).toBe(1000)
    expect([0, 1, 999, 1000].map((n) => defaultThreads(n, 8))).toEqual([1, 1, 1, 1])
    expect([1001, 2000, 2001, 10_000].map((n) => defaultThreads(n, 8))).toEqual([2, 2, 3, 8])
    expect([1, 5000, 100_000].map((n) => defaultThreads(n, 1))).toEqual([1, 1, 1])
    expect(defaultThreads(100_000, 2)).toBe(2)
  })
})

describe('Supervisor with the simulator', () => {
  it('sizes its shards to the fleet when threads is not given: 12 hosts on one shard', async () => {
    const f = await fleetOf(12)
    const sup = await Supervisor.start({
      hosts: targets(f),
      identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
      trust: { knownHostsPath: join(dir, `known_hosts.${++pinFile}`), policy: 'accept-new' },
    })
    running.push(sup)
    expect(sup.stats().shards).toBe(1)
    await allReady(sup, 12, 15_000)
    const tick = await sup.collect({ timeoutMs: 10_000 })
    expect(tick.hosts.filter((h) => h.metrics).length).toBe(12)
  })

  it.each([1, 4, 16])(
    'connects 1,000 hosts over 2 shards with dial cap %i: never more concurrent handshakes than the cap, one each',
    async (cap) => {
      const f = await fleetOf(1000)
      const sup = await supervise(f, { dialCap: cap })
      await allReady(sup, 1000, 120_000)
      const s = f.stats()
      expect(s.maxConcurrentHandshakes).toBeLessThanOrEqual(cap)
      expect(s.maxConcurrentHandshakes).toBeGreaterThanOrEqual(1)
      expect(s.hosts.every((h) => h.handshakesStarted === 1)).toBe(true)
      // Collects reuse the connections.
      for (let i = 0; i < 3; i++) {
        const tick = await sup.collect({ timeoutMs: 10_000 })
        expect(tick.hosts).toHaveLength(1000)
        expect(new Set(tick.hosts.map((h) => h.host)).size).toBe(1000)
        expect(tick.hosts.filter((h) => h.metrics).length).toBe(1000)
      }
      expect(f.stats().totals.handshakesStarted).toBe(1000)
      expect(sup.stats().dialsInFlight).toBe(0)
    },
    180_000,
  )

  it('reports every host in every tick: data for ready hosts, typed errors for the rest', async () => {
    const f = await fleetOf(20, { hostOverrides: { 3: { refuse: true }, 7: { procFault: 'binary' } } })
    const sup = await supervise(f, { collectMode: 'exec' })
    await allReady(sup, 19, 15_000)
    const tick = await sup.collect()
    expect(tick.hosts).toHaveLength(20)
    const byHost = new Map(tick.hosts.map((h) => [h.host, h]))
    expect(byHost.get(f.hosts[3]!.name)?.error?.code).toBe('KAY_NOT_READY')
    expect(byHost.get(f.hosts[7]!.name)?.error?.code).toBe('KAY_PARSE_ERROR')
    expect(tick.hosts.filter((h) => h.metrics).length).toBe(18)
  })

  it('costs one round trip per shard per tick: the collect reply carries every status and counter', async () => {
    const f = await fleetOf(8)
    const sup = await supervise(f)
    await allReady(sup, 8, 15_000)
    for (let i = 0; i < 50 && streaming(await sup.refreshStats()) < 8; i++) await sup.collect({ timeoutMs: 5000 })
    const posted: string[] = []
    const original = Worker.prototype.postMessage
    const post = vi.spyOn(Worker.prototype, 'postMessage').mockImplementation(function (this: Worker, m, t) {
      posted.push((m as { type: string }).type)
      return original.call(this, m, t)
    })
    let tick: Awaited<ReturnType<Supervisor['collect']>>
    try {
      tick = await sup.collect({ timeoutMs: 5000 })
    } finally {
      post.mockRestore()
    }
    expect(posted).toEqual(['collect', 'collect'])
    expect(tick.hosts.filter((h) => h.metrics)).toHaveLength(8)
    // What the tick leaves in stats() and statuses() is what a status round trip says.
    const pick = (st: ReturnType<Supervisor['stats']>) => {
      const { hosts, byState, byMode, handshakes, droppedFrames } = st
      return { hosts, byState, byMode, handshakes, droppedFrames }
    }
    const key = (xs: ReturnType<Supervisor['statuses']>) =>
      xs.map((s) => `${s.id} ${s.state} ${s.handshakes} ${s.collectMode} ${s.collectPhase}`).sort()
    const fromTick = { stats: pick(sup.stats()), statuses: key(sup.statuses()) }
    expect(fromTick.stats).toMatchObject({ hosts: 8, byState: { ready: 8 }, handshakes: 8 })
    expect(streaming(fromTick.stats)).toBe(8)
    expect(pick(await sup.refreshStats())).toEqual(fromTick.stats)
    expect(key(sup.statuses())).toEqual(fromTick.statuses)
  })

  it('probes the configured stream flavours in the shards (collectFlavours), perl first by default', async () => {
    const f = await fleetOf(6)
    const pinned = await supervise(f, { collectFlavours: ['sh'] })
    const byDefault = await supervise(f)
    for (const [sup, mode] of [
      [pinned, 'stream-sh'],
      [byDefault, 'stream-perl'],
    ] as const) {
      await allReady(sup, 6, 15_000)
      await until(
        `every host on ${mode}`,
        async () => {
          await sup.collect({ timeoutMs: 5000 })
          return ((await sup.refreshStats()).byMode[mode] ?? 0) === 6
        },
        15_000,
      )
      expect((await sup.refreshStats()).byMode).toEqual({ [mode]: 6 })
    }
  })

  it('runs, execs and drills in over the pooled connections without new handshakes', async () => {
    const f = await fleetOf(30)
    const sup = await supervise(f)
    await allReady(sup, 30)
    const h0 = f.stats().totals.handshakesStarted
    const one = await sup.run(f.hosts[0]!.name, 'hostname')
    expect(one.stdout.trim()).toBe(f.hosts[0]!.name)
    const seen = new Map<string, string>()
    for await (const r of sup.exec(
      f.hosts.map((h) => h.name),
      'hostname',
    )) {
      seen.set(r.host, r.result!.stdout.trim())
    }
    expect(seen.size).toBe(30)
    for (const [host, out] of seen) expect(out).toBe(host)
    const detail = await sup.runner(f.hosts[1]!.name).detail()
    expect(detail.processes.length).toBeGreaterThan(0)
    expect(f.stats().totals.handshakesStarted).toBe(h0)
    await expect(sup.run('nope', 'echo')).rejects.toMatchObject({ code: 'KAY_UNKNOWN_HOST' })
  })

  it.each(['terminate', 'throw'] as const)(
    'restarts a shard killed mid-collect (%s): callers get KAY_SHARD_RESTARTED, other shards stay up',
    async (how) => {
      const f = await fleetOf(60)
      const sup = await supervise(f, { testHooks: true })
      await allReady(sup, 60)
      const victim = sup.shardOf(f.hosts[0]!.name)
      const victimHosts = new Set(f.hosts.map((h) => h.name).filter((n) => sup.shardOf(n) === victim))
      const otherBefore = f
        .stats()
        .hosts.filter((h) => !victimHosts.has(h.name))
        .map((h) => h.handshakesStarted)
      const restarted = new Promise((r) => sup.once('shard-restart', r))
      const tickP = sup.collect({ timeoutMs: 10_000 })
      sup.crashShard(victim, how)
      const tick = await tickP
      await restarted
      expect(tick.hosts).toHaveLength(60)
      const victimResults = tick.hosts.filter((h) => victimHosts.has(h.host))
      // Either the shard answered before dying, or every one of its hosts carries KAY_SHARD_RESTARTED.
      expect(victimResults.every((h) => h.metrics || h.error?.code === 'KAY_SHARD_RESTARTED')).toBe(true)
      await allReady(sup, 60)
      const otherAfter = f
        .stats()
        .hosts.filter((h) => !victimHosts.has(h.name))
        .map((h) => h.handshakesStarted)
      expect(otherAfter).toEqual(otherBefore)
      // No duplicate connections after restart: one live connection per host.
      await until('old connections closed', () => f.stats().hosts.every((h) => h.currentConnections === 1), 10_000)
      expect(sup.stats().dialsInFlight).toBe(0)
      expect(sup.stats().restarts).toBe(1)
    },
    60_000,
  )

  it('stops itself with KAY_SUPERVISOR_FATAL when shards crash past the restart intensity', async () => {
    const f = await fleetOf(4)
    const sup = await supervise(f, { testHooks: true, threads: 1, restart: { intensity: 2, periodMs: 60_000 } })
    const fatal = new Promise<{ code: string }>((r) => sup.once('fatal', r))
    for (let i = 0; i < 3; i++) {
      const restarted = new Promise((r) => sup.once('shard-restart', r))
      sup.crashShard(0, 'exit')
      if (i < 2) await restarted
    }
    expect((await fatal).code).toBe('KAY_SUPERVISOR_FATAL')
    await expect(sup.collect()).rejects.toMatchObject({ code: 'KAY_SUPERVISOR_FATAL' })
  })

  it('lowers dial concurrency under MaxStartups pushback and still connects every host', async () => {
    const f = await fleetOf(120, { sharedMaxStartups: 3 })
    const sup = await supervise(f, { dialCap: 16, backoff: { baseMs: 20, capMs: 300, stableAfterMs: 10_000 } })
    await allReady(sup, 120, 60_000)
    const st = sup.stats()
    expect(st.pressureEvents).toBeGreaterThan(0)
    expect(st.effectiveDialCap).toBeLessThan(16)
    expect(f.stats().totals.handshakesCompleted).toBe(120)
  })

  it('adds and removes hosts while collecting', async () => {
    const f = await fleetOf(40)
    const all = targets(f)
    const sup = await Supervisor.start({
      hosts: all.slice(0, 20),
      threads: 2,
      identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
      trust: { knownHostsPath: join(dir, 'known_hosts.addrm'), policy: 'accept-new' },
    })
    running.push(sup)
    await allReady(sup, 20)
    const tickP = sup.collect()
    expect(sup.add(all.slice(20))).toHaveLength(20)
    sup.remove(all.slice(0, 10).map((h) => h.id))
    await tickP
    await allReady(sup, 30)
    const tick = await sup.collect()
    expect(tick.hosts.map((h) => h.host).sort()).toEqual(
      all
        .slice(10)
        .map((h) => h.id)
        .sort(),
    )
    await until(
      'removed hosts closed',
      () =>
        f
          .stats()
          .hosts.slice(0, 10)
          .every((h) => h.currentConnections === 0),
      10_000,
    )
  })

  it('stop() with hosts mid-dial leaves no thread, socket or timer behind', async () => {
    const f = await fleetOf(50, { hostDefaults: { stallHandshake: true } })
    const before = resourceCounts()
    const sup = await supervise(f, { dialCap: 8 })
    await until('dials in flight', () => f.stats().currentHandshakes === 8, 10_000)
    await sup.stop({ timeoutMs: 2000 })
    await until('sockets closed', () => f.stats().totals.currentConnections === 0, 10_000)
    const after = resourceCounts()
    expect(after.Worker ?? 0).toBe(before.Worker ?? 0)
    expect(after.TCPSocketWrap ?? 0).toBeLessThanOrEqual(before.TCPSocketWrap ?? 0)
    expect(after.Timeout ?? 0).toBeLessThanOrEqual((before.Timeout ?? 0) + 1)
  })
})

function resourceCounts(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1
  return out
}

describe('pinned events', () => {
  it('reports pins made before the first listener attached', async () => {
    const f = await fleetOf(6)
    const sup = await supervise(f)
    await allReady(sup, 6)
    const seen: string[] = []
    sup.on('pinned', (p) => seen.push(p.host))
    await until('early pins replayed', () => seen.length === 6, 10_000)
    expect(seen.sort()).toEqual(f.hosts.map((h) => h.name).sort())
  })
})

describe('per-host identities', () => {
  it("offers the fleet's inline keys, then a host's own IdentityFile keys", async () => {
    const hostKey = generateClientKey()
    const keyFile = join(dir, 'per-host-key')
    await writeFile(keyFile, hostKey.privateKey, { mode: 0o600 })
    const f = await startSimFleet({ hosts: 2, authorizedKeys: [hostKey.publicKey] })
    fleets.push(f)
    const [a, b] = targets(f)
    const sup = await Supervisor.start({
      hosts: [{ ...a!, identityFiles: [keyFile] }, b!],
      threads: 1,
      identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] }, // not authorised on this fleet
      trust: { knownHostsPath: join(dir, 'known_hosts.perhost'), policy: 'accept-new' },
      backoff: { baseMs: 50, capMs: 500, stableAfterMs: 10_000 },
    })
    running.push(sup)
    await until(
      `${a!.id} ready, ${b!.id} KAY_AUTH_FAILED`,
      () => {
        const st = new Map(sup.statuses().map((s) => [s.id, s]))
        return st.get(a!.id)?.state === 'ready' && st.get(b!.id)?.lastError?.code === 'KAY_AUTH_FAILED'
      },
      10_000,
    )
  })

  it("lets a host's IdentityFile replace the fleet's key files, as ssh's IdentityFile replaces its default keys", async () => {
    const fleetFile = join(dir, 'fleet-key')
    const otherFile = join(dir, 'other-key')
    await writeFile(fleetFile, key.privateKey, { mode: 0o600 })
    await writeFile(otherFile, generateClientKey().privateKey, { mode: 0o600 })
    const f = await fleetOf(2) // authorises the fleet key only
    const [a, b] = targets(f)
    const sup = await supervise(f, {
      hosts: [{ ...a!, identityFiles: [otherFile] }, b!],
      identity: { username: 'kay', keyFiles: [fleetFile] },
    })
    await until(
      'b ready with the fleet key',
      () => sup.statuses().find((s) => s.id === b!.id)?.state === 'ready',
      10_000,
    )
    await until(
      'a refused',
      () => sup.statuses().find((s) => s.id === a!.id)?.lastError?.code === 'KAY_AUTH_FAILED',
      10_000,
    )
    // a offered only its own key: the fleet's file is not added to a host that names its keys.
    expect(sup.statuses().find((s) => s.id === a!.id)?.lastError?.details).toMatchObject({ keysTried: [otherFile] })
  })

  it('with IdentitiesOnly offers only the agent key matching the host IdentityFile (via .pub), as ssh does', async () => {
    const sock = join(dir, 'idonly-agent.sock')
    const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' })
    try {
      await until('agent socket', () => existsSync(sock), 10_000)
      // Three keys the hosts refuse, added first so that the agent lists them first, then the one they accept.
      const add = async (name: string, k: ReturnType<typeof generateClientKey>) => {
        const path = join(dir, name)
        await writeFile(path, k.privateKey, { mode: 0o600 })
        await execFileP('ssh-add', ['-q', path], { env: { ...process.env, SSH_AUTH_SOCK: sock } })
        return path
      }
      for (let i = 0; i < 3; i++) await add(`idonly-other${i}`, generateClientKey())
      const wanted = generateClientKey()
      const wantedPath = await add('idonly-wanted', wanted)
      await writeFile(`${wantedPath}.pub`, `${wanted.publicKey}\n`)
      await execFileP('ssh-keygen', ['-q', '-p', '-N', 'secret', '-f', wantedPath]) // usable only through the agent
      const f = await fleetOf(3, { authorizedKeys: [wanted.publicKey] })
      const [a, b, c] = targets(f)
      const sup = await supervise(f, {
        hosts: [
          { ...a!, identityFiles: [wantedPath], identitiesOnly: true },
          { ...b!, identityFiles: [wantedPath] },
          { ...c!, identityAgent: 'none' }, // IdentityAgent none: the fleet's agent is not used for this host
        ],
        identity: { username: 'kay', keyFiles: [], keys: [key.privateKey], agent: sock }, // inline key: refused
      })
      await allReady(sup, 2, 10_000)
      const failures = f
        .stats()
        .hosts.slice(0, 2)
        .map((h) => h.authFailures)
      // a: the inline key, then only the matching agent key. b: the inline key, then every agent key in order.
      expect(failures).toEqual([1, 4])
      await until(
        'c refused',
        () => sup.statuses().find((s) => s.id === c!.id)?.lastError?.code === 'KAY_AUTH_FAILED',
        10_000,
      )
      expect(sup.statuses().find((s) => s.id === c!.id)?.lastError?.details).toMatchObject({
        keysTried: ['inline key #1'],
      })
    } finally {
      agent.kill('SIGTERM')
    }
  })
})

describe('dial rate', () => {
  it('spreads redials of a fleet-wide outage to the dial rate, whatever the dial cap', async () => {
    const attemptsIn = async (dialRate: number) => {
      const f = await fleetOf(300, { hostDefaults: { refuse: true } })
      const sup = await supervise(f, {
        dialCap: 16,
        dialRate,
        backoff: { baseMs: 20, capMs: 100, stableAfterMs: 10_000 },
      })
      const t0 = Date.now()
      await until('window', () => Date.now() - t0 >= 1500, 5000)
      const n = f.stats().totals.accepted
      await sup.stop()
      return n
    }
    const limited = await attemptsIn(100) // 2 shards × (50 burst + 50/s × 1.5 s) = 250 at most
    const unlimited = await attemptsIn(0)
    expect(limited).toBeGreaterThan(100)
    expect(limited).toBeLessThanOrEqual(260)
    expect(unlimited).toBeGreaterThan(2 * limited)
  }, 30_000)
})
