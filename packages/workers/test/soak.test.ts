import { readdirSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateClientKey, type RemoteSimFleet, seededRandom, spawnSimFleet } from '@kay/core/sim'
import { until } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Supervisor } from '../src/supervisor.js'

/** CI-short by default; KAY_SOAK_SECONDS=3600 makes it a real soak. */
const SECONDS = Math.max(10, Number(process.env.KAY_SOAK_SECONDS ?? 35) || 35)
const HOSTS = 500
const TICK_MS = 200
/** 2 % of the fleet loses its connection per tick window. */
const DROPS_PER_TICK = Math.ceil(HOSTS * 0.02)
const MiB = 1024 * 1024

let dir: string
let fleet: RemoteSimFleet
let sup: Supervisor

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-soak-'))
  const key = generateClientKey()
  // The fleet runs in its own process, so the numbers below are the collector's own.
  fleet = await spawnSimFleet({ hosts: HOSTS, authorizedKeys: [key.publicKey] })
  sup = await Supervisor.start({
    hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })),
    threads: 2,
    identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
    trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    backoff: { baseMs: 50, capMs: 1000, stableAfterMs: 5000 },
  })
})

afterAll(async () => {
  await sup?.stop({ timeoutMs: 3000 })
  await fleet?.close()
  await rm(dir, { recursive: true, force: true })
})

interface Sample {
  t: number
  rss: number
  heap: number
  handles: number
  fds: number
}

function sample(t: number): Sample {
  const m = process.memoryUsage()
  return {
    t,
    rss: m.rss,
    heap: m.heapUsed,
    handles: process.getActiveResourcesInfo().length,
    fds: readdirSync('/proc/self/fd').length,
  }
}

/** Least-squares slope of `y` over `t` (units of y per ms). */
function slope(points: Sample[], y: (s: Sample) => number): number {
  const n = points.length
  const mt = points.reduce((a, p) => a + p.t, 0) / n
  const my = points.reduce((a, p) => a + y(p), 0) / n
  let num = 0
  let den = 0
  for (const p of points) {
    num += (p.t - mt) * (y(p) - my)
    den += (p.t - mt) ** 2
  }
  return den === 0 ? 0 : num / den
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

describe(`soak: ${HOSTS} hosts, a tick every ${TICK_MS} ms for ${SECONDS} s, ${DROPS_PER_TICK} connections lost per tick`, () => {
  it(
    'answers every host on every tick and shows no growth in memory, handles or descriptors',
    async () => {
      await until('fleet ready', async () => ((await sup.refreshStats()).byState.ready ?? 0) === HOSTS, 60_000)
      const random = seededRandom(20_261_127) // deterministic, so a failing run can be replayed
      const samples: Sample[] = []
      const counts = { ticks: 0, results: 0, metrics: 0, errors: {} as Record<string, number> }
      let maxDials = 0
      const t0 = Date.now()
      const end = t0 + SECONDS * 1000
      let nextTick = t0
      while (Date.now() < end) {
        const tick = await sup.collect({ timeoutMs: 2000 })
        counts.ticks++
        expect(tick.hosts).toHaveLength(HOSTS)
        expect(new Set(tick.hosts.map((h) => h.host)).size).toBe(HOSTS)
        for (const h of tick.hosts) {
          counts.results++
          if (h.metrics) counts.metrics++
          else {
            // No host is ever silently missing: no data means a typed error.
            expect(h.error?.code).toMatch(/^KAY_[A-Z_]+$/)
            counts.errors[h.error!.code] = (counts.errors[h.error!.code] ?? 0) + 1
          }
        }
        // Fault injection: drop 2 % of the connections; every 5th tick one of them is a full restart of the host.
        const faults: Promise<unknown>[] = []
        for (let i = 0; i < DROPS_PER_TICK; i++) {
          const victim = Math.floor(random() * HOSTS)
          faults.push(i === 0 && counts.ticks % 5 === 0 ? fleet.restart(victim) : fleet.drop(victim))
        }
        await Promise.all(faults)
        maxDials = Math.max(maxDials, sup.stats().dialsInFlight)
        samples.push(sample(Date.now() - t0))
        nextTick += TICK_MS
        const wait = nextTick - Date.now()
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        else nextTick = Date.now()
      }

      // Every tick answered every host; most answers carry data despite the churn.
      expect(counts.ticks).toBeGreaterThanOrEqual(Math.floor((SECONDS * 1000) / TICK_MS / 3))
      expect(counts.results).toBe(counts.ticks * HOSTS)
      expect(counts.metrics / counts.results).toBeGreaterThan(0.7)
      expect(maxDials).toBeLessThanOrEqual(16)

      // Growth: compare an early window (after warm-up) with the end, and fit a slope over everything after warm-up.
      const steady = samples.filter((s) => s.t >= SECONDS * 1000 * 0.2)
      const early = steady.filter((s) => s.t < SECONDS * 1000 * 0.4)
      const late = steady.filter((s) => s.t >= SECONDS * 1000 * 0.8)
      const runMs = SECONDS * 1000
      const report = JSON.stringify({
        counts,
        early: { rss: median(early.map((s) => s.rss)) / MiB, heap: median(early.map((s) => s.heap)) / MiB },
        late: { rss: median(late.map((s) => s.rss)) / MiB, heap: median(late.map((s) => s.heap)) / MiB },
        handles: [median(early.map((s) => s.handles)), median(late.map((s) => s.handles))],
        fds: [median(early.map((s) => s.fds)), median(late.map((s) => s.fds))],
      })
      const bounds = { rss: 96 * MiB, heap: 48 * MiB, handles: 20, fds: 60 }
      for (const key of ['rss', 'heap', 'handles', 'fds'] as const) {
        const grew = median(late.map((s) => s[key])) - median(early.map((s) => s[key]))
        expect(grew, `${key} grew by ${grew}: ${report}`).toBeLessThan(bounds[key])
        const projected = slope(steady, (s) => s[key]) * runMs
        expect(projected, `${key} trend ${projected} over the run: ${report}`).toBeLessThan(bounds[key])
      }

      // The churn stops: the fleet heals completely, on one connection per host, with no dial slot held.
      await until('fleet healed', async () => ((await sup.refreshStats()).byState.ready ?? 0) === HOSTS, 30_000)
      const last = await sup.collect({ timeoutMs: 5000 })
      expect(last.hosts.filter((h) => h.metrics)).toHaveLength(HOSTS)
      const st = await fleet.stats()
      expect(st.totals.currentConnections).toBe(HOSTS)
      expect(sup.stats().dialsInFlight).toBe(0)
    },
    (SECONDS + 120) * 1000,
  )
})
