/**
 * The common case of a collect reply, packed: a ready host with metrics and a plain status travels as one row of
 * numbers in a Float64Array that is transferred, not cloned, plus its id in a string array. Structured clone of
 * ~30 properties in 3 objects per host cost 5.75 µs per host per tick (bench/micro/dispatch.bench.ts); a row of
 * a transferred buffer, 0.09 µs. Anything else (an error, a host not ready, a status with a last error, a value
 * that is not a finite number) stays an object in `results`, so nothing is lost to the packing.
 *
 * A row, PACKED_FIELDS numbers; NaN = absent (an optional field):
 *   0 at · 1 cpus · 2 memTotalBytes · 3 memUsedBytes · 4 memAvailableBytes · 5 swapTotalBytes · 6 swapUsedBytes
 *   7 load1 · 8 load5 · 9 load15 · 10 uptimeSeconds · 11 cpuPct · 12 netRxBytesPerSec · 13 netTxBytesPerSec
 *   14 rootFsUsedPct · 15–22 cpuStates (CPU_STATES order; all or none) · 23 attempts · 24 handshakes · 25 rttMs
 *   26 readySince · 27 collectMode (index in PACKED_MODES)
 */
import { COLLECT_MODES, type CollectMode, CPU_STATES, type HostMetrics, type HostStatus } from '@kay/core'
import type { HostCollectResult } from './protocol.js'

/** The collect modes a row can carry, by index (a row stores the index). */
export const PACKED_MODES: readonly CollectMode[] = COLLECT_MODES

const STATES = CPU_STATES
const STATE_KEYS = new Set<string>(STATES)
const REQUIRED = [
  'at',
  'cpus',
  'memTotalBytes',
  'memUsedBytes',
  'memAvailableBytes',
  'swapTotalBytes',
  'swapUsedBytes',
  'load1',
  'load5',
  'load15',
  'uptimeSeconds',
] as const
const OPTIONAL = ['cpuPct', 'netRxBytesPerSec', 'netTxBytesPerSec', 'rootFsUsedPct'] as const
const METRIC_KEYS = new Set<string>([...REQUIRED, ...OPTIONAL, 'cpuStates'])
// Row offsets, in the order of the layout above.
const OPTIONAL_AT = REQUIRED.length
const STATES_AT = OPTIONAL_AT + OPTIONAL.length
const ATTEMPTS_AT = STATES_AT + STATES.length
const HANDSHAKES_AT = ATTEMPTS_AT + 1
const RTT_AT = HANDSHAKES_AT + 1
const READY_SINCE_AT = RTT_AT + 1
const MODE_AT = READY_SINCE_AT + 1
/** Numbers per row (28). */
export const PACKED_FIELDS = MODE_AT + 1
const STATUS_KEYS = new Set<string>(['id', 'state', 'attempts', 'handshakes', 'rttMs', 'readySince'])
const RESULT_KEYS = new Set<string>(['host', 'status', 'metrics', 'collectMode'])

export interface PackedCollectResults {
  /** Host ids, one per row. */
  hosts: string[]
  /** hosts.length × PACKED_FIELDS numbers. */
  values: Float64Array
}

function fin(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v)
}

function onlyKeys(o: object, allowed: Set<string>): boolean {
  for (const k in o) if (!allowed.has(k)) return false
  return true
}

/** Whether a result fits a row exactly (so that unpacking gives back an equal object). */
function packable(r: HostCollectResult): boolean {
  const { status: s, metrics: m } = r
  if (m === undefined || r.error !== undefined || !onlyKeys(r, RESULT_KEYS)) return false
  if (s.id !== r.host || s.state !== 'ready' || !onlyKeys(s, STATUS_KEYS)) return false
  if (!fin(s.attempts) || !fin(s.handshakes)) return false
  if (s.rttMs !== undefined && !fin(s.rttMs)) return false
  if (s.readySince !== undefined && !fin(s.readySince)) return false
  if (r.collectMode !== undefined && !PACKED_MODES.includes(r.collectMode)) return false
  if (!onlyKeys(m, METRIC_KEYS)) return false
  for (const k of REQUIRED) if (!fin(m[k])) return false
  for (const k of OPTIONAL) if (m[k] !== undefined && !fin(m[k])) return false
  if (m.cpuStates !== undefined) {
    // Exactly the eight states, each a finite number (checked without listing the keys: this runs per host per tick).
    if (typeof m.cpuStates !== 'object' || m.cpuStates === null || !onlyKeys(m.cpuStates, STATE_KEYS)) return false
    for (const k of STATES) if (!fin(m.cpuStates[k])) return false
  }
  return true
}

/**
 * Packs a collect reply as its results come in: each result is packed into its row at once (or kept as an object
 * if it does not pack), so a shard holds no result objects while a tick is under way. `finish` gives the rows in
 * the order they were added and the other results in theirs. Send `packed.values.buffer` in the transfer list.
 */
export class CollectPacker {
  readonly #values: Float64Array
  readonly #hosts: string[] = []
  readonly #rest: HostCollectResult[] = []

  /** `capacity`: the most results that will be added (the shard's host count). */
  constructor(capacity: number) {
    this.#values = new Float64Array(Math.max(0, capacity) * PACKED_FIELDS).fill(Number.NaN)
  }

  add(r: HostCollectResult): void {
    const i = this.#hosts.length
    if (!packable(r) || (i + 1) * PACKED_FIELDS > this.#values.length) {
      this.#rest.push(r)
      return
    }
    const values = this.#values
    const m = r.metrics!
    const s = r.status
    const o = i * PACKED_FIELDS
    this.#hosts.push(r.host)
    for (let k = 0; k < REQUIRED.length; k++) values[o + k] = m[REQUIRED[k]!]
    for (let k = 0; k < OPTIONAL.length; k++) {
      const v = m[OPTIONAL[k]!]
      if (v !== undefined) values[o + OPTIONAL_AT + k] = v
    }
    if (m.cpuStates) for (let k = 0; k < STATES.length; k++) values[o + STATES_AT + k] = m.cpuStates[STATES[k]!]
    values[o + ATTEMPTS_AT] = s.attempts
    values[o + HANDSHAKES_AT] = s.handshakes
    if (s.rttMs !== undefined) values[o + RTT_AT] = s.rttMs
    if (s.readySince !== undefined) values[o + READY_SINCE_AT] = s.readySince
    if (r.collectMode !== undefined) values[o + MODE_AT] = PACKED_MODES.indexOf(r.collectMode)
  }

  /** The reply: the rows (trimmed to the results that packed) and the results that did not. */
  finish(): { results: HostCollectResult[]; packed: PackedCollectResults } {
    const n = this.#hosts.length * PACKED_FIELDS
    const values = n === this.#values.length ? this.#values : this.#values.slice(0, n)
    return { results: this.#rest, packed: { hosts: this.#hosts, values } }
  }
}

/** Splits a collect reply into the rows that pack and the results that stay objects (in their order). */
export function packCollectResults(results: readonly HostCollectResult[]): {
  results: HostCollectResult[]
  packed: PackedCollectResults
} {
  const packer = new CollectPacker(results.length)
  for (const r of results) packer.add(r)
  return packer.finish()
}

/** The results a packed block stands for: equal to what was packed. */
export function unpackCollectResults(p: PackedCollectResults): HostCollectResult[] {
  const { hosts, values } = p
  const out: HostCollectResult[] = new Array(hosts.length)
  for (let i = 0; i < hosts.length; i++) {
    const o = i * PACKED_FIELDS
    const host = hosts[i]!
    // The same layout tables as packCollectResults: the row layout is written down once.
    const m = {} as HostMetrics
    for (let k = 0; k < REQUIRED.length; k++) m[REQUIRED[k]!] = values[o + k]!
    for (let k = 0; k < OPTIONAL.length; k++) {
      const v = values[o + OPTIONAL_AT + k]!
      if (!Number.isNaN(v)) m[OPTIONAL[k]!] = v
    }
    if (!Number.isNaN(values[o + STATES_AT]!)) {
      const states = {} as NonNullable<HostMetrics['cpuStates']>
      for (let k = 0; k < STATES.length; k++) states[STATES[k]!] = values[o + STATES_AT + k]!
      m.cpuStates = states
    }
    const status: HostStatus = {
      id: host,
      state: 'ready',
      attempts: values[o + ATTEMPTS_AT]!,
      handshakes: values[o + HANDSHAKES_AT]!,
    }
    if (!Number.isNaN(values[o + RTT_AT]!)) status.rttMs = values[o + RTT_AT]!
    if (!Number.isNaN(values[o + READY_SINCE_AT]!)) status.readySince = values[o + READY_SINCE_AT]!
    const r: HostCollectResult = { host, status, metrics: m }
    const mode = values[o + MODE_AT]!
    if (!Number.isNaN(mode)) r.collectMode = PACKED_MODES[mode]!
    out[i] = r
  }
  return out
}

/** Guard for a packed block received from another thread. */
export function isPackedCollectResults(v: unknown): v is PackedCollectResults {
  if (typeof v !== 'object' || v === null) return false
  const { hosts, values } = v as Record<string, unknown>
  if (!Array.isArray(hosts) || !(values instanceof Float64Array)) return false
  if (values.length !== hosts.length * PACKED_FIELDS) return false
  for (const h of hosts) if (typeof h !== 'string') return false
  for (let i = MODE_AT; i < values.length; i += PACKED_FIELDS) {
    const mode = values[i]!
    if (!Number.isNaN(mode) && PACKED_MODES[mode] === undefined) return false
  }
  return true
}
