/** What a shard answers for one host: the data types shared by the wire protocol and the packed rows. */
import type { CollectMode, HostMetrics, HostStatus, RunResult, SerializedError } from '@kay/core'

/** One host's outcome of a collect tick: metrics, or a typed error, always with its connection status. */
export interface HostCollectResult {
  host: string
  status: HostStatus
  metrics?: HostMetrics
  error?: SerializedError
  collectMode?: CollectMode
}

/** One host's outcome of an exec or a copy: a result or a typed error, never neither. */
export interface HostExecResult {
  host: string
  result?: RunResult
  error?: SerializedError
  /** Output received before `error` (timeout, output cap, abort, connection loss), when the output was not streamed. */
  partial?: { stdout: string; stderr: string }
  /** From the start of the host's command (or copy) to its end or failure, ms. */
  durationMs?: number
  /** What a copy moved (`kay cp` / `kay rcopy`). */
  copied?: { files: number; directories: number; bytes: number }
}

/** Output of one host's command as it arrived (streamed exec), batched per shard per short window. */
export interface ExecChunk {
  host: string
  stream: 'stdout' | 'stderr'
  data: Uint8Array
}
