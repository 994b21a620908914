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
  /**
   * Bytes/s over the interval, summed over the interfaces that have a device (not under /sys/devices/virtual/net:
   * NICs, not veths, bridges or tunnels, so container traffic counts once), or over all but lo on a host where none
   * has one (a container); undefined on the first sample or without netdev. See docs/collection-protocol.md.
   */
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
  filesystems: Array<{
    filesystem: string
    sizeKb: number
    usedKb: number
    availKb: number
    usedPct: number
    mount: string
  }>
  interfaces: Array<{ name: string; rxBytes: number; txBytes: number; rxBytesPerSec?: number; txBytesPerSec?: number }>
}

/** The CPU states kay reports, in /proc/stat column order. */
export type CpuState = 'user' | 'nice' | 'system' | 'idle' | 'iowait' | 'irq' | 'softirq' | 'steal'

/** One network interface's cumulative counters (bytes since the interface came up). */
export interface InterfaceCounters {
  name: string
  rxBytes: number
  txBytes: number
}

/**
 * The raw counters of one collection, as parsed (no rates). Keep the previous one per host and hand both to
 * `computeMetrics`: CPU % and network rates are deltas between two samples.
 */
export interface RawSample {
  /** Epoch ms when the sample was taken (collector clock). */
  at: number
  /** Number of `cpuN` lines in /proc/stat (online CPUs). */
  cpus: number
  /** The cpu number of each `cpuN` line, in order. */
  cpuIds: number[]
  /**
   * Jiffies, flat: 8 per row in {@link CpuState} order; row 0 is the aggregate `cpu` line, row k+1 is `cpuIds[k]`.
   * Flat so that a sample of a 64-CPU host is two arrays, not 65 objects. A tick's sample (parsed with
   * `perCpu: false`) holds row 0 only: the per-CPU rows are for drill-in, which parses its own.
   */
  cpuTimes: number[]
  memTotalBytes: number
  memFreeBytes: number
  memAvailableBytes: number
  swapTotalBytes: number
  swapFreeBytes: number
  load1: number
  load5: number
  load15: number
  uptimeSeconds: number
  /** Interfaces other than lo; undefined when the netdev section is absent. */
  interfaces?: InterfaceCounters[] | undefined
  /** Root filesystem use %, when this collection carried a df section (or, after `computeMetrics`, an earlier one). */
  rootFsUsedPct?: number | undefined
}

/**
 * node_exporter series of many hosts for one tick, grouped by family (what a shard sends its supervisor): family
 * `families[i]` is the UTF-8 text `bytes[ends[i-1] ?? 0, ends[i])`, series lines only (no HELP or TYPE line).
 * `bytes` is over a plain ArrayBuffer of its own, so it can be transferred to another thread.
 */
export interface NodeChunk {
  families: string[]
  bytes: Uint8Array
  ends: Uint32Array
}
