/** What a shard answers for one host: the data types shared by the wire protocol and the packed rows. */
import type { CollectMode, HostMetrics, HostStatus, SerializedError } from '@kay/core'

export interface RunResultWire {
  stdout: string
  stderr: string
  exitCode: number | null
  signal: string | null
  durationMs: number
}

/** One host's outcome of a collect tick: metrics, or a typed error, always with its connection status. */
export interface HostCollectResult {
  host: string
  status: HostStatus
  metrics?: HostMetrics
  error?: SerializedError
  collectMode?: CollectMode
}

export interface HostExecResult {
  host: string
  result?: RunResultWire
  error?: SerializedError
}
