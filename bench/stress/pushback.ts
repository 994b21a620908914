/**
 * Pushback: a cold start against a fleet that sits behind one small MaxStartups (the sim's `sharedMaxStartups`,
 * like one bastion sshd), with a dial cap well above it, governor on vs off. Reports the dials the server dropped
 * (sim `startupsDropped`), the governor's pressure events and lowest effective cap, and the time to all-ready.
 *
 *   node --conditions=kay-source --import tsx bench/stress/pushback.ts --hosts 1000 --max-startups 4 --dial-cap 32
 *
 * Flags: --hosts (1000), --max-startups (4), --dial-cap (32), --repeats (3), --timeout-s (per run, 180),
 * --governor (on,off).
 */
import { performance } from 'node:perf_hooks'
import { flags, fmt, reached, record, runMain, summarize } from '../load/lib.js'
import { closeFleets, openFleets, startSupervisor, totals } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 1000)
  const maxStartups = Number(f.get('max-startups') ?? 4)
  const dialCap = Number(f.get('dial-cap') ?? 32)
  const repeats = Number(f.get('repeats') ?? 3)
  const timeoutS = Number(f.get('timeout-s') ?? 180)
  const modes = (f.get('governor') ?? 'on,off').split(',')
  const ctx = await openFleets(n, { sharedMaxStartups: maxStartups })
  let bad = 0
  const byMode = new Map<string, Array<{ ms: number; dropped: number; pressure: number }>>()
  try {
    for (let rep = 0; rep < repeats; rep++) {
      for (const mode of modes) {
        await ctx.fleets[0]!.resetStats()
        const t0 = performance.now()
        const sup = await startSupervisor(ctx, { dialCap, threads: 2, governor: mode === 'on' })
        let minEffective = dialCap
        let readyMs = Number.NaN
        try {
          await reached(
            'every host ready',
            () => {
              const s = sup.stats()
              minEffective = Math.min(minEffective, s.effectiveDialCap)
              if ((s.byState.ready ?? 0) !== n) return false
              readyMs = performance.now() - t0
              return true
            },
            { timeoutMs: Math.max(0, t0 + timeoutS * 1000 - performance.now()), everyMs: 20 },
          )
          const s = sup.stats()
          const t = await totals(ctx.fleets)
          const r = {
            hosts: n,
            maxStartups,
            dialCap,
            governor: mode,
            repeat: rep,
            allReady: Number.isFinite(readyMs),
            readyMs,
            readyAtEnd: s.byState.ready ?? 0,
            startupsDropped: t.startupsDropped,
            accepted: t.accepted,
            handshakesStarted: t.handshakesStarted,
            peakConcurrentHandshakes: t.maxConcurrentHandshakes,
            pressureEvents: s.pressureEvents,
            minEffectiveCap: minEffective,
          }
          record('stress-pushback', r)
          console.log(
            `pushback governor ${mode} rep ${rep}: ready ${r.allReady ? `${(readyMs / 1000).toFixed(1)} s` : `NO (${r.readyAtEnd}/${n})`}` +
              ` | dropped ${t.startupsDropped} of ${t.accepted} accepts | pressure events ${s.pressureEvents} | ` +
              `min effective cap ${minEffective} | peak handshakes ${t.maxConcurrentHandshakes}`,
          )
          if (!r.allReady) bad++
          const list = byMode.get(mode) ?? []
          list.push({ ms: readyMs, dropped: t.startupsDropped, pressure: s.pressureEvents })
          byMode.set(mode, list)
        } finally {
          await sup.stop({ timeoutMs: 5000 })
        }
      }
    }
  } finally {
    await closeFleets(ctx)
  }
  for (const [mode, runs] of byMode) {
    console.log(
      `governor ${mode}: all-ready ms ${fmt(summarize(runs.map((x) => x.ms)), 0)} | dropped ` +
        `${fmt(summarize(runs.map((x) => x.dropped)), 0)} | pressure events ${fmt(summarize(runs.map((x) => x.pressure)), 0)}`,
    )
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
