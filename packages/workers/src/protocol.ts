/**
 * The supervisor ↔ shard wire protocol: every message that crosses the thread boundary, in one place, as tagged
 * unions. Messages are batched: one `collect` per shard per tick and one reply carrying all its hosts; host events
 * are coalesced per shard per short window. Errors travel as plain data (SerializedError) and are re-created as
 * the same classes on arrival (structured clone would keep only a bare Error).
 */
import { isIP } from 'node:net'
import type { HostDetail, HostStatus, HostTarget, RunResult, SerializedError, StreamFlavour } from '@kay/core'
import { isPackedCollectResults, type PackedCollectResults } from './packed.js'
import type { ExecChunk, HostCollectResult, HostExecResult } from './results.js'

export type { ExecChunk, HostCollectResult, HostExecResult }

export const PROTOCOL_VERSION = 5

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
    /** Set: every host's dial deadline, over its ConnectTimeout. Unset: the host's ConnectTimeout, else the default. */
    handshakeTimeoutMs?: number
    keepaliveIntervalMs: number
    probeDeadlineMs: number
    maxChannels: number
    backoff: { baseMs: number; capMs: number; stableAfterMs: number }
  }
  /**
   * flavours: stream loops to probe, cheapest first (default STREAM_FLAVOURS); node: collect node_exporter's
   * sources too (`kay serve`), their series packed with each collect reply.
   */
  collect: { mode: 'stream' | 'exec'; dfEvery: number; flavours?: StreamFlavour[]; node?: boolean }
  /** Coalescing window for host events, ms. */
  eventWindowMs: number
  /** This shard's share of the fleet-wide dial rate (attempts per second); 0 = no rate limit. */
  dialRatePerSec: number
  /** Enables the `crash` request (tests only). */
  testHooks: boolean
}

export interface ShardWorkerData {
  version: number
  shardIndex: number
  gateBuffer: SharedArrayBuffer
  /** The fleet-wide remote-work gate (stream probes, exec collections): a SharedDialGate buffer, governor off. */
  workGateBuffer: SharedArrayBuffer
  config: ShardConfig
  hosts: HostTarget[]
}

export interface CommandOptions {
  timeoutMs?: number
  maxOutputBytes?: number
  /** Written to the command's stdin, then EOF. */
  stdin?: string | Uint8Array
}

interface ExecOptionsWire extends CommandOptions {
  /** Send output as it arrives (`chunks` of `exec-items`) instead of inside each host's result. */
  stream?: boolean
}

/** A copy over SFTP: `put` local sources to `dest` on each host; `get` remote sources into the local dir `dest`. */
export interface CopySpec {
  direction: 'put' | 'get'
  sources: string[]
  dest: string
  recursive: boolean
  /** Deadline per host for the whole copy, ms. */
  timeoutMs: number
}

/** Supervisor → shard. Every request but `add`/`remove`/`crash` carries an id and gets exactly one reply. */
export type ShardRequest =
  | { type: 'add'; hosts: HostTarget[] }
  | { type: 'remove'; ids: string[] }
  | { type: 'collect'; id: number; timeoutMs: number }
  | { type: 'run'; id: number; host: string; command: string; opts: CommandOptions }
  | { type: 'exec'; id: number; hosts: string[]; command: string; opts: ExecOptionsWire }
  | { type: 'copy'; id: number; hosts: string[]; spec: CopySpec }
  /** Stop the exec or copy request `target`: running commands get TERM, hosts not started an abort error. */
  | { type: 'cancel'; target: number }
  /** Stop every exec and copy, and KILL commands still exiting after TERM, now (a second Ctrl-C). */
  | { type: 'hurry' }
  | { type: 'detail'; id: number; host: string; timeoutMs: number }
  | { type: 'status'; id: number }
  | { type: 'stop'; id: number }
  | { type: 'crash'; how: 'throw' | 'exit' }
  /** The answer to the shard's `resolve` of the same id: an address, or why not. */
  | { type: 'resolved'; id: number; address?: string; family?: 4 | 6; error?: SerializedError }

export interface ShardStats {
  hosts: number
  byState: Record<string, number>
  handshakes: number
  droppedFrames: number
  byMode: Record<string, number>
}

/**
 * `seq` (here and in replies): where the status falls in the shard's order of status captures (shard.ts `statusSeq`);
 * the supervisor keeps each host's newest, not the last to arrive.
 */
export type HostEvent =
  | { kind: 'state'; status: HostStatus; seq: number }
  | { kind: 'pinned'; host: string; fingerprint: string }

/** Shard → supervisor. */
export type ShardMessage =
  | { type: 'ready'; version: number; shardIndex: number }
  /**
   * `packed`: the ready hosts with metrics as rows of a transferred buffer (packed.ts); `results`: the rest. Every
   * host's status travels with its result and `droppedFrames` is the shard's count so far, so a tick needs no
   * `status` round trip after it.
   */
  | {
      type: 'collect-result'
      id: number
      results: HostCollectResult[]
      /** When each of `results`' statuses was taken (the rows carry theirs). */
      seqs: number[]
      packed?: PackedCollectResults
      droppedFrames: number
    }
  | { type: 'run-result'; id: number; host: string; result?: RunResult; error?: SerializedError }
  /** Results (and, for a streamed exec, output chunks, which come before their host's result) of an exec or copy. */
  | { type: 'exec-items'; id: number; items: HostExecResult[]; chunks?: ExecChunk[]; done: boolean }
  | { type: 'detail-result'; id: number; host: string; detail?: HostDetail; error?: SerializedError }
  /** `seq`: when the shard took the statuses (all at once). */
  | { type: 'status-result'; id: number; statuses: HostStatus[]; seq: number; stats: ShardStats }
  | { type: 'stopped'; id: number }
  | { type: 'events'; events: HostEvent[] }
  /**
   * A host's name to resolve before its dial (ids are the shard's own). Every shard asks the supervisor's one
   * resolver, so the cache and the concurrency bound are fleet-wide (connection/resolver.ts).
   */
  | { type: 'resolve'; id: number; hostname: string }

type Obj = Record<string, unknown>

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const isStr = (v: unknown): v is string => typeof v === 'string'
const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0
const isMs = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v >= 0
const optional = (v: unknown, check: (x: unknown) => boolean): boolean => v === undefined || check(v)
const arrayOf = (v: unknown, check: (x: unknown) => boolean): boolean => Array.isArray(v) && v.every(check)

/** ProxyJump chains are short; a deeper one is not something kay built. */
const MAX_JUMP_DEPTH = 8

function isHostTarget(v: unknown, depth = 0): boolean {
  if (!isObj(v) || depth > MAX_JUMP_DEPTH) return false
  return (
    isStr(v.id) &&
    isStr(v.hostname) &&
    Number.isInteger(v.port) &&
    (v.port as number) >= 0 &&
    (v.port as number) <= 65_535 &&
    isStr(v.user) &&
    optional(v.proxyCommand, isStr) &&
    optional(v.jump, (j) => arrayOf(j, (h) => isHostTarget(h, depth + 1)))
  )
}

const isBytes = (v: unknown): boolean => v instanceof Uint8Array

function isRunOptions(v: unknown): boolean {
  return (
    isObj(v) &&
    optional(v.timeoutMs, isMs) &&
    optional(v.maxOutputBytes, isMs) &&
    optional(v.stdin, (x) => isStr(x) || isBytes(x)) &&
    optional(v.stream, (x) => typeof x === 'boolean')
  )
}

function isCopySpec(v: unknown): boolean {
  return (
    isObj(v) &&
    (v.direction === 'put' || v.direction === 'get') &&
    arrayOf(v.sources, isStr) &&
    (v.sources as unknown[]).length > 0 &&
    isStr(v.dest) &&
    typeof v.recursive === 'boolean' &&
    isMs(v.timeoutMs)
  )
}

/** A serialized KayError as it crosses threads: a `KAY_*` code, a message, optional host and details. */
export function isSerializedError(v: unknown): v is SerializedError {
  return (
    isObj(v) &&
    isStr(v.code) &&
    v.code.startsWith('KAY_') &&
    isStr(v.message) &&
    optional(v.host, isStr) &&
    optional(v.details, isObj)
  )
}

function isHostStatus(v: unknown): v is HostStatus {
  return isObj(v) && isStr(v.id) && isStr(v.state) && isMs(v.attempts) && isMs(v.handshakes)
}

function isRunResult(v: unknown): boolean {
  return (
    isObj(v) &&
    isStr(v.stdout) &&
    isStr(v.stderr) &&
    (v.exitCode === null || Number.isInteger(v.exitCode)) &&
    (v.signal === null || isStr(v.signal)) &&
    isMs(v.durationMs)
  )
}

function isCollectResult(v: unknown): boolean {
  return (
    isObj(v) &&
    isStr(v.host) &&
    isHostStatus(v.status) &&
    optional(v.metrics, isObj) &&
    optional(v.error, isSerializedError) &&
    optional(v.collectMode, isStr)
  )
}

function isExecItem(v: unknown): boolean {
  return (
    isObj(v) &&
    isStr(v.host) &&
    optional(v.result, isRunResult) &&
    optional(v.error, isSerializedError) &&
    optional(v.partial, (p) => isObj(p) && isStr(p.stdout) && isStr(p.stderr)) &&
    optional(v.durationMs, isMs) &&
    optional(v.copied, isObj)
  )
}

function isChunk(v: unknown): boolean {
  return isObj(v) && isStr(v.host) && (v.stream === 'stdout' || v.stream === 'stderr') && isBytes(v.data)
}

function isHostEvent(v: unknown): boolean {
  if (!isObj(v)) return false
  if (v.kind === 'state') return isHostStatus(v.status) && isId(v.seq)
  return v.kind === 'pinned' && isStr(v.host) && isStr(v.fingerprint)
}

const REQUEST_CHECKS: Record<string, (m: Obj) => boolean> = {
  add: (m) => arrayOf(m.hosts, (h) => isHostTarget(h)),
  remove: (m) => arrayOf(m.ids, isStr),
  collect: (m) => isId(m.id) && isMs(m.timeoutMs),
  run: (m) => isId(m.id) && isStr(m.host) && isStr(m.command) && isRunOptions(m.opts),
  exec: (m) => isId(m.id) && arrayOf(m.hosts, isStr) && isStr(m.command) && isRunOptions(m.opts),
  copy: (m) => isId(m.id) && arrayOf(m.hosts, isStr) && isCopySpec(m.spec),
  cancel: (m) => isId(m.target),
  hurry: () => true,
  detail: (m) => isId(m.id) && isStr(m.host) && isMs(m.timeoutMs),
  status: (m) => isId(m.id),
  stop: (m) => isId(m.id),
  crash: (m) => m.how === 'throw' || m.how === 'exit',
  resolved: (m) =>
    isId(m.id) &&
    optional(m.address, (a) => isStr(a) && isIP(a) !== 0) &&
    optional(m.family, (f) => f === 4 || f === 6) &&
    optional(m.error, isSerializedError) &&
    (m.address === undefined) !== (m.error === undefined),
}

const MESSAGE_CHECKS: Record<string, (m: Obj) => boolean> = {
  ready: (m) => isId(m.version) && isId(m.shardIndex),
  'collect-result': (m) =>
    isId(m.id) &&
    arrayOf(m.results, isCollectResult) &&
    arrayOf(m.seqs, isId) &&
    (m.seqs as unknown[]).length === (m.results as unknown[]).length &&
    optional(m.packed, isPackedCollectResults) &&
    isId(m.droppedFrames),
  'run-result': (m) =>
    isId(m.id) && isStr(m.host) && optional(m.result, isRunResult) && optional(m.error, isSerializedError),
  'exec-items': (m) =>
    isId(m.id) &&
    arrayOf(m.items, isExecItem) &&
    optional(m.chunks, (c) => arrayOf(c, isChunk)) &&
    typeof m.done === 'boolean',
  'detail-result': (m) =>
    isId(m.id) && isStr(m.host) && optional(m.detail, isObj) && optional(m.error, isSerializedError),
  'status-result': (m) => isId(m.id) && arrayOf(m.statuses, isHostStatus) && isId(m.seq) && isObj(m.stats),
  stopped: (m) => isId(m.id),
  events: (m) => arrayOf(m.events, isHostEvent),
  resolve: (m) => isId(m.id) && isStr(m.hostname),
}

function check(table: Record<string, (m: Obj) => boolean>, v: unknown): boolean {
  if (!isObj(v) || !isStr(v.type) || !Object.hasOwn(table, v.type)) return false
  return table[v.type]!(v)
}

/**
 * Validates a request arriving in a shard, payload included: a malformed request is dropped instead of crashing
 * the shard (and every host in it) on a missing field.
 */
export function isShardRequest(v: unknown): v is ShardRequest {
  return check(REQUEST_CHECKS, v)
}

/** Validates a message arriving at the supervisor, payload included (metrics and details are checked as objects). */
export function isShardMessage(v: unknown): v is ShardMessage {
  return check(MESSAGE_CHECKS, v)
}
