import { MessageChannel } from 'node:worker_threads'
import type { HostMetrics, HostStatus } from '@kay/core'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  CollectPacker,
  isNodeChunk,
  isPackedCollectResults,
  PACKED_FIELDS,
  PACKED_MODES,
  packCollectResults,
  rowSeq,
  unpackCollectResults,
} from '../src/packed.js'
import type { HostCollectResult } from '../src/protocol.js'
import { BASE_METRICS } from './fixtures/metrics.js'

const num = fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e15, max: 1e15 })
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined })
const states = fc.record({
  user: num,
  nice: num,
  system: num,
  idle: num,
  iowait: num,
  irq: num,
  softirq: num,
  steal: num,
})
const metricsArb: fc.Arbitrary<HostMetrics> = fc
  .record({
    at: num,
    cpus: fc.integer({ min: 1, max: 4096 }),
    memTotalBytes: num,
    memUsedBytes: num,
    memAvailableBytes: num,
    swapTotalBytes: num,
    swapUsedBytes: num,
    load1: num,
    load5: num,
    load15: num,
    uptimeSeconds: num,
    cpuPct: opt(num),
    cpuStates: opt(states),
    netRxBytesPerSec: opt(num),
    netTxBytesPerSec: opt(num),
    rootFsUsedPct: opt(num),
  })
  .map((m) => {
    // exactOptionalPropertyTypes: an absent field is absent, not undefined.
    const out = { ...m } as Record<string, unknown>
    for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k]
    return out as unknown as HostMetrics
  })

const BASE = BASE_METRICS

const STATES_ZERO = { user: 0, nice: 0, system: 0, idle: 100, iowait: 0, irq: 0, softirq: 0, steal: 0 }

const readyResult = (host: string, m: HostMetrics, extra: Partial<HostStatus> = {}): HostCollectResult => ({
  host,
  status: { id: host, state: 'ready', attempts: 0, handshakes: 1, readySince: 1_700_000_000_000, rttMs: 0.4, ...extra },
  metrics: m,
  collectMode: 'stream-perl',
})

/** Through a real structured clone with the buffer transferred, as postMessage does. */
function roundTrip(results: HostCollectResult[]): HostCollectResult[] {
  const { results: rest, packed } = packCollectResults(results)
  const msg = structuredClone({ rest, packed }, { transfer: [packed.values.buffer as ArrayBuffer] })
  expect(packed.values.byteLength).toBe(0) // transferred, not copied
  expect(isPackedCollectResults(msg.packed)).toBe(true)
  return [...msg.rest, ...unpackCollectResults(msg.packed)]
}

const byHost = (rs: HostCollectResult[]) => [...rs].sort((a, b) => a.host.localeCompare(b.host))

describe('packed collect results', () => {
  it('gives back equal results for any metrics, status and mode (fuzz)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            metricsArb,
            opt(fc.double({ noNaN: true, noDefaultInfinity: true, min: 0, max: 1e6 })),
            opt(fc.constantFrom(...PACKED_MODES)),
          ),
          { maxLength: 20 },
        ),
        (rows) => {
          const results = rows.map(([m, rtt, mode], i) => {
            const r = readyResult(`h${i}`, m)
            if (rtt === undefined) delete r.status.rttMs
            else r.status.rttMs = rtt
            if (mode === undefined) delete r.collectMode
            else r.collectMode = mode
            return r
          })
          expect(byHost(roundTrip(results))).toEqual(byHost(results))
          expect(packCollectResults(results).results).toEqual([]) // all of them packed
        },
      ),
      { numRuns: 300 },
    )
  })

  it('keeps as objects what a row cannot carry exactly, and nothing is lost', () => {
    const m = BASE
    const err = { name: 'NotReadyError', code: 'KAY_NOT_READY', message: 'x', host: 'e' } as never
    const odd: HostCollectResult[] = [
      { host: 'e', status: { id: 'e', state: 'backoff', attempts: 1, handshakes: 1 }, error: err },
      readyResult('lastError', m, { lastError: err }),
      readyResult('nan', { ...m, load1: Number.NaN }),
      readyResult('inf', { ...m, cpuPct: Number.POSITIVE_INFINITY }),
      readyResult('extra', { ...m, extra: 1 } as HostMetrics),
      { ...readyResult('mode', m), collectMode: 'stream-zsh' as never },
      { ...readyResult('otherId', m), status: { id: 'x', state: 'ready', attempts: 0, handshakes: 1 } },
      readyResult('statusExtra', m, { nextRetryAt: 5 }),
      readyResult('undefinedOpt', { ...m, cpuPct: undefined } as unknown as HostMetrics),
      readyResult('sevenStates', {
        ...m,
        cpuStates: { user: 1, nice: 0, system: 0, idle: 99, iowait: 0, irq: 0, softirq: 0 } as never,
      }),
      readyResult('nineStates', { ...m, cpuStates: { ...STATES_ZERO, guest: 0 } as never }),
      readyResult('badState', { ...m, cpuStates: { ...STATES_ZERO, steal: Number.NaN } }),
      { ...readyResult('resultExtra', m), extra: 1 } as HostCollectResult,
    ]
    const all = [...odd, readyResult('plain', m)]
    const { results, packed } = packCollectResults(all)
    expect(results.map((r) => r.host)).toEqual(odd.map((r) => r.host))
    expect(packed.hosts).toEqual(['plain'])
    expect(byHost(roundTrip(all))).toEqual(byHost(all))
  })

  it('packs results as they are added, trimming rows that were not used, and overflows into objects', () => {
    const err = { name: 'NotReadyError', code: 'KAY_NOT_READY', message: 'x', host: 'e' } as never
    const down: HostCollectResult = { host: 'e', status: { id: 'e', state: 'backoff', attempts: 1, handshakes: 1 } }
    down.error = err
    // Room for 3 rows, 4 results, one of which does not pack: the 3 ready ones fill the rows, in arrival order.
    const packer = new CollectPacker(3)
    const arrivals = [readyResult('b', BASE), down, readyResult('a', BASE), readyResult('c', BASE)]
    for (const [i, r] of arrivals.entries()) packer.add(r, 10 + i)
    const { results, seqs, packed } = packer.finish()
    expect(packed.hosts).toEqual(['b', 'a', 'c'])
    expect(results.map((r) => r.host)).toEqual(['e'])
    // Each status keeps the number it was taken at, row or object.
    expect(packed.hosts.map((_, i) => rowSeq(packed, i))).toEqual([10, 12, 13])
    expect(seqs).toEqual([11])
    expect(byHost([...results, ...unpackCollectResults(packed)])).toEqual(byHost(arrivals))
    // More results than rows: the rest stay objects, none is lost.
    const small = new CollectPacker(1)
    small.add(readyResult('x', BASE), 0)
    small.add(readyResult('y', BASE), 1)
    const out = small.finish()
    expect(out.packed.hosts).toEqual(['x'])
    expect(out.results.map((r) => r.host)).toEqual(['y'])
    // Fewer results than rows: the block is trimmed to what was packed, so it stays well-formed.
    const big = new CollectPacker(10)
    big.add(readyResult('z', BASE), 0)
    const one = big.finish().packed
    expect(one.values.length).toBe(PACKED_FIELDS)
    expect(isPackedCollectResults(one)).toBe(true)
  })

  it('refuses a malformed block from another thread', () => {
    const { packed } = packCollectResults([readyResult('a', BASE)])
    expect(isPackedCollectResults(packed)).toBe(true)
    expect(isPackedCollectResults(null)).toBe(false)
    expect(isPackedCollectResults({ hosts: ['a'], values: new Float64Array(PACKED_FIELDS - 1) })).toBe(false)
    expect(isPackedCollectResults({ hosts: [1], values: new Float64Array(PACKED_FIELDS) })).toBe(false)
    expect(isPackedCollectResults({ hosts: ['a'], values: Array(PACKED_FIELDS).fill(0) })).toBe(false)
    const badMode = new Float64Array(packed.values)
    badMode[27] = 9
    expect(isPackedCollectResults({ hosts: ['a'], values: badMode })).toBe(false)
    badMode[27] = 0.5
    expect(isPackedCollectResults({ hosts: ['a'], values: badMode })).toBe(false)
    const badSeq = new Float64Array(packed.values)
    for (const seq of [Number.NaN, -1, 1.5]) {
      badSeq[28] = seq
      expect(isPackedCollectResults({ hosts: ['a'], values: badSeq })).toBe(false)
    }
  })

  it('leaves no trace in a row of a result that turned out not to fit it', () => {
    // The first result writes its mode, status and cpu states before its extra key is seen; the second, with none
    // of those, then takes the same row: it must unpack as itself, not with the first one's leftovers.
    const full = { ...BASE, cpuPct: 5, cpuStates: STATES_ZERO, extra: 1 } as HostMetrics
    const bare: HostCollectResult = {
      host: 'bare',
      status: { id: 'bare', state: 'ready', attempts: 2, handshakes: 3 },
      metrics: BASE,
    }
    const packer = new CollectPacker(2)
    packer.add(readyResult('full', full), 0)
    packer.add(bare, 1)
    const { results, packed } = packer.finish()
    expect(results.map((r) => r.host)).toEqual(['full'])
    expect(unpackCollectResults(packed)).toEqual([bare])
  })

  it('carries the node series in the same buffer as the rows, across a thread boundary, transferred', async () => {
    const packer = new CollectPacker(2)
    packer.add(readyResult('a', BASE), 0)
    packer.add(readyResult('b', BASE), 1)
    const texts = [
      'node_load1{instance="a"} 1\nnode_load1{instance="b"} 2\n',
      'node_uname_info{instance="a",nodename="é"} 1\n',
    ]
    const parts = texts.map((t) => new Uint8Array(Buffer.from(t)))
    const { packed } = packer.finish({ families: ['node_load1', 'node_uname_info'], parts })
    expect(packed.node!.bytes.buffer).toBe(packed.values.buffer)
    expect(packed.node!.ends.buffer).toBe(packed.values.buffer)
    expect(isPackedCollectResults(packed)).toBe(true)
    const { port1, port2 } = new MessageChannel()
    const got = new Promise<unknown>((resolve) => port2.once('message', resolve))
    port1.postMessage(packed, [packed.values.buffer as ArrayBuffer])
    const received = (await got) as typeof packed
    port1.close()
    port2.close()
    // Transferred: the sender's views are detached.
    expect(packed.values.length).toBe(0)
    expect(isPackedCollectResults(received)).toBe(true)
    expect(unpackCollectResults(received).map((r) => r.host)).toEqual(['a', 'b'])
    const n = received.node!
    const text = (i: number) => Buffer.from(n.bytes.subarray(i === 0 ? 0 : n.ends[i - 1], n.ends[i])).toString('utf8')
    expect([text(0), text(1)]).toEqual(texts)
  })

  it('refuses node series with a family kay does not export, a repeated family or offsets that do not add up', () => {
    const chunk = (families: string[], ends: number[], bytes = 4) => ({
      families,
      ends: Uint32Array.from(ends),
      bytes: new Uint8Array(bytes),
    })
    expect(isNodeChunk(chunk(['node_load1', 'node_load5'], [2, 4]))).toBe(true)
    expect(isNodeChunk(chunk(['node_load1', 'kay_host_up'], [2, 4]))).toBe(false)
    expect(isNodeChunk(chunk(['node_load1', 'node_load1'], [2, 4]))).toBe(false)
    expect(isNodeChunk(chunk(['node_load1', 'node_load5'], [3, 2]))).toBe(false)
    expect(isNodeChunk(chunk(['node_load1', 'node_load5'], [2, 3]))).toBe(false)
    expect(isNodeChunk(chunk(['node_load1'], [2, 4]))).toBe(false)
    expect(isNodeChunk({ families: ['node_load1'], ends: [4], bytes: new Uint8Array(4) })).toBe(false)
    const { packed } = packCollectResults([readyResult('a', BASE)])
    expect(isPackedCollectResults({ ...packed, node: chunk(['node_evil'], [4]) })).toBe(false)
  })
})
