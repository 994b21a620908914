/**
 * Steady state at 10,000 hosts: the fleet split over several simulator processes (5,000 hosts each), so that each
 * stays under its own RLIMIT_NOFILE (one listener + one connection per host). kay runs with 2 shard threads and
 * collects every `--interval-ms` in stream mode.
 *
 *   node --conditions=kay-source --expose-gc --import tsx bench/stress/steady-split.ts --hosts 10000 --parts 2
 *
 * Flags: --hosts (10000), --parts (2), --ticks (4), --interval-ms (5000), --dial-cap (16), --threads (2),
 * --tick-timeout-ms (30000), --first (= --hosts).
 *
 * Memory: this process is the collector (the simulators are other processes), so its RSS is kay's, shard threads
 * included. With `--first N` the supervisor starts with the first N hosts, is measured, then gets the rest through
 * `add` and is measured again: the marginal RSS per host is (step 2 − step 1) / added hosts, free of the fixed
 * cost. Each step reads RSS after a main-thread GC once every host streams (`rss warm`) and, without forcing
 * anything, just before each tick, i.e. after each idle interval (`rss idle`, what an operator sees at the
 * interval). V8 flags given to node apply to the shard threads too: run it once with `--no-memory-reducer` (as
 * the CLI sets it) and once without to compare.
 */
import { readdirSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { flags, fmt, measureTicks, openFds, reached, record, runMain, settledRss, warmUpStreams } from '../load/lib.js'
import { closeFleets, openFleets, simCpuMs, startSupervisor, totals } from './lib.js'

interface Step {
  hosts: number
  readyMs: number
  rssWarm: number
  rssIdle: number[]
  rssEnd: number
}

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 10_000)
  const parts = Number(f.get('parts') ?? 2)
  const ticks = Number(f.get('ticks') ?? 4)
  const intervalMs = Number(f.get('interval-ms') ?? 5000)
  const dialCap = Number(f.get('dial-cap') ?? 16)
  const threads = Number(f.get('threads') ?? 2)
  const tickTimeoutMs = Number(f.get('tick-timeout-ms') ?? 30_000)
  const first = Number(f.get('first') ?? n)
  if (!(Number.isInteger(first) && first > 0 && first <= n))
    throw new Error('--first must be an integer from 1 to --hosts')
  const s0 = performance.now()
  const ctx = await openFleets(n, { parts })
  const simStartMs = performance.now() - s0
  console.log(
    `sim: ${parts} processes (${ctx.fleets.map((x) => x.pid).join(', ')}) up in ${(simStartMs / 1000).toFixed(1)} s`,
  )
  let bad = 0
  try {
    const rssBefore = await settledRss()
    const sup = await startSupervisor(
      { ...ctx, targets: ctx.targets.slice(0, first) },
      { dialCap, threads, collectMode: 'stream', keepalive: { intervalMs: 60_000 } },
    )
    const steps: Step[] = []
    try {
      for (const m of first === n ? [n] : [first, n]) {
        const t0 = performance.now()
        if (steps.length > 0) sup.add(ctx.targets.slice(first, m))
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
            return (st.byState.ready ?? 0) === m
          },
          { timeoutMs: Math.max(120_000, m * 30), everyMs: 200 },
        )
        const readyMs = performance.now() - t0
        if (!ok) throw new Error(`not all ready in time: ${JSON.stringify(sup.stats().byState)}, fds ${openFds()}`)
        console.log(`all ${m} ready in ${(readyMs / 1000).toFixed(1)} s; kay fds ${openFds()}`)
        await warmUpStreams(sup, m, { timeoutMs: tickTimeoutMs, pauseMs: 500 })
        const modes = { ...(await sup.refreshStats()).byMode }
        const rssWarm = await settledRss()
        await Promise.all(ctx.fleets.map((x) => x.resetStats()))
        const rssIdle: number[] = []
        const series = await measureTicks(m, {
          ticks,
          intervalMs,
          simCpuMs: () => simCpuMs(ctx.fleets),
          tick: async () => {
            rssIdle.push(process.memoryUsage.rss())
            const r = await sup.collect({ timeoutMs: tickTimeoutMs })
            return r.hosts.filter((h) => !h.metrics).length + (m - r.hosts.length)
          },
          onTick: (i, wall, cpu, sim) =>
            console.log(
              `  tick ${i}: wall ${wall.toFixed(0)} ms, client ${cpu.toFixed(4)} ms/host, sim ${sim.toFixed(4)}, ` +
                `rss before it ${mib(rssIdle[i]!)} MiB`,
            ),
        })
        // measureTicks idles one interval after the last tick: this is the RSS an operator sees between ticks.
        const rssEnd = process.memoryUsage.rss()
        steps.push({ hosts: m, readyMs, rssWarm, rssIdle, rssEnd })
        const t = await totals(ctx.fleets)
        const r = {
          hosts: m,
          simProcesses: parts,
          threads,
          dialCap,
          ticks,
          intervalMs,
          v8Flags: process.execArgv.filter(
            (a) => a.startsWith('--') && !a.startsWith('--conditions') && a !== '--import',
          ),
          readyMs,
          ...series,
          handshakesPerTick: t.handshakesStarted / ticks,
          rssBeforeMb: rssBefore / 1048576,
          rssWarmMb: rssWarm / 1048576,
          rssIdleMb: rssIdle.map((x) => x / 1048576),
          rssEndMb: rssEnd / 1048576,
          rssPerHostKb: rssEnd / 1024 / m,
          rssAboveBaselinePerHostKb: (rssEnd - rssBefore) / 1024 / m,
          kayFds: openFds(),
          simFds: ctx.fleets.map((x) => readdirSync(`/proc/${x.pid}/fd`).length),
          modes,
        }
        record('stress-steady-split', r)
        console.log(
          `${m} hosts / ${parts} sims: wall ms ${fmt(r.wallMs, 1)} | client ms/host-tick ${fmt(r.clientCpuPerHostTickMs, 4)}` +
            ` | sim ms/host-tick ${fmt(r.simCpuPerHostTickMs, 4)} | hs/tick ${r.handshakesPerTick} | failed ` +
            `${series.failedHostTicks} | eld p99 ${r.eventLoopP99Ms.toFixed(1)} ms | rss before kay ${mib(rssBefore)}, ` +
            `warm ${mib(rssWarm)}, idle ${rssIdle.map(mib).join('/')}, end ${mib(rssEnd)} MiB | rss/host ` +
            `${r.rssPerHostKb.toFixed(1)} KiB (${r.rssAboveBaselinePerHostKb.toFixed(1)} above the bench's own) | ` +
            `ready ${(readyMs / 1000).toFixed(1)} s | fds kay ${r.kayFds}, sims ${r.simFds.join('+')} | ${JSON.stringify(modes)}`,
        )
        if (series.failedHostTicks > 0) bad++
      }
      if (steps.length === 2) {
        const [a, b] = steps as [Step, Step]
        const per = (x: number, y: number) => ((y - x) / 1024 / (b.hosts - a.hosts)).toFixed(1)
        const r = {
          from: a.hosts,
          to: b.hosts,
          marginalWarmKb: Number(per(a.rssWarm, b.rssWarm)),
          marginalEndKb: Number(per(a.rssEnd, b.rssEnd)),
        }
        record('stress-steady-split-marginal', r)
        console.log(
          `marginal ${a.hosts} -> ${b.hosts} hosts, KiB/host: warm ${r.marginalWarmKb}, at the interval ${r.marginalEndKb}`,
        )
      }
    } finally {
      await sup.stop({ timeoutMs: 10_000 })
    }
  } finally {
    await closeFleets(ctx)
  }
  return bad === 0 ? 0 : 1
}

function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(0)
}

runMain(import.meta.url, main)
