/**
 * Micro bench: the metrics parser (per host per tick) and the stream frame decoder.
 *
 *   node --conditions=kay-source --import tsx bench/micro/metrics-parser.bench.ts
 *
 * Reports samples/s (tinybench) and approximate bytes allocated per sample: heapUsed delta over short bursts
 * that fit in the young generation, right after a full GC (gc is exposed at runtime when the flag is absent).
 */

import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Bench } from 'tinybench'
import {
  computeMetrics,
  FrameDecoder,
  parseCollection,
  parseSample,
  parseSections,
  type RawSample,
} from '../../packages/core/src/collection/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const fixtures = join(here, '../../packages/core/test/fixtures/proc')
const SECTIONS = ['loadavg', 'meminfo', 'stat', 'uptime', 'netdev']

function frame(dir: string, withDf: boolean): string {
  const names = withDf ? [...SECTIONS, 'df'] : SECTIONS
  return names.map((n) => `@@kay ${n}\n${readFileSync(join(fixtures, dir, n), 'utf8')}`).join('')
}

/** A 64-CPU host: the 2-CPU stat with 64 per-cpu lines. */
function wide(text: string): string {
  const cpuLines = Array.from({ length: 64 }, (_, i) => `cpu${i} 1284 0 940 22411 46 0 5 3 0 0`).join('\n')
  return text.replace(/^cpu0 .*\ncpu1 .*$/m, cpuLines)
}

const a = frame('local-a', false)
const b = frame('local-b', false)
const b64 = wide(b)
const prev = parseSample(parseSections(a), 0)
const prev64 = parseSample(parseSections(wide(a)), 0)
/** What the perl loop sends: /proc/stat cut before `intr`, /proc/meminfo cut after SReclaimable. */
const b64perl = b64.replace(/\nintr [\s\S]*?(?=@@kay )/, '\n').replace(/\nSUnreclaim:[\s\S]*?(?=@@kay )/, '\n')
let sink: unknown

function gcFn(): () => void {
  const g = (globalThis as { gc?: () => void }).gc
  if (g) return g
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

/** Median heap growth per call over bursts small enough not to trigger a scavenge. */
function bytesPerCall(fn: () => unknown, burst = 200, rounds = 25): number {
  const gc = gcFn()
  const deltas: number[] = []
  for (let r = 0; r < rounds; r++) {
    gc()
    const before = process.memoryUsage().heapUsed
    for (let i = 0; i < burst; i++) sink = fn()
    const after = process.memoryUsage().heapUsed
    if (after >= before) deltas.push((after - before) / burst)
  }
  deltas.sort((x, y) => x - y)
  return Math.round(deltas[Math.floor(deltas.length / 2)] ?? Number.NaN)
}

const token = '0123456789abcdef'
const wire = Buffer.from(`${b}@@kay-end ${token} 1\n`)
const chunks = [wire.subarray(0, 1400), wire.subarray(1400, 2800), wire.subarray(2800)]

const cases: Record<string, () => unknown> = {
  'parseCollection 2-cpu (sections+sample+metrics)': () => parseCollection(b, 5000, prev),
  'parseSections 2-cpu': () => parseSections(b),
  'parseSample+computeMetrics 2-cpu (sections pre-split)': (() => {
    const s = parseSections(b)
    return () => computeMetrics(prev as RawSample, parseSample(s, 5000))
  })(),
  'parseCollection 64-cpu': () => parseCollection(b64, 5000, prev64),
  // What a tick does since the second pass: aggregate cpu counters only (drill-in parses per-CPU lines itself).
  'tick 64-cpu: sections+sample(perCpu false)+metrics': () =>
    computeMetrics(prev64, parseSample(parseSections(b64), 5000, false)),
  // …on the frame the perl loop sends (stat up to its cpu lines, meminfo up to SReclaimable).
  'tick 64-cpu, perl-trimmed frame': () => computeMetrics(prev64, parseSample(parseSections(b64perl), 5000, false)),
  'FrameDecoder 2-cpu frame in 3 chunks': () => {
    const d = new FrameDecoder({ token })
    d.expect(1)
    d.push(chunks[0]!)
    d.push(chunks[1]!)
    return d.push(chunks[2]!)
  },
}

const bench = new Bench({ time: 1000, warmup: true })
for (const [name, fn] of Object.entries(cases)) {
  bench.add(name, () => {
    sink = fn()
  })
}
await bench.run()

console.log(
  `input: 2-cpu frame ${b.length} chars, 64-cpu frame ${b64.length} chars, perl-trimmed 64-cpu ${b64perl.length} chars`,
)
console.table(
  bench.tasks.map((t) => {
    const r = t.result as { latency?: { mean: number; p50?: number } } | undefined
    const mean = r?.latency?.mean ?? Number.NaN
    return {
      task: t.name,
      // 1 / mean latency: what a shard doing nothing else would sustain (tinybench's mean of per-sample
      // throughputs overstates it when a few samples are slow).
      'ops/s': Math.round(1000 / mean),
      'mean µs': Number((mean * 1000).toFixed(2)),
      'p50 µs': Number(((r?.latency?.p50 ?? Number.NaN) * 1000).toFixed(2)),
      'bytes/op': bytesPerCall(cases[t.name]!),
    }
  }),
)
void sink
