/**
 * Mass outage: N sim hosts connected, then every host drops its connections and refuses new ones for
 * `--outage-s` seconds, then comes back. Measures the dial attempts per second the fleet sees (sim `accepted`
 * deltas, sampled every second), time to all-ready after recovery, and the peak concurrent handshakes during
 * recovery. Writes the per-second series as an SVG (--svg, default bench/stress/outage.svg).
 *
 *   node --conditions=kay-source --import tsx bench/stress/outage.ts --hosts 1000 --outage-s 30 --cap-ms 60000
 *
 * Flags: --hosts (1000), --outage-s (30), --dial-cap (16), --base-ms (1000), --cap-ms (60000), --recover-timeout-s
 * (150), --svg (path, 'none' to skip).
 */
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { flags, reached, record, runMain, sleep, summarize } from '../load/lib.js'
import { closeFleet, openFleet } from '../load/steady.js'
import { sampleEverySecond, sparkline, startSupervisor, totals, writeSvgChart } from './lib.js'

const here = dirname(fileURLToPath(import.meta.url))

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 1000)
  const outageS = Number(f.get('outage-s') ?? 30)
  const dialCap = Number(f.get('dial-cap') ?? 16)
  const baseMs = Number(f.get('base-ms') ?? 1000)
  const capMs = Number(f.get('cap-ms') ?? 60_000)
  const recoverTimeoutS = Number(f.get('recover-timeout-s') ?? 150)
  const svg = f.get('svg') ?? join(here, capMs === 60_000 ? 'outage.svg' : `outage-cap${capMs / 1000}s.svg`)
  const ctx = await openFleet(n)
  const fleets = [ctx.fleet]
  const all = ctx.targets.map((_, i) => i)
  let bad = 0
  try {
    const sup = await startSupervisor(ctx, {
      dialCap,
      threads: 2,
      backoff: { baseMs, capMs },
      keepalive: { intervalMs: 60_000 },
    })
    // 'host' events entering 'dialing' (coalesced per 50 ms window per host by the shards: a lower bound).
    let dialingEvents = 0
    sup.on('host', (s) => {
      if (s.state === 'dialing') dialingEvents++
    })
    try {
      const ready = await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, {
        timeoutMs: 120_000,
        everyMs: 50,
      })
      if (!ready) throw new Error(`not all ready before the outage: ${JSON.stringify(sup.stats().byState)}`)
      await sleep(2000)
      // One reset before sampling starts: the sampler's deltas stay exact, and the handshake peak read at the end
      // covers the outage (refused sockets never count as pending) plus the recovery.
      await ctx.fleet.resetStats()
      const sampler = sampleEverySecond(fleets, outageS + recoverTimeoutS + 30)
      await sleep(3000)
      // Outage: refuse first (so redials are refused), then cut every connection.
      sampler.setPhase('outage')
      const tOut = performance.now()
      const sOut = sampler.samples.length
      await Promise.all(all.map((i) => ctx.fleet.setFault(i, { refuse: true })))
      await Promise.all(all.map((i) => ctx.fleet.drop(i)))
      const dialing0 = dialingEvents
      await sleep(Math.max(0, outageS * 1000 - (performance.now() - tOut)))
      const outageTotals = await totals(fleets)
      const outageDialingEvents = dialingEvents - dialing0
      await Promise.all(all.map((i) => ctx.fleet.setFault(i, { refuse: false })))
      sampler.setPhase('recovery')
      const tBack = performance.now()
      const sBack = sampler.samples.length
      const recovered = await reached('every host ready', () => (sup.stats().byState.ready ?? 0) === n, {
        timeoutMs: recoverTimeoutS * 1000,
        everyMs: 50,
      })
      const recoverMs = performance.now() - tBack
      const endTotals = await totals(fleets)
      const recTotals = {
        ...endTotals,
        handshakesStarted: endTotals.handshakesStarted - outageTotals.handshakesStarted,
      }
      const byState = { ...(await sup.refreshStats()).byState }
      sampler.setPhase('after')
      await sleep(3000)
      await sampler.stop()
      if (!recovered) bad++

      const xs = sampler.samples.map((s) => s.accepted)
      const outSecs = sampler.samples.slice(sOut, sBack).map((s) => s.accepted)
      const recSecs = sampler.samples.slice(sBack).map((s) => s.accepted)
      const peakPerS = Math.max(0, ...xs)
      const result = {
        hosts: n,
        dialCap,
        backoff: { baseMs, capMs },
        outageS,
        outageAttempts: outageTotals.accepted,
        outageRefused: outageTotals.refused,
        outageDialingEvents,
        outageAttemptsPerS: summarize(outSecs),
        recoveryAttemptsPerS: summarize(recSecs),
        maxAttemptsPerS: peakPerS,
        maxOverCap: peakPerS / dialCap,
        recovered,
        recoverMs,
        byStateAtEnd: byState,
        recoveryPeakConcurrentHandshakes: recTotals.maxConcurrentHandshakes,
        recoveryHandshakesStarted: recTotals.handshakesStarted,
        perSecond: sampler.samples,
      }
      record('stress-outage', result)
      console.log(
        `outage ${n} hosts, cap ${dialCap}, backoff ${baseMs}/${capMs} ms: ${outageTotals.accepted} attempts in ` +
          `${outageS} s (per s median ${result.outageAttemptsPerS.median}, max ${Math.max(0, ...outSecs)}); ` +
          `recovery ${recovered ? `${(recoverMs / 1000).toFixed(1)} s` : 'NOT reached'}; peak concurrent ` +
          `handshakes ${recTotals.maxConcurrentHandshakes}; max attempts/s ${peakPerS} (${result.maxOverCap.toFixed(1)}× cap)`,
      )
      console.log(`attempts/s: ${sparkline(xs)}`)
      console.log(`per s: ${xs.join(' ')}`)
      console.log(`phases: outage from sample ${sOut}, recovery from ${sBack}`)
      if (svg !== 'none') {
        writeSvgChart(
          svg,
          `Mass outage: ${n} hosts, dial cap ${dialCap}, backoff ${baseMs / 1000}–${capMs / 1000} s: dial attempts/s`,
          [
            { label: 'TCP accepts/s (dial attempts)', color: '#c0392b', ys: xs },
            {
              label: 'SSH handshakes started/s',
              color: '#2471a3',
              ys: sampler.samples.map((s) => s.handshakesStarted),
            },
          ],
          [{ from: sOut, to: sBack, label: `outage (${outageS} s, refused)` }],
        )
        console.log(`svg: ${svg}`)
      }
    } finally {
      await sup.stop({ timeoutMs: 5000 })
    }
  } finally {
    await closeFleet(ctx)
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
