import type { HostDetail, HostMetrics } from '../../../core/src/collection/types.js'
import type { FleetRow } from '../../src/ui/table.js'

/** Plausible metrics; override any field. */
export function metrics(over: Partial<HostMetrics> = {}): HostMetrics {
  return {
    at: 1_700_000_000_000,
    cpuPct: 12.5,
    cpus: 4,
    memTotalBytes: 16 * 1024 ** 3,
    memUsedBytes: 6 * 1024 ** 3,
    memAvailableBytes: 10 * 1024 ** 3,
    swapTotalBytes: 2 * 1024 ** 3,
    swapUsedBytes: 0,
    load1: 0.42,
    load5: 0.3,
    load15: 0.25,
    uptimeSeconds: 3 * 86_400 + 4 * 3600 + 120,
    netRxBytesPerSec: 150_000,
    netTxBytesPerSec: 20_000,
    rootFsUsedPct: 41.2,
    ...over,
  }
}

/** A ready row with metrics. */
export function readyRow(id: string, over: Partial<FleetRow> = {}): FleetRow {
  return { id, state: 'ready', metrics: metrics(), rttMs: 0.8, collectMode: 'stream-bash', ...over }
}

/** `n` rows named host00001…, a mix of states, deterministic. */
export function fleet(n: number): FleetRow[] {
  const rows: FleetRow[] = []
  for (let i = 0; i < n; i++) {
    const id = `host${String(i + 1).padStart(5, '0')}`
    if (i % 50 === 7) {
      rows.push({
        id,
        state: 'backoff',
        nextRetryAt: 1_700_000_000_000 + i,
        lastError: { code: 'KAY_CONNECT_FAILED', message: 'connect ECONNREFUSED 127.0.0.1:22' },
      })
    } else if (i % 97 === 3) {
      rows.push({ id, state: 'dialing' })
    } else {
      rows.push(readyRow(id, { metrics: metrics({ cpuPct: (i * 37) % 100, load1: (i % 13) / 3 }) }))
    }
  }
  return rows
}

export function detail(over: Partial<HostDetail> = {}): HostDetail {
  return {
    metrics: metrics({ cpus: 8 }),
    perCpuPct: [5, 95.5, 40, 0, 12, 100, 33.3, 7],
    processes: Array.from({ length: 20 }, (_, i) => ({
      pid: 1000 + i,
      user: i % 2 === 0 ? 'root' : 'postgres',
      cpuPct: 50 - i,
      memPct: i / 2,
      rssKb: 10_000 * (i + 1),
      command: `proc-${i}`,
    })),
    filesystems: [
      {
        filesystem: '/dev/sda1',
        sizeKb: 100_000_000,
        usedKb: 41_000_000,
        availKb: 59_000_000,
        usedPct: 41,
        mount: '/',
      },
      { filesystem: 'tmpfs', sizeKb: 1_000_000, usedKb: 0, availKb: 1_000_000, usedPct: 0, mount: '/run' },
    ],
    interfaces: [
      { name: 'eth0', rxBytes: 123_456_789, txBytes: 9_876_543, rxBytesPerSec: 150_000, txBytesPerSec: 20_000 },
    ],
    ...over,
  }
}
