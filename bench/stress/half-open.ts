/**
 * Half-open: a share of the hosts stop reading and writing without closing (a dead peer behind a NAT). kay
 * should notice through its keepalive probe (interval + deadline) while ticking the rest every second. Reports
 * the detection time per half-open host (until it leaves 'ready', and with which error code), and the tick wall
 * times and misses of the healthy hosts during that time.
 *
 *   node --conditions=kay-source --import tsx bench/stress/half-open.ts --hosts 500 --pct 10
 *
 * Flags: --hosts (500), --pct (10), --interval-ms (keepalive, 3000), --deadline-ms (probe, 2000), --tick-ms (1000),
 * --tick-timeout-ms (5000), --max-s (30: the measuring window), --dial-cap (16).
 */
import { performance } from 'node:perf_hooks'
import { flags, fmt, reached, record, runMain, sleep, summarize, warmUpStreams } from '../load/lib.js'
import { closeFleet, openFleet } from '../load/steady.js'
import { startSupervisor } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 500)
  const pct = Number(f.get('pct') ?? 10)
  const intervalMs = Number(f.get('interval-ms') ?? 3000)
  const deadlineMs = Number(f.get('deadline-ms') ?? 2000)
  const tickMs = Number(f.get('tick-ms') ?? 1000)
  const tickTimeoutMs = Number(f.get('tick-timeout-ms') ?? 5000)
  const maxS = Number(f.get('max-s') ?? 30)
  const dialCap = Number(f.get('dial-cap') ?? 16)
  const ctx = await openFleet(n)
  const every = Math.max(1, Math.round(100 / pct))
  const badIdx = ctx.targets.map((_, i) => i).filter((i) => i % every === 0)
  const badNames = new Set(badIdx.map((i) => ctx.targets[i]!.id))
  let bad = 0
  try {
    const sup = await startSupervisor(ctx, {
      dialCap,
      threads: 2,
      keepalive: { intervalMs, probeDeadlineMs: deadlineMs },
    })
    try {
      const ready = await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, {
        timeoutMs: 120_000,
        everyMs: 50,
      })
      if (!ready) throw new Error(`not all ready: ${JSON.stringify(sup.stats().byState)}`)
      await warmUpStreams(sup, n, { timeoutMs: 5000 })
      const detected = new Map<string, { ms: number; state: string; code: string }>()
      let t0 = 0
      sup.on('host', (s) => {
        if (t0 === 0 || !badNames.has(s.id) || detected.has(s.id) || s.state === 'ready') return
        detected.set(s.id, { ms: performance.now() - t0, state: s.state, code: s.lastError?.code ?? 'none' })
      })
      t0 = performance.now()
      await Promise.all(badIdx.map((i) => ctx.fleet.setFault(i, { halfOpen: true })))
      const walls: number[] = []
      const healthyMisses: Record<string, number> = {}
      const badTickCodes: Record<string, number> = {}
      let ticks = 0
      let healthyMissCount = 0
      const end = t0 + maxS * 1000
      while (performance.now() < end && ticks < maxS * 2) {
        const w0 = performance.now()
        const r = await sup.collect({ timeoutMs: tickTimeoutMs })
        const wall = performance.now() - w0
        walls.push(wall)
        ticks++
        for (const h of r.hosts) {
          if (badNames.has(h.host)) {
            const c = h.metrics ? 'ok' : (h.error?.code ?? 'none')
            badTickCodes[c] = (badTickCodes[c] ?? 0) + 1
          } else if (!h.metrics) {
            healthyMissCount++
            const c = h.error?.code ?? 'none'
            healthyMisses[c] = (healthyMisses[c] ?? 0) + 1
          }
        }
        if (detected.size === badIdx.length && performance.now() - t0 > (intervalMs + deadlineMs) * 2) break
        await sleep(Math.max(0, tickMs - wall))
      }
      const det = [...detected.values()]
      const codes: Record<string, number> = {}
      for (const d of det) codes[`${d.state}/${d.code}`] = (codes[`${d.state}/${d.code}`] ?? 0) + 1
      const result = {
        hosts: n,
        halfOpen: badIdx.length,
        keepalive: { intervalMs, deadlineMs },
        tickTimeoutMs,
        detected: det.length,
        detectMs: summarize(det.map((d) => d.ms)),
        detectCodes: codes,
        ticks,
        tickWallMs: summarize(walls),
        tickWalls: walls.map((w) => Math.round(w)),
        healthyMissCount,
        healthyMisses,
        halfOpenTickResults: badTickCodes,
      }
      record('stress-half-open', result)
      console.log(
        `half-open ${badIdx.length}/${n}, keepalive ${intervalMs}+${deadlineMs} ms: detected ${det.length}, ms ` +
          `${fmt(result.detectMs, 0)} (${JSON.stringify(codes)}); ${ticks} ticks, wall ms ${fmt(result.tickWallMs, 0)}; ` +
          `healthy misses ${healthyMissCount} ${JSON.stringify(healthyMisses)}; half-open tick results ` +
          `${JSON.stringify(badTickCodes)}`,
      )
      console.log(`tick walls: ${result.tickWalls.join(' ')}`)
      if (det.length < badIdx.length || healthyMissCount > 0) bad++
    } finally {
      await Promise.all(badIdx.map((i) => ctx.fleet.setFault(i, { halfOpen: false }))).catch(() => {})
      await sup.stop({ timeoutMs: 5000 })
    }
  } finally {
    await closeFleet(ctx)
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
