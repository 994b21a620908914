/**
 * Cold start: N simulated hosts (separate process), a fresh Supervisor with dialCap 1, 4, 16, 64; time until every
 * host is ready, the most concurrent handshakes the sim saw (must never exceed the cap), and failed dials.
 *
 *   node --conditions=kay-source --import tsx bench/load/cold-start.ts --hosts 1000 --caps 1,4,16,64 --repeats 3
 */
import { performance } from 'node:perf_hooks'
import { Supervisor } from '@kay/workers'
import { flags, fmt, intList, reached, record, runMain, summarize } from './lib.js'
import { closeFleet, openFleet } from './steady.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 1000)
  const caps = intList(f.get('caps'), [1, 4, 16, 64])
  const repeats = Number(f.get('repeats') ?? 3)
  const ctx = await openFleet(n)
  let bad = 0
  try {
    for (const cap of caps) {
      const times: number[] = []
      const peaks: number[] = []
      let failures = 0
      let overCap = 0
      for (let rep = 0; rep < repeats; rep++) {
        await ctx.fleet.resetStats()
        const t0 = performance.now()
        const sup = await Supervisor.start({
          hosts: ctx.targets,
          dialCap: cap,
          identity: { username: 'bench', keyFiles: [], keys: [ctx.privateKey] },
          trust: { knownHostsPath: ctx.knownHostsPath, policy: 'accept-new', extraKnownHosts: [] },
        })
        try {
          const ok = await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, {
            timeoutMs: Math.max(60_000, (n * 40) / cap),
            everyMs: 20,
          })
          const ms = performance.now() - t0
          const st = await ctx.fleet.stats()
          const failed = st.totals.handshakesStarted - st.totals.handshakesCompleted
          failures += failed + (ok ? 0 : 1)
          if (st.maxConcurrentHandshakes > cap) overCap++
          if (ok) times.push(ms)
          peaks.push(st.maxConcurrentHandshakes)
          record('cold-start', {
            hosts: n,
            dialCap: cap,
            repeat: rep,
            allReady: ok,
            ms,
            peak: st.maxConcurrentHandshakes,
            failed,
          })
        } finally {
          await sup.stop({ timeoutMs: 5000 })
        }
      }
      if (overCap > 0 || failures > 0) bad++
      console.log(
        `hosts ${n} cap ${String(cap).padStart(2)}: all-ready ms ${fmt(summarize(times), 0)} | peak handshakes ` +
          `${fmt(summarize(peaks), 0)} | failures ${failures} | runs over cap ${overCap}`,
      )
    }
  } finally {
    await closeFleet(ctx)
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
