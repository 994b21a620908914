/**
 * The common case of a collect reply, packed: a ready host with metrics and a plain status travels as one row of
 * numbers in a Float64Array that is transferred, not cloned, plus its id in a string array: the structured clone of
 * ~30 properties in 3 objects per host cost some 60 times what the row does (ADR 0002). Anything else (an error, a
 * host not ready, a status with a last error, a value that is not a finite number) stays an object in `results`,
 * so nothing is lost to the packing.
 *
 * A row, PACKED_FIELDS numbers; NaN = absent (an optional field):
 *   0 at · 1 cpus · 2 memTotalBytes · 3 memUsedBytes · 4 memAvailableBytes · 5 swapTotalBytes · 6 swapUsedBytes
 *   7 load1 · 8 load5 · 9 load15 · 10 uptimeSeconds · 11 cpuPct · 12 netRxBytesPerSec · 13 netTxBytesPerSec
 *   14 rootFsUsedPct · 15–22 cpuStates (CPU_STATES order; all or none) · 23 attempts · 24 handshakes · 25 rttMs
 *   26 readySince · 27 collectMode (index in PACKED_MODES) · 28 seq (when the shard took the status)
 *
 * With `kay serve` the shard's hosts' node_exporter series travel in the same buffer, after the rows: the end
 * offset of each family's text (Uint32, padded to 8 bytes), then the texts (UTF-8). One buffer per shard per
 * tick, whatever the fleet's size, and no object per host or per series on the way.
 */
import { COLLECT_MODES, type CollectMode, type HostMetrics, type HostStatus, type NodeChunk } from '@kay/core'
import { CPU_STATES, NODE_LIMITS, nodeFamilyMeta } from '@kay/core/internal'
import type { HostCollectResult } from './results.js'

/** The collect modes a row can carry, by index (a row stores the index). */
export const PACKED_MODES: readonly CollectMode[] = COLLECT_MODES

// Row offsets, in the order of the layout above. `fillRow` writes and `unpackCollectResults` reads the fields by
// name in that order (a keyed loop over name tables ran as megamorphic stores); the round trip is fuzzed.
/** The required metrics: at … uptimeSeconds. */
const REQUIRED_FIELDS = 11
/** cpuPct, netRxBytesPerSec, netTxBytesPerSec, rootFsUsedPct: NaN when absent. */
const OPTIONAL_AT = REQUIRED_FIELDS
const STATES_AT = OPTIONAL_AT + 4
const ATTEMPTS_AT = STATES_AT + CPU_STATES.length
const HANDSHAKES_AT = ATTEMPTS_AT + 1
const RTT_AT = HANDSHAKES_AT + 1
const READY_SINCE_AT = RTT_AT + 1
const MODE_AT = READY_SINCE_AT + 1
const SEQ_AT = MODE_AT + 1
/** Numbers per row (29). */
export const PACKED_FIELDS = SEQ_AT + 1

/**
 * A shard's collect reply: the rows, and the results that did not pack (in the order they came) with the `seqs` of
 * their statuses (protocol.ts HostEvent: the shard's order of status captures; each row carries its own).
 */
export interface CollectReply {
  results: HostCollectResult[]
  seqs: number[]
  packed: PackedCollectResults
}

export interface PackedCollectResults {
  /** Host ids, one per row. */
  hosts: string[]
  /** hosts.length × PACKED_FIELDS numbers. */
  values: Float64Array
  /** The shard's node_exporter series this tick (views on the buffer of `values`), when it collects them. */
  node?: NodeChunk
}

/** A shard's node_exporter series for one tick, the bytes of each family (NodeSink.take). */
export interface NodeParts {
  families: string[]
  parts: Uint8Array[]
}

function fin(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v)
}

/** Own and inherited enumerable keys of `o`: a row carries an object only if it has no key the row lacks. */
function keyCount(o: object): number {
  let n = 0
  for (const _ in o) n++
  return n
}

/**
 * Writes `r` into the row at `o` if it fits the row exactly (so that unpacking gives back an equal object) and
 * says whether it did; the row is left all NaN when not. This runs per host per tick, so it reads each field by
 * name in the layout's order and counts keys instead of looking each one up.
 */
function writeRow(v: Float64Array, o: number, r: HostCollectResult): boolean {
  if (fillRow(v, o, r)) return true
  v.fill(Number.NaN, o, o + PACKED_FIELDS)
  return false
}

/** Writes an optional field at `i`: 0 when absent, 1 when written, -1 when present but not a finite number. */
function putOptional(v: Float64Array, i: number, x: unknown): number {
  if (x === undefined) return 0
  if (!fin(x)) return -1
  v[i] = x
  return 1
}

function fillRow(v: Float64Array, o: number, r: HostCollectResult): boolean {
  const { status: s, metrics: m, collectMode: mode } = r
  if (m === undefined || r.error !== undefined || s.id !== r.host || s.state !== 'ready') return false
  if (keyCount(r) !== (mode === undefined ? 3 : 4)) return false
  if (mode !== undefined) {
    const k = PACKED_MODES.indexOf(mode)
    if (k < 0) return false
    v[o + MODE_AT] = k
  }
  // Status: id, state, attempts, handshakes, and rttMs and readySince when present.
  const { attempts, handshakes } = s
  if (!fin(attempts) || !fin(handshakes)) return false
  v[o + ATTEMPTS_AT] = attempts
  v[o + HANDSHAKES_AT] = handshakes
  const rtt = putOptional(v, o + RTT_AT, s.rttMs)
  const since = putOptional(v, o + READY_SINCE_AT, s.readySince)
  if (rtt < 0 || since < 0 || keyCount(s) !== 4 + rtt + since) return false
  // Metrics: the required fields, then the optional ones present, then cpuStates (all eight or none).
  const { at, cpus, memTotalBytes, memUsedBytes, memAvailableBytes, swapTotalBytes, swapUsedBytes } = m
  const { load1, load5, load15, uptimeSeconds } = m
  if (!fin(at) || !fin(cpus) || !fin(memTotalBytes) || !fin(memUsedBytes) || !fin(memAvailableBytes)) return false
  if (!fin(swapTotalBytes) || !fin(swapUsedBytes) || !fin(load1) || !fin(load5) || !fin(load15)) return false
  if (!fin(uptimeSeconds)) return false
  v[o] = at
  v[o + 1] = cpus
  v[o + 2] = memTotalBytes
  v[o + 3] = memUsedBytes
  v[o + 4] = memAvailableBytes
  v[o + 5] = swapTotalBytes
  v[o + 6] = swapUsedBytes
  v[o + 7] = load1
  v[o + 8] = load5
  v[o + 9] = load15
  v[o + 10] = uptimeSeconds
  const cpuPct = putOptional(v, o + OPTIONAL_AT, m.cpuPct)
  const rx = putOptional(v, o + OPTIONAL_AT + 1, m.netRxBytesPerSec)
  const tx = putOptional(v, o + OPTIONAL_AT + 2, m.netTxBytesPerSec)
  const rootFs = putOptional(v, o + OPTIONAL_AT + 3, m.rootFsUsedPct)
  if ((cpuPct | rx | tx | rootFs) < 0) return false
  let keys = REQUIRED_FIELDS + cpuPct + rx + tx + rootFs
  const c = m.cpuStates
  if (c !== undefined) {
    if (typeof c !== 'object' || c === null || keyCount(c) !== CPU_STATES.length) return false
    const { user, nice, system, idle, iowait, irq, softirq, steal } = c
    if (!fin(user) || !fin(nice) || !fin(system) || !fin(idle)) return false
    if (!fin(iowait) || !fin(irq) || !fin(softirq) || !fin(steal)) return false
    v[o + STATES_AT] = user
    v[o + STATES_AT + 1] = nice
    v[o + STATES_AT + 2] = system
    v[o + STATES_AT + 3] = idle
    v[o + STATES_AT + 4] = iowait
    v[o + STATES_AT + 5] = irq
    v[o + STATES_AT + 6] = softirq
    v[o + STATES_AT + 7] = steal
    keys++
  }
  return keyCount(m) === keys
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
  readonly #restSeqs: number[] = []

  /** `capacity`: the most results that will be added (the shard's host count). */
  constructor(capacity: number) {
    this.#values = new Float64Array(Math.max(0, capacity) * PACKED_FIELDS).fill(Number.NaN)
  }

  /** `seq`: when `r`'s status was taken. */
  add(r: HostCollectResult, seq: number): void {
    const o = this.#hosts.length * PACKED_FIELDS
    if (o + PACKED_FIELDS > this.#values.length || !writeRow(this.#values, o, r)) {
      this.#rest.push(r)
      this.#restSeqs.push(seq)
      return
    }
    this.#values[o + SEQ_AT] = seq
    this.#hosts.push(r.host)
  }

  /**
   * The reply: the rows (trimmed to the results that packed) and the results that did not; with `node`, the node
   * series in the same buffer after the rows (transfer `packed.values.buffer` and both go).
   */
  finish(node?: NodeParts): CollectReply {
    const n = this.#hosts.length * PACKED_FIELDS
    if (node === undefined) {
      const values = n === this.#values.length ? this.#values : this.#values.slice(0, n)
      return { results: this.#rest, seqs: this.#restSeqs, packed: { hosts: this.#hosts, values } }
    }
    let textBytes = 0
    for (const p of node.parts) textBytes += p.length
    const endsAt = n * 8
    const bytesAt = endsAt + Math.ceil((node.families.length * 4) / 8) * 8
    // A plain ArrayBuffer (not Node's pool), so that it can be transferred.
    const buf = new ArrayBuffer(bytesAt + textBytes)
    const values = new Float64Array(buf, 0, n)
    values.set(this.#values.subarray(0, n))
    const ends = new Uint32Array(buf, endsAt, node.families.length)
    const bytes = new Uint8Array(buf, bytesAt, textBytes)
    let at = 0
    for (let i = 0; i < node.parts.length; i++) {
      bytes.set(node.parts[i]!, at)
      at += node.parts[i]!.length
      ends[i] = at
    }
    return {
      results: this.#rest,
      seqs: this.#restSeqs,
      packed: { hosts: this.#hosts, values, node: { families: node.families, bytes, ends } },
    }
  }
}

/**
 * Splits a collect reply into the rows that pack and the results that stay objects (in their order); `seqs[i]` is
 * when `results[i]`'s status was taken (default: in their order).
 */
export function packCollectResults(results: readonly HostCollectResult[], seqs?: readonly number[]): CollectReply {
  const packer = new CollectPacker(results.length)
  for (let i = 0; i < results.length; i++) packer.add(results[i]!, seqs?.[i] ?? i)
  return packer.finish()
}

/** When the status of row `i` of a packed block was taken. */
export function rowSeq(p: PackedCollectResults, i: number): number {
  return p.values[i * PACKED_FIELDS + SEQ_AT]!
}

/**
 * The results a packed block stands for: equal to what was packed. The objects are written as literals, field by
 * field in the layout's order (as `fillRow` reads them), so every host's metrics and status share one shape.
 */
export function unpackCollectResults(p: PackedCollectResults): HostCollectResult[] {
  const { hosts, values: v } = p
  const out: HostCollectResult[] = new Array(hosts.length)
  for (let i = 0; i < hosts.length; i++) {
    const o = i * PACKED_FIELDS
    const host = hosts[i]!
    const m: HostMetrics = {
      at: v[o]!,
      cpus: v[o + 1]!,
      memTotalBytes: v[o + 2]!,
      memUsedBytes: v[o + 3]!,
      memAvailableBytes: v[o + 4]!,
      swapTotalBytes: v[o + 5]!,
      swapUsedBytes: v[o + 6]!,
      load1: v[o + 7]!,
      load5: v[o + 8]!,
      load15: v[o + 9]!,
      uptimeSeconds: v[o + 10]!,
    }
    const cpuPct = v[o + OPTIONAL_AT]!
    const rx = v[o + OPTIONAL_AT + 1]!
    const tx = v[o + OPTIONAL_AT + 2]!
    const rootFs = v[o + OPTIONAL_AT + 3]!
    if (!Number.isNaN(cpuPct)) m.cpuPct = cpuPct
    if (!Number.isNaN(rx)) m.netRxBytesPerSec = rx
    if (!Number.isNaN(tx)) m.netTxBytesPerSec = tx
    if (!Number.isNaN(rootFs)) m.rootFsUsedPct = rootFs
    const c = o + STATES_AT
    if (!Number.isNaN(v[c]!)) {
      m.cpuStates = {
        user: v[c]!,
        nice: v[c + 1]!,
        system: v[c + 2]!,
        idle: v[c + 3]!,
        iowait: v[c + 4]!,
        irq: v[c + 5]!,
        softirq: v[c + 6]!,
        steal: v[c + 7]!,
      }
    }
    const status: HostStatus = {
      id: host,
      state: 'ready',
      attempts: v[o + ATTEMPTS_AT]!,
      handshakes: v[o + HANDSHAKES_AT]!,
    }
    const rtt = v[o + RTT_AT]!
    const since = v[o + READY_SINCE_AT]!
    if (!Number.isNaN(rtt)) status.rttMs = rtt
    if (!Number.isNaN(since)) status.readySince = since
    const r: HostCollectResult = { host, status, metrics: m }
    const mode = v[o + MODE_AT]!
    if (!Number.isNaN(mode)) r.collectMode = PACKED_MODES[mode]!
    out[i] = r
  }
  return out
}

/**
 * Guard for the node series received from another thread: family names kay exports (nodeFamilyMeta), no more
 * than NODE_LIMITS.families, each once, and end offsets that rise to the end of the bytes.
 */
export function isNodeChunk(v: unknown): v is NodeChunk {
  if (typeof v !== 'object' || v === null) return false
  const { families, bytes, ends } = v as Record<string, unknown>
  if (!Array.isArray(families) || !(bytes instanceof Uint8Array) || !(ends instanceof Uint32Array)) return false
  if (families.length !== ends.length || families.length > NODE_LIMITS.families) return false
  const seen = new Set<string>()
  let prev = 0
  for (let i = 0; i < families.length; i++) {
    const f = families[i]
    if (typeof f !== 'string' || seen.has(f) || nodeFamilyMeta(f) === undefined) return false
    seen.add(f)
    if (ends[i]! < prev) return false
    prev = ends[i]!
  }
  return prev === bytes.length
}

/** Guard for a packed block received from another thread. */
export function isPackedCollectResults(v: unknown): v is PackedCollectResults {
  if (typeof v !== 'object' || v === null) return false
  const { hosts, values, node } = v as Record<string, unknown>
  if (node !== undefined && !isNodeChunk(node)) return false
  if (!Array.isArray(hosts) || !(values instanceof Float64Array)) return false
  if (values.length !== hosts.length * PACKED_FIELDS) return false
  for (const h of hosts) if (typeof h !== 'string') return false
  for (let i = 0; i < values.length; i += PACKED_FIELDS) {
    const mode = values[i + MODE_AT]!
    if (!Number.isNaN(mode) && PACKED_MODES[mode] === undefined) return false
    const seq = values[i + SEQ_AT]!
    if (!Number.isSafeInteger(seq) || seq < 0) return false
  }
  return true
}
