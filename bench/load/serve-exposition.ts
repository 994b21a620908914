/**
 * `kay serve` at scale: a simulated fleet (its own process) serving node requests, a Supervisor with
 * `nodeExporter`, and serve's exposition built once per tick and scraped over loopback HTTP, as `kay serve` does.
 * Per tick: wall, client CPU per host (the main thread and the shard threads: collection, the node parse, the
 * packing), the exposition's build time on the main thread, its size (text and OpenMetrics), and a scrape's
 * latency (full body, both formats). With `--prom-client`, the same series of one tick are also put through
 * prom-client (a Gauge or Counter per family, `set` per series, `registry.metrics()`), the design this replaced.
 *
 *   node --conditions=kay-source --expose-gc --import tsx bench/load/serve-exposition.ts --sizes 1000,10000
 *
 * Flags: --sizes (default 1000), --ticks (default 5), --interval-ms (default 5000), --prom-client. Fleets of more
 * than 5,000 hosts are split over simulator processes of 5,000 (each under its own fd limit).
 */
import { performance } from 'node:perf_hooks'
import { nodeFamilyMeta } from '@kay/core/internal'
import { Counter, Gauge, Registry } from 'prom-client'
import { createServeMetrics, startHttp } from '../../packages/cli/src/serve/metrics.js'
import { closeFleets, openFleets, simCpuMs, startSupervisor } from '../stress/lib.js'
import {
  cpuMsSince,
  flags,
  fmt,
  intList,
  reached,
  record,
  runMain,
  settledRss,
  sleep,
  summarize,
  warmUpStreams,
} from './lib.js'

const TICK_TIMEOUT_MS = 60_000

async function scrape(port: number, accept: string): Promise<{ ms: number; bytes: number }> {
  const t0 = performance.now()
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { accept } })
  const body = await res.arrayBuffer()
  return { ms: performance.now() - t0, bytes: body.byteLength }
}

/** The tick's node series through prom-client, as kay serve rendered them before: time to set and to render. */
async function viaPromClient(
  text: string,
): Promise<{ setMs: number; renderMs: number; bytes: number; series: number }> {
  const registry = new Registry()
  const metrics = new Map<string, Gauge | Counter>()
  const t0 = performance.now()
  let series = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith('node_')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line)
    if (!m) continue
    const labels: Record<string, string> = {}
    for (const l of m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    let metric = metrics.get(m[1]!)
    if (metric === undefined) {
      const meta = nodeFamilyMeta(m[1]!)!
      const opts = { name: m[1]!, help: meta.help, labelNames: Object.keys(labels), registers: [registry] }
      metric = meta.type === 'counter' ? new Counter(opts) : new Gauge(opts)
      metrics.set(m[1]!, metric)
    }
    // A counter cannot be set in prom-client: reset and inc is what a mirror of foreign counters does.
    if (metric instanceof Counter) metric.inc(labels, Number(m[3]))
    else metric.set(labels, Number(m[3]))
    series++
  }
  const t1 = performance.now()
  const out = await registry.metrics()
  return { setMs: t1 - t0, renderMs: performance.now() - t1, bytes: Buffer.byteLength(out), series }
}

async function main(argv: string[]): Promise<number> {
  const f = flags(argv)
  const sizes = intList(f.get('sizes'), [1000])
  const ticks = Number(f.get('ticks') ?? 5)
  const intervalMs = Number(f.get('interval-ms') ?? 5000)
  for (const n of sizes) {
    const ctx = await openFleets(n, { parts: Math.ceil(n / 5000) })
    const rss0 = await settledRss()
    const sup = await startSupervisor(ctx, { keepalive: { intervalMs: 60_000 }, nodeExporter: true })
    const metrics = createServeMetrics()
    const http = await startHttp(metrics, { host: '127.0.0.1', port: 0 }, () => true)
    try {
      const ready = await reached(
        'every host ready',
        async () => ((await sup.refreshStats()).byState.ready ?? 0) === n,
        { timeoutMs: Math.max(60_000, n * 30), everyMs: 100 },
      )
      if (!ready) throw new Error(`${n} hosts: not all ready: ${JSON.stringify(sup.stats().byState)}`)
      await warmUpStreams(sup, n, { timeoutMs: TICK_TIMEOUT_MS, pauseMs: 1000 })
      const rss1 = await settledRss()
      const rows: Array<Record<string, number>> = []
      for (let i = 0; i < ticks; i++) {
        const started = performance.now()
        const c0 = process.cpuUsage()
        const s0 = await simCpuMs(ctx.fleets)
        const tick = await sup.collect({ timeoutMs: TICK_TIMEOUT_MS })
        const collectMs = performance.now() - started
        await sup.refreshStats()
        const u0 = performance.now()
        metrics.update(tick, sup)
        const text = metrics.body('text')
        const om = metrics.body('openmetrics')
        const buildMs = performance.now() - u0
        const cpu = cpuMsSince(c0)
        const sim = (await simCpuMs(ctx.fleets)) - s0
        const st = await scrape(http.address.port, 'text/plain')
        const so = await scrape(http.address.port, 'application/openmetrics-text;version=1.0.0')
        const failed = tick.hosts.filter((h) => !h.metrics).length
        rows.push({
          collectMs,
          clientCpuPerHostTickMs: cpu / n,
          simCpuPerHostTickMs: sim / n,
          buildMs,
          textBytes: text.bytes,
          omBytes: om.bytes,
          scrapeTextMs: st.ms,
          scrapeOmMs: so.ms,
          failed,
        })
        console.log(
          `${n} hosts tick ${i + 1}: collect ${collectMs.toFixed(0)} ms, client ${(cpu / n).toFixed(3)} ms/host-tick, ` +
            `build ${buildMs.toFixed(1)} ms, ${(text.bytes / 1e6).toFixed(1)} MB text / ${(om.bytes / 1e6).toFixed(1)} MB OM, ` +
            `scrape ${st.ms.toFixed(0)} / ${so.ms.toFixed(0)} ms, ${failed} failed`,
        )
        await sleep(Math.max(0, intervalMs - (performance.now() - started)))
      }
      const col = (k: string) => summarize(rows.map((r) => r[k]!))
      const summary = {
        hosts: n,
        ticks,
        intervalMs,
        collectMs: col('collectMs'),
        clientCpuPerHostTickMs: col('clientCpuPerHostTickMs'),
        simCpuPerHostTickMs: col('simCpuPerHostTickMs'),
        buildMs: col('buildMs'),
        textBytes: col('textBytes'),
        omBytes: col('omBytes'),
        scrapeTextMs: col('scrapeTextMs'),
        scrapeOmMs: col('scrapeOmMs'),
        failedHostTicks: rows.reduce((a, r) => a + r.failed!, 0),
        rssPerHostKb: (rss1 - rss0) / 1024 / n,
      }
      console.log(
        `${n} hosts: client ${fmt(summary.clientCpuPerHostTickMs)} ms/host-tick, build ${fmt(summary.buildMs, 1)} ms, ` +
          `scrape text ${fmt(summary.scrapeTextMs, 0)} ms, ${(summary.textBytes.median / 1e6).toFixed(1)} MB, ` +
          `RSS ${summary.rssPerHostKb.toFixed(0)} KiB/host`,
      )
      record('serve-exposition', summary)
      if (f.has('prom-client')) {
        const text = Buffer.concat(metrics.body('text').chunks).toString('utf8')
        const p = await viaPromClient(text)
        console.log(
          `${n} hosts through prom-client: ${p.series} series, set ${p.setMs.toFixed(0)} ms, render ${p.renderMs.toFixed(0)} ms, ${(p.bytes / 1e6).toFixed(1)} MB`,
        )
        record('serve-exposition-prom-client', { hosts: n, ...p })
      }
    } finally {
      metrics.close()
      await http.close()
      await sup.stop({ timeoutMs: 10_000 })
      await closeFleets(ctx)
    }
  }
  return 0
}

runMain(import.meta.url, main)
