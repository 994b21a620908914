/**
 * Soak: 500 simulated hosts (separate process), a tick every 200 ms for a bounded duration, 2% of the hosts
 * restarted (connections dropped, listener back at once) in every tick window. Reports the slope of RSS, heap,
 * active handles and open fds, and asserts that every tick returns a result (metrics or a typed error) for every
 * host; exits non-zero otherwise.
 *
 *   node --conditions=kay-source --import tsx bench/soak.ts [durationSeconds=120] [--hosts 500] [--tick-ms 200] [--churn 0.02]
 */
import { performance } from 'node:perf_hooks'
import { Supervisor } from '@kay/workers'
import { flags, openFds, reached, record, runMain, sleep } from './load/lib.js'
import { closeFleet, openFleet } from './load/steady.js'

interface Sample {
  t: number
  rss: number
  heap: number
  handles: number
  fds: number
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length
  if (n < 2) return Number.NaN
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my)
    den += (xs[i]! - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

function sample(t0: number): Sample {
  const m = process.memoryUsage()
  return {
    t: (performance.now() - t0) / 1000,
    rss: m.rss,
    heap: m.heapUsed,
    handles: process.getActiveResourcesInfo().length,
    fds: openFds(),
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const positional = argv.find((a) => /^\d+$/.test(a))
  const durationS = Number(f.get('duration') ?? positional ?? 120)
  const n = Number(f.get('hosts') ?? 500)
  const tickMs = Number(f.get('tick-ms') ?? 200)
  // Fraction of the fleet restarted per tick window (default 2 %); `--churn 0.000833` at a 5 s tick is ~1 %/minute.
  const restartFraction = Number(f.get('churn') ?? 0.02)
  if (!(durationS > 0 && durationS <= 24 * 3600)) throw new Error(`duration must be 1..86400 s, got ${durationS}`)
  const ctx = await openFleet(n)
  const sup = await Supervisor.start({
    hosts: ctx.targets,
    identity: { username: 'bench', keyFiles: [], keys: [ctx.privateKey] },
    trust: { knownHostsPath: ctx.knownHostsPath, policy: 'accept-new', extraKnownHosts: [] },
    backoff: { baseMs: 200, capMs: 2000 },
  })
  let incomplete = 0
  let ticks = 0
  let hostTicks = 0
  let withMetrics = 0
  let restarts = 0
  let restartErrors = 0
  const errors: Record<string, number> = {}
  const samples: Sample[] = []
  try {
    await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, { timeoutMs: 60_000, everyMs: 50 })
    const t0 = performance.now()
    const end = t0 + durationS * 1000
    const maxTicks = Math.ceil((durationS * 1000) / tickMs) + 10
    let lastSample = -Infinity
    while (performance.now() < end && ticks < maxTicks) {
      const w0 = performance.now()
      // restartFraction of the fleet restarts in this tick window (listener closed and reopened at once; connections drop).
      const victims = new Set<number>()
      const want = Math.max(1, Math.round(n * restartFraction))
      for (let i = 0; victims.size < want && i < want * 10; i++) victims.add(Math.floor(Math.random() * n))
      const restarting = Promise.all(
        [...victims].map((v) =>
          ctx.fleet.restart(v).then(
            () => {
              restarts++
            },
            () => {
              restartErrors++
            },
          ),
        ),
      )
      const r = await sup.collect({ timeoutMs: Math.max(tickMs * 5, 1000) })
      ticks++
      const seen = new Set(r.hosts.map((h) => h.host))
      if (r.hosts.length !== n || seen.size !== n) incomplete++
      for (const h of r.hosts) {
        hostTicks++
        if (h.metrics) withMetrics++
        else {
          const code = h.error?.code ?? 'NO_RESULT'
          errors[code] = (errors[code] ?? 0) + 1
        }
      }
      await restarting
      if (performance.now() - lastSample >= 1000) {
        samples.push(sample(t0))
        lastSample = performance.now()
      }
      await sleep(Math.max(0, tickMs - (performance.now() - w0)))
    }
    samples.push(sample(t0))
  } finally {
    await sup.stop({ timeoutMs: 5000 })
    await closeFleet(ctx)
  }
  // Skip the first 10% as warm-up for the slopes.
  const steady = samples.slice(Math.floor(samples.length / 10))
  const xs = steady.map((s) => s.t / 60)
  const first = samples[0]
  const last = samples[samples.length - 1]
  const result = {
    hosts: n,
    durationS,
    tickMs,
    ticks,
    incompleteTicks: incomplete,
    hostTicks,
    withMetricsPct: (100 * withMetrics) / Math.max(1, hostTicks),
    errors,
    restarts,
    restartErrors,
    rssMbStartEnd: [first && first.rss / 2 ** 20, last && last.rss / 2 ** 20],
    heapMbStartEnd: [first && first.heap / 2 ** 20, last && last.heap / 2 ** 20],
    handlesStartEnd: [first?.handles, last?.handles],
    fdsStartEnd: [first?.fds, last?.fds],
    slopePerMin: {
      rssMb: slope(
        xs,
        steady.map((s) => s.rss / 2 ** 20),
      ),
      heapMb: slope(
        xs,
        steady.map((s) => s.heap / 2 ** 20),
      ),
      handles: slope(
        xs,
        steady.map((s) => s.handles),
      ),
      fds: slope(
        xs,
        steady.map((s) => s.fds),
      ),
    },
  }
  record('soak', result)
  if (incomplete > 0) {
    console.error(`soak: ${incomplete} of ${ticks} ticks did not return a result for every host`)
    return 1
  }
  return 0
}

runMain(import.meta.url, main)
