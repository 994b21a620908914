/** One host's metrics from one collection (rates and CPU % need the previous sample: see `computeMetrics`). */
export interface HostMetrics {
  /** Epoch ms when the sample was taken (collector clock). */
  at: number
  /** CPU busy % over the interval since the previous sample (0–100, all CPUs); undefined on the first sample. */
  cpuPct?: number
  /** Per-state CPU % over the interval (user, nice, system, idle, iowait, irq, softirq, steal). */
  cpuStates?: Record<'user' | 'nice' | 'system' | 'idle' | 'iowait' | 'irq' | 'softirq' | 'steal', number>
  cpus: number
  memTotalBytes: number
  memUsedBytes: number
  memAvailableBytes: number
  swapTotalBytes: number
  swapUsedBytes: number
  load1: number
  load5: number
  load15: number
  uptimeSeconds: number
  /** Bytes/s over the interval, all interfaces but lo; undefined on the first sample or without netdev. */
  netRxBytesPerSec?: number
  netTxBytesPerSec?: number
  /** Root filesystem use, % (from the last df seen; df is sampled less often than the rest). */
  rootFsUsedPct?: number
}

/** Drill-in detail for one host. */
export interface HostDetail {
  metrics: HostMetrics
  /** Per-core busy % over the interval (index = cpu number); empty on the first sample. */
  perCpuPct: number[]
  processes: Array<{ pid: number; user: string; cpuPct: number; memPct: number; rssKb: number; command: string }>
  filesystems: Array<{ filesystem: string; sizeKb: number; usedKb: number; availKb: number; usedPct: number; mount: string }>
  interfaces: Array<{ name: string; rxBytes: number; txBytes: number; rxBytesPerSec?: number; txBytesPerSec?: number }>
}
