/**
 * Micro bench: one dial slot, taken and given back, uncontended. LocalDialGate (core, one thread) against
 * SharedDialGate (workers, Atomics over a SharedArrayBuffer), governor on and off, plus the raw CAS floor.
 *
 *   node --conditions=kay-source --import tsx bench/micro/dial-gate.bench.ts
 *
 * Each sample runs BATCH operations so the timer's own cost (tens of ns) does not swamp a ~50 ns operation;
 * the ns/op table divides by BATCH. DESIGN.md's figure to compare with: 38–58 ns uncontended.
 */

import { LocalDialGate } from '@kay/core'
import { Bench } from 'tinybench'
import { SharedDialGate } from '../../packages/workers/src/shared-dial-gate.js'

const BATCH = 1000

const local = new LocalDialGate({ cap: 16 })
const shared = new SharedDialGate(SharedDialGate.createBuffer({ cap: 16 }), 0)
const sharedOff = new SharedDialGate(SharedDialGate.createBuffer({ cap: 16, governor: false }), 0)
const raw = new Int32Array(new SharedArrayBuffer(16))

const bench = new Bench({ time: 1000, warmupTime: 200 })

bench
  .add(`LocalDialGate tryAcquire+release ×${BATCH}`, () => {
    for (let i = 0; i < BATCH; i++) local.tryAcquire()!.release('ok')
  })
  .add(`SharedDialGate tryAcquire+release ×${BATCH} (governor on)`, () => {
    for (let i = 0; i < BATCH; i++) shared.tryAcquire()!.release('ok')
  })
  .add(`SharedDialGate tryAcquire+release ×${BATCH} (governor off)`, () => {
    for (let i = 0; i < BATCH; i++) sharedOff.tryAcquire()!.release('ok')
  })
  .add(`raw CAS + sub + notify ×${BATCH} (floor)`, () => {
    for (let i = 0; i < BATCH; i++) {
      const cur = Atomics.load(raw, 0)
      if (Atomics.compareExchange(raw, 0, cur, cur + 1) === cur) {
        Atomics.sub(raw, 0, 1)
        Atomics.add(raw, 1, 1)
        Atomics.notify(raw, 1)
      }
    }
  })
  .add(`LocalDialGate await acquire()+release ×${BATCH}`, async () => {
    for (let i = 0; i < BATCH; i++) (await local.acquire()).release('ok')
  })
  .add(`SharedDialGate await acquire()+release ×${BATCH}`, async () => {
    for (let i = 0; i < BATCH; i++) (await shared.acquire()).release('ok')
  })

await bench.run()
console.table(bench.table())
console.table(
  bench.tasks.map((t) => {
    const r = t.result
    const ok = r.state === 'completed'
    return {
      task: t.name,
      'ns/op (mean)': ok ? ((r.latency.mean * 1e6) / BATCH).toFixed(1) : r.state,
      'ns/op (median)': ok && r.latency.p50 !== undefined ? ((r.latency.p50 * 1e6) / BATCH).toFixed(1) : '',
      'ns/op (p99)': ok && r.latency.p99 !== undefined ? ((r.latency.p99 * 1e6) / BATCH).toFixed(1) : '',
    }
  }),
)
