/**
 * Steady state at 10,000 hosts: the fleet split over several simulator processes (5,000 hosts each), so that each
 * stays under its own RLIMIT_NOFILE (one listener + one connection per host). kay runs with 2 shard threads and
 * collects every `--interval-ms` in stream mode.
 *
 *   node --conditions=kay-source --expose-gc --import tsx bench/stress/steady-split.ts --hosts 10000 --parts 2
 *
 * Flags: --hosts (10000), --parts (2), --ticks (4), --interval-ms (5000), --dial-cap (16), --threads (2),
 * --tick-timeout-ms (30000).
 */
import { readdirSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { flags, fmt, measureTicks, openFds, reached, record, runMain, settledRss, warmUpStreams } from '../load/lib.js'
import { closeFleets, openFleets, simCpuMs, startSupervisor, totals } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 10_000)
  const parts = Number(f.get('parts') ?? 2)
  const ticks = Number(f.get('ticks') ?? 4)
  const intervalMs = Number(f.get('interval-ms') ?? 5000)
  const dialCap = Number(f.get('dial-cap') ?? 16)
  const threads = Number(f.get('threads') ?? 2)
  const tickTimeoutMs = Number(f.get('tick-timeout-ms') ?? 30_000)
  const s0 = performance.now()
  const ctx = await openFleets(n, { parts })
  const simStartMs = performance.now() - s0
  console.log(
    `sim: ${parts} processes (${ctx.fleets.map((x) => x.pid).join(', ')}) up in ${(simStartMs / 1000).toFixed(1)} s`,
  )
  let bad = 0
  try {
    const rssBefore = await settledRss()
    const t0 = performance.now()
    const sup = await startSupervisor(ctx, {
      dialCap,
      threads,
      collectMode: 'stream',
      keepalive: { intervalMs: 60_000 },
    })
    try {
      let lastLog = 0
      const ok = await reached(
        'every host ready',
        async () => {
          const st = await sup.refreshStats()
          if (performance.now() - lastLog > 10_000) {
            lastLog = performance.now()
            console.log(
              `  ${((performance.now() - t0) / 1000).toFixed(0)} s: ${JSON.stringify(st.byState)}, fds ${openFds()}`,
            )
          }
          return (st.byState.ready ?? 0) === n
        },
        { timeoutMs: Math.max(120_000, n * 30), everyMs: 200 },
      )
      const readyMs = performance.now() - t0
      if (!ok) throw new Error(`not all ready in time: ${JSON.stringify(sup.stats().byState)}, fds ${openFds()}`)
      console.log(`all ${n} ready in ${(readyMs / 1000).toFixed(1)} s; kay fds ${openFds()}`)
      await warmUpStreams(sup, n, { timeoutMs: tickTimeoutMs, pauseMs: 500 })
      const modes = { ...(await sup.refreshStats()).byMode }
      const rssAfter = await settledRss()
      await Promise.all(ctx.fleets.map((x) => x.resetStats()))
      const series = await measureTicks(n, {
        ticks,
        intervalMs,
        simCpuMs: () => simCpuMs(ctx.fleets),
        tick: async () => {
          const r = await sup.collect({ timeoutMs: tickTimeoutMs })
          return r.hosts.filter((h) => !h.metrics).length + (n - r.hosts.length)
        },
        onTick: (i, wall, cpu, sim) =>
          console.log(
            `  tick ${i}: wall ${wall.toFixed(0)} ms, client ${cpu.toFixed(4)} ms/host, sim ${sim.toFixed(4)}`,
          ),
      })
      const failed = series.failedHostTicks
      const t = await totals(ctx.fleets)
      const r = {
        hosts: n,
        simProcesses: parts,
        threads,
        dialCap,
        ticks,
        readyMs,
        ...series,
        handshakesPerTick: t.handshakesStarted / ticks,
        rssPerHostKb: (rssAfter - rssBefore) / 1024 / n,
        rssMb: rssAfter / 1048576,
        kayFds: openFds(),
        simFds: ctx.fleets.map((x) => readdirSync(`/proc/${x.pid}/fd`).length),
        modes,
      }
      record('stress-steady-split', r)
      console.log(
        `${n} hosts / ${parts} sims: wall ms ${fmt(r.wallMs, 1)} | client ms/host-tick ${fmt(r.clientCpuPerHostTickMs, 4)}` +
          ` | sim ms/host-tick ${fmt(r.simCpuPerHostTickMs, 4)} | hs/tick ${r.handshakesPerTick} | failed ${failed} | ` +
          `eld p99 ${r.eventLoopP99Ms.toFixed(1)} ms | rss/host ${r.rssPerHostKb.toFixed(1)} KiB (rss ` +
          `${r.rssMb.toFixed(0)} MB) | ready ${(readyMs / 1000).toFixed(1)} s | fds kay ${r.kayFds}, sims ${r.simFds.join('+')} | ` +
          JSON.stringify(modes),
      )
      if (failed > 0) bad++
    } finally {
      await sup.stop({ timeoutMs: 10_000 })
    }
  } finally {
    await closeFleets(ctx)
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
