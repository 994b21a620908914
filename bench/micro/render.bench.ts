/**
 * Micro bench: one frame of the fleet table (80×50, colour on, a row selected) for 100 vs 10,000 hosts, plus the
 * once-per-data-update step (filter + sort + count) that is allowed to grow with the fleet.
 *
 *   node --conditions=kay-source --import tsx bench/micro/render.bench.ts
 *
 * The claim to check: the per-frame cost does not depend on the fleet size (only the viewport is formatted),
 * so the two "render one frame" rows should be within noise of each other.
 */

import { Bench } from 'tinybench'
import { type FleetRow, type FleetSummary, prepareTable, renderFleet } from '../../packages/cli/src/ui/table.js'
import type { HostMetrics } from '../../packages/core/src/collection/types.js'

function fleet(n: number): FleetRow[] {
  const rows: FleetRow[] = []
  for (let i = 0; i < n; i++) {
    const id = `host${String(i + 1).padStart(5, '0')}`
    if (i % 50 === 7) {
      rows.push({
        id,
        state: 'backoff',
        nextRetryAt: Date.now() + 5000,
        lastError: { code: 'KAY_CONNECT_FAILED', message: 'connect ECONNREFUSED' },
      })
      continue
    }
    const metrics: HostMetrics = {
      at: Date.now(),
      cpuPct: (i * 37) % 100,
      cpus: 8,
      memTotalBytes: 32 * 1024 ** 3,
      memUsedBytes: ((i % 30) + 1) * 1024 ** 3,
      memAvailableBytes: 0,
      swapTotalBytes: 0,
      swapUsedBytes: 0,
      load1: (i % 13) / 3,
      load5: 1,
      load15: 0.5,
      uptimeSeconds: 86_400 * (i % 40),
      netRxBytesPerSec: i * 1000,
      netTxBytesPerSec: i * 100,
      rootFsUsedPct: i % 100,
    }
    rows.push({ id, state: 'ready', metrics, rttMs: 0.5 + (i % 10), collectMode: 'stream-bash' })
  }
  return rows
}

const summary: FleetSummary = { tick: 12, handshakes: 10_000, dialSlotsInUse: 4, dialSlotsCap: 16 }
const small = fleet(100)
const big = fleet(10_000)
const smallTable = prepareTable(small, { sort: 'cpu' })
const bigTable = prepareTable(big, { sort: 'cpu' })
const frame = { width: 200, height: 50, color: true, summary, selected: 20 }

const bench = new Bench({ time: 1000, warmupTime: 200 })
bench
  .add('render one frame, 100 hosts', () => {
    renderFleet(smallTable, { ...frame, offset: 10 })
  })
  .add('render one frame, 10,000 hosts', () => {
    renderFleet(bigTable, { ...frame, offset: 5000, selected: 5020 })
  })
  .add('prepareTable (filter+sort+count), 100 hosts', () => {
    prepareTable(small, { sort: 'cpu' })
  })
  .add('prepareTable (filter+sort+count), 10,000 hosts', () => {
    prepareTable(big, { sort: 'cpu' })
  })

await bench.run()
console.table(
  bench.tasks.map((t) => {
    const r = t.result
    const ok = r.state === 'completed'
    return {
      task: t.name,
      'ms (mean)': ok ? r.latency.mean.toFixed(4) : r.state,
      'ms (p99)': ok && r.latency.p99 !== undefined ? r.latency.p99.toFixed(4) : '',
      samples: ok ? r.latency.samplesCount : 0,
    }
  }),
)
