/**
 * Flapping: a share of the hosts lose their connection every 2–3 s for `--seconds`, while kay collects every
 * second. Every stable host must answer every tick (misses must be 0); for the flapping hosts the share of
 * host-ticks with data is reported.
 *
 *   node --conditions=kay-source --import tsx bench/stress/flapping.ts --hosts 500 --flap-pct 10 --seconds 60
 *
 * Flags: --hosts (500), --flap-pct (10), --seconds (60), --interval-ms (1000), --tick-timeout-ms (2000),
 * --dial-cap (16).
 */
import { performance } from 'node:perf_hooks'
import { flags, fmt, reached, record, runMain, sleep, summarize, warmUpStreams } from '../load/lib.js'
import { closeFleet, openFleet } from '../load/steady.js'
import { startSupervisor } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 500)
  const pct = Number(f.get('flap-pct') ?? 10)
  const seconds = Number(f.get('seconds') ?? 60)
  const intervalMs = Number(f.get('interval-ms') ?? 1000)
  const tickTimeoutMs = Number(f.get('tick-timeout-ms') ?? 2000)
  const dialCap = Number(f.get('dial-cap') ?? 16)
  const ctx = await openFleet(n)
  // Every k-th host flaps, so flappers are spread over both shards.
  const every = Math.max(1, Math.round(100 / pct))
  const flapIdx = ctx.targets.map((_, i) => i).filter((i) => i % every === 0)
  const flapNames = new Set(flapIdx.map((i) => ctx.targets[i]!.id))
  let bad = 0
  try {
    const sup = await startSupervisor(ctx, { dialCap, threads: 2, keepalive: { intervalMs: 60_000 } })
    try {
      const ready = await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, {
        timeoutMs: 120_000,
        everyMs: 50,
      })
      if (!ready) throw new Error(`not all ready: ${JSON.stringify(sup.stats().byState)}`)
      await warmUpStreams(sup, n, { timeoutMs: 5000 })
      await ctx.fleet.resetStats()
      // Flapper: each flapping host is dropped at its own time, every 2–3 s.
      const t0 = performance.now()
      const end = t0 + seconds * 1000
      const nextDrop = new Map(flapIdx.map((i) => [i, t0 + 2000 + Math.random() * 1000]))
      let drops = 0
      let flapping = true
      const flapper = (async () => {
        while (flapping && performance.now() < end) {
          const now = performance.now()
          const due = flapIdx.filter((i) => nextDrop.get(i)! <= now)
          for (const i of due) nextDrop.set(i, now + 2000 + Math.random() * 1000)
          await Promise.all(due.map((i) => ctx.fleet.drop(i)))
          drops += due.length
          await sleep(50)
        }
      })()
      let ticks = 0
      let stableMisses = 0
      let flapOk = 0
      let flapTicks = 0
      const walls: number[] = []
      const missCodes: Record<string, number> = {}
      const stableMissCodes: Record<string, number> = {}
      while (performance.now() < end && ticks < seconds * 2) {
        const w0 = performance.now()
        const r = await sup.collect({ timeoutMs: tickTimeoutMs })
        const wall = performance.now() - w0
        walls.push(wall)
        ticks++
        const seen = new Set<string>()
        for (const h of r.hosts) {
          seen.add(h.host)
          if (flapNames.has(h.host)) {
            flapTicks++
            if (h.metrics) flapOk++
            else missCodes[h.error?.code ?? 'none'] = (missCodes[h.error?.code ?? 'none'] ?? 0) + 1
          } else if (!h.metrics) {
            stableMisses++
            stableMissCodes[h.error?.code ?? 'none'] = (stableMissCodes[h.error?.code ?? 'none'] ?? 0) + 1
          }
        }
        stableMisses += ctx.targets.filter((t) => !seen.has(t.id) && !flapNames.has(t.id)).length
        await sleep(Math.max(0, intervalMs - wall))
      }
      flapping = false
      await flapper
      const st = await ctx.fleet.stats()
      const result = {
        hosts: n,
        flapping: flapIdx.length,
        seconds,
        ticks,
        drops,
        stableHostTicks: ticks * (n - flapIdx.length),
        stableMisses,
        stableMissCodes,
        flapHostTicks: flapTicks,
        flapDataRatio: flapOk / Math.max(1, flapTicks),
        flapMissCodes: missCodes,
        wallMs: summarize(walls),
        handshakes: st.totals.handshakesStarted,
        maxConcurrentHandshakes: st.maxConcurrentHandshakes,
      }
      record('stress-flapping', result)
      console.log(
        `flapping ${flapIdx.length}/${n} hosts for ${seconds} s: ${ticks} ticks, ${drops} drops; stable misses ` +
          `${stableMisses}/${result.stableHostTicks}; flapping data ratio ${(result.flapDataRatio * 100).toFixed(1)}% ` +
          `(${JSON.stringify(missCodes)}); wall ms ${fmt(result.wallMs, 1)}; handshakes ${result.handshakes}`,
      )
      if (stableMisses > 0) bad++
    } finally {
      await sup.stop({ timeoutMs: 5000 })
    }
  } finally {
    await closeFleet(ctx)
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
