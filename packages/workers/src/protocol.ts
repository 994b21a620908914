/**
 * The supervisor ↔ shard wire protocol: every message that crosses the thread boundary, in one place, as tagged
 * unions. Messages are batched: one `collect` per shard per tick and one reply carrying all its hosts; host events
 * are coalesced per shard per short window. Errors travel as plain data (SerializedError) and are re-created as
 * the same classes on arrival (structured clone would keep only a bare Error).
 */
import type { CollectMode, HostDetail, HostMetrics, HostStatus, HostTarget, SerializedError } from '@kay/core'

export const PROTOCOL_VERSION = 1

/** What a shard needs to build its actors. Plain data: it crosses threads. */
export interface ShardConfig {
  identity: {
    username: string
    /** Private key files (OpenSSH or PEM); parsed once per shard. */
    keyFiles: string[]
    /** Private keys given inline (PEM / OpenSSH text), e.g. the demo's temporary key. */
    keys?: string[]
    /** ssh-agent socket. */
    agent?: string
  }
  trust: {
    /** kay's pin store (known_hosts format). */
    knownHostsPath: string
    /** Read-only known_hosts files honoured as well (the user's ~/.ssh/known_hosts, UserKnownHostsFile). */
    extraKnownHosts: string[]
    policy: 'yes' | 'accept-new' | 'no'
  }
  actor: {
    handshakeTimeoutMs: number
    keepaliveIntervalMs: number
    probeDeadlineMs: number
    maxChannels: number
    backoff: { baseMs: number; capMs: number; stableAfterMs: number }
  }
  collect: { mode: 'stream' | 'exec'; dfEvery: number }
  /** Coalescing window for host events, ms. */
  eventWindowMs: number
  /** Enables the `crash` request (tests only). */
  testHooks: boolean
}

export interface ShardWorkerData {
  version: number
  shardIndex: number
  gateBuffer: SharedArrayBuffer
  config: ShardConfig
  hosts: HostTarget[]
}

export interface RunOptionsWire {
  timeoutMs?: number
  maxOutputBytes?: number
  stdin?: string
}

/** Supervisor → shard. Every request but `add`/`remove`/`crash` carries an id and gets exactly one reply. */
export type ShardRequest =
  | { type: 'add'; hosts: HostTarget[] }
  | { type: 'remove'; ids: string[] }
  | { type: 'collect'; id: number; timeoutMs: number }
  | { type: 'run'; id: number; host: string; command: string; opts: RunOptionsWire }
  | { type: 'exec'; id: number; hosts: string[]; command: string; opts: RunOptionsWire }
  | { type: 'detail'; id: number; host: string; timeoutMs: number }
  | { type: 'status'; id: number }
  | { type: 'stop'; id: number }
  | { type: 'crash'; how: 'throw' | 'exit' }

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

export interface ShardStats {
  hosts: number
  byState: Record<string, number>
  handshakes: number
  droppedFrames: number
  byMode: Record<string, number>
}

export type HostEvent = { kind: 'state'; status: HostStatus } | { kind: 'pinned'; host: string; fingerprint: string }

/** Shard → supervisor. */
export type ShardMessage =
  | { type: 'ready'; version: number; shardIndex: number }
  | { type: 'collect-result'; id: number; results: HostCollectResult[] }
  | { type: 'run-result'; id: number; host: string; result?: RunResultWire; error?: SerializedError }
  | { type: 'exec-items'; id: number; items: HostExecResult[]; done: boolean }
  | { type: 'detail-result'; id: number; host: string; detail?: HostDetail; error?: SerializedError }
  | { type: 'status-result'; id: number; statuses: HostStatus[]; stats: ShardStats }
  | { type: 'stopped'; id: number }
  | { type: 'events'; events: HostEvent[] }

const REQUEST_TYPES = new Set(['add', 'remove', 'collect', 'run', 'exec', 'detail', 'status', 'stop', 'crash'])
const MESSAGE_TYPES = new Set([
  'ready',
  'collect-result',
  'run-result',
  'exec-items',
  'detail-result',
  'status-result',
  'stopped',
  'events',
])

/** Checks the envelope of a request arriving in a shard (the payload types are trusted: same program). */
export function isShardRequest(v: unknown): v is ShardRequest {
  return typeof v === 'object' && v !== null && REQUEST_TYPES.has((v as { type?: unknown }).type as string)
}

/** Checks the envelope of a message arriving at the supervisor. */
export function isShardMessage(v: unknown): v is ShardMessage {
  return typeof v === 'object' && v !== null && MESSAGE_TYPES.has((v as { type?: unknown }).type as string)
}
