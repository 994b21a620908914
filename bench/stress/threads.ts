/**
 * Threads and cold start: a cold start of N sim hosts with 1, 2, 4 shard threads. Reports the time to all-ready,
 * the main thread's event-loop delay (p50/p99/max, `monitorEventLoopDelay`) and the process CPU during the start:
 * with the handshakes in shard threads, the main thread should stay responsive whatever the thread count.
 *
 *   node --conditions=kay-source --import tsx bench/stress/threads.ts --hosts 2000 --threads 1,2,4 --dial-cap 64
 *
 * Flags: --hosts (2000), --threads (1,2,4), --dial-cap (64), --repeats (2).
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { cpuMsSince, flags, fmt, intList, reached, record, runMain, summarize } from '../load/lib.js'
import { closeFleet, openFleet } from '../load/steady.js'
import { startSupervisor, totals } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 2000)
  const threadsList = intList(f.get('threads'), [1, 2, 4])
  const dialCap = Number(f.get('dial-cap') ?? 64)
  const repeats = Number(f.get('repeats') ?? 2)
  const ctx = await openFleet(n)
  let bad = 0
  const rows = new Map<number, Array<{ ms: number; p99: number; max: number; cpu: number }>>()
  try {
    for (let rep = 0; rep < repeats; rep++) {
      for (const threads of threadsList) {
        await ctx.fleet.resetStats()
        const eld = monitorEventLoopDelay({ resolution: 10 })
        eld.enable()
        const c0 = process.cpuUsage()
        const t0 = performance.now()
        const sup = await startSupervisor(ctx, { dialCap, threads, keepalive: { intervalMs: 60_000 } })
        try {
          const ok = await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, {
            timeoutMs: 180_000,
            everyMs: 20,
          })
          const ms = performance.now() - t0
          const cpu = cpuMsSince(c0)
          eld.disable()
          const t = await totals([ctx.fleet])
          const r = {
            hosts: n,
            threads,
            dialCap,
            repeat: rep,
            allReady: ok,
            ms,
            clientCpuMs: cpu,
            clientCpuPerHandshakeMs: cpu / Math.max(1, t.handshakesCompleted),
            eldP50Ms: eld.percentile(50) / 1e6,
            eldP99Ms: eld.percentile(99) / 1e6,
            eldMaxMs: eld.max / 1e6,
            peakConcurrentHandshakes: t.maxConcurrentHandshakes,
            failed: t.handshakesStarted - t.handshakesCompleted,
          }
          record('stress-threads', r)
          console.log(
            `threads ${threads} rep ${rep}: ready ${ok ? `${(ms / 1000).toFixed(2)} s` : 'NO'} | ELD p50/p99/max ` +
              `${r.eldP50Ms.toFixed(1)}/${r.eldP99Ms.toFixed(1)}/${r.eldMaxMs.toFixed(1)} ms | CPU ${(cpu / 1000).toFixed(1)} s ` +
              `(${r.clientCpuPerHandshakeMs.toFixed(2)} ms/handshake) | peak hs ${t.maxConcurrentHandshakes} | failed ${r.failed}`,
          )
          if (!ok) bad++
          const list = rows.get(threads) ?? []
          list.push({ ms, p99: r.eldP99Ms, max: r.eldMaxMs, cpu })
          rows.set(threads, list)
        } finally {
          eld.disable()
          await sup.stop({ timeoutMs: 5000 })
        }
      }
    }
  } finally {
    await closeFleet(ctx)
  }
  for (const [threads, runs] of rows) {
    console.log(
      `threads ${threads}: all-ready ms ${fmt(summarize(runs.map((x) => x.ms)), 0)} | ELD p99 ms ` +
        `${fmt(summarize(runs.map((x) => x.p99)), 1)} | ELD max ms ${fmt(summarize(runs.map((x) => x.max)), 1)}`,
    )
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
