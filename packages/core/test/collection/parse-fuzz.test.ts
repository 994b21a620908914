import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  computeMetrics,
  type HostMetrics,
  MAX_LOAD,
  MAX_UPTIME_SECONDS,
  parseCollection,
  parseDetail,
  parseSample,
  parseSections,
  parseTickSample,
  type RawSample,
} from '../../src/collection/index.js'
import { isKayError } from '../../src/errors.js'
import { capturedFrame, syntheticFrame } from '../fixtures/proc/frames.js'

/** Every number finite and in its range: the invariants a renderer relies on. Returns the violations. */
function violations(m: HostMetrics): string[] {
  const bad: string[] = []
  const check = (ok: boolean, what: string) => {
    if (!ok) bad.push(what)
  }
  const inRange = (v: number | undefined, lo: number, hi: number, what: string) => {
    if (v !== undefined) check(Number.isFinite(v) && v >= lo && v <= hi, `${what}=${v}`)
  }
  for (const [k, v] of Object.entries(m)) if (typeof v === 'number') check(Number.isFinite(v), `${k} not finite`)
  inRange(m.cpus, 1, 4096, 'cpus')
  inRange(m.memTotalBytes, 1, Number.MAX_SAFE_INTEGER, 'memTotalBytes')
  inRange(m.memUsedBytes, 0, m.memTotalBytes, 'memUsedBytes')
  inRange(m.memAvailableBytes, 0, m.memTotalBytes, 'memAvailableBytes')
  inRange(m.swapUsedBytes, 0, m.swapTotalBytes, 'swapUsedBytes')
  for (const l of [m.load1, m.load5, m.load15]) inRange(l, 0, MAX_LOAD, 'load')
  inRange(m.uptimeSeconds, 0, MAX_UPTIME_SECONDS, 'uptimeSeconds')
  inRange(m.cpuPct, 0, 100, 'cpuPct')
  check((m.cpuPct === undefined) === (m.cpuStates === undefined), 'cpuPct and cpuStates come together')
  if (m.cpuStates !== undefined) {
    let sum = 0
    for (const [k, v] of Object.entries(m.cpuStates)) {
      inRange(v, 0, 100, k)
      sum += v
    }
    check(Math.abs(sum - 100) < 1e-6, `cpu states sum to ${sum}`)
  }
  inRange(m.netRxBytesPerSec, 0, Number.MAX_VALUE, 'netRxBytesPerSec')
  inRange(m.netTxBytesPerSec, 0, Number.MAX_VALUE, 'netTxBytesPerSec')
  inRange(m.rootFsUsedPct, 0, 100, 'rootFsUsedPct')
  return bad
}

function assertValid(m: HostMetrics): void {
  const bad = violations(m)
  if (bad.length > 0) expect(bad).toEqual([])
}

function outcome(fn: () => RawSample): RawSample | string {
  try {
    return fn()
  } catch (err) {
    if (isKayError(err, 'KAY_PARSE_ERROR')) return `ParseError: ${(err as Error).message}`
    throw err
  }
}

/** A spare sample for parseTickSample to overwrite, so the fuzz also covers reuse (64 CPUs, interfaces, df). */
let spare: RawSample = parseSample(parseSections(syntheticFrame({ cpus: 64 })), 0)

/** The tick's parse in place gives what the Map-and-substrings parse gives: the same sample or the same error. */
function tickParseAgrees(text: string): void {
  const expected = outcome(() => parseSample(parseSections(text), 10_000, false))
  expect(outcome(() => parseTickSample(text, 10_000))).toEqual(expected)
  const reused = outcome(() => parseTickSample(text, 10_000, spare))
  expect(reused).toEqual(expected)
  if (typeof reused !== 'string') spare = reused
}

/**
 * Parses `text` (against `prev`); passes when it is a ParseError or valid metrics, fails on any other outcome. Also
 * checks that the tick's in-place parse agrees with the general one.
 */
function parseOrParseError(text: string, prev?: RawSample): 'ok' | 'parse-error' {
  tickParseAgrees(text)
  let m: HostMetrics
  try {
    m = parseCollection(text, 10_000, prev).metrics
    const d = parseDetail(parseSections(text), prev, 10_000)
    if (d.perCpuPct.some((p) => !(p >= 0 && p <= 100))) expect(d.perCpuPct).toEqual('each within 0..100')
  } catch (err) {
    if (isKayError(err, 'KAY_PARSE_ERROR')) return 'parse-error'
    throw err
  }
  assertValid(m)
  return 'ok'
}

const prevA = parseSample(parseSections(capturedFrame('local-a')), 5000)
const validB = capturedFrame('local-b')
const validSynthetic = syntheticFrame({ cpus: 3, swapTotalKb: 1000, swapFreeKb: 10 })
const sectionNames = ['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df', 'ps', 'junk']

describe('the parser on arbitrary input', () => {
  it('throws nothing but ParseError on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 2000 }), (s) => {
        parseOrParseError(s, prevA)
      }),
      { numRuns: 2000 },
    )
  })

  it('throws nothing but ParseError on arbitrary bytes decoded as UTF-8 and as latin1', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
        const b = Buffer.from(bytes)
        parseOrParseError(b.toString('utf8'), prevA)
        parseOrParseError(b.toString('latin1'), prevA)
      }),
      { numRuns: 1000 },
    )
  })

  it('throws nothing but ParseError on well-framed sections with arbitrary contents', () => {
    const line = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.constantFrom(
        'cpu  1 2 3 4',
        'cpu0 1 2 3 4 5 6 7 8 9 10 11',
        'MemTotal: 0 kB',
        'MemTotal: 5 kB',
        'MemFree: 9 kB',
      ),
      fc.constantFrom('eth0: 1 2 3 4 5 6 7 8 9', 'lo: 1', '/dev/x 1 2 3 4% /', '1.0 2.0 3.0 1/2 3', '12.5 3.2'),
      fc
        .tuple(
          fc.constantFrom('cpu', 'cpu1 ', 'MemAvailable: ', 'SwapTotal: '),
          fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
        )
        .map(([k, n]) => `${k}${n}`),
    )
    const section = fc.tuple(fc.constantFrom(...sectionNames), fc.array(line, { maxLength: 12 }))
    fc.assert(
      fc.property(fc.array(section, { maxLength: 10 }), (sections) => {
        const text = sections.map(([n, lines]) => `@@kay ${n}\n${lines.join('\n')}\n`).join('')
        parseOrParseError(text, prevA)
      }),
      { numRuns: 2000 },
    )
  })
})

describe('the parser on mutations of a valid sample', () => {
  it('gives a ParseError or valid metrics for the real sample truncated at every position', () => {
    const outcomes = { ok: 0, 'parse-error': 0 }
    for (let i = 0; i <= validB.length; i++) outcomes[parseOrParseError(validB.slice(0, i), prevA)]++
    // Truncation inside the later sections still leaves a usable sample; early truncation cannot.
    expect(outcomes.ok).toBeGreaterThan(0)
    expect(outcomes['parse-error']).toBeGreaterThan(0)
  })

  it('gives a ParseError or valid metrics for the synthetic sample truncated at every position', () => {
    const prev = parseSample(parseSections(syntheticFrame({ cpus: 3, uptime: 900 })), 0)
    for (let i = 0; i <= validSynthetic.length; i++) parseOrParseError(validSynthetic.slice(0, i), prev)
  })

  it('gives a ParseError or valid metrics after random byte flips', () => {
    const base = Buffer.from(validB, 'latin1')
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
        (flips) => {
          const b = Buffer.from(base)
          for (const [at, v] of flips) b[at] = v
          parseOrParseError(b.toString('latin1'), prevA)
        },
      ),
      { numRuns: 3000 },
    )
  })

  it('gives a ParseError or valid metrics when any number is replaced by an extreme one', () => {
    const numbers = [...validSynthetic.matchAll(/\d+(\.\d+)?/g)].map((m) => [m.index, m[0].length] as const)
    const prev = parseSample(parseSections(syntheticFrame({ cpus: 3, uptime: 900 })), 0)
    const extreme = fc.oneof(
      fc.constantFrom('0', '-1', 'NaN', 'Infinity', '1e309', '9007199254740993', '0.0', '4294967296', ''),
      fc.bigInt({ min: 0n, max: 2n ** 64n }).map(String),
      fc.double({ noNaN: true }).map(String),
    )
    fc.assert(
      fc.property(fc.nat({ max: numbers.length - 1 }), extreme, (k, repl) => {
        const [at, len] = numbers[k]!
        parseOrParseError(validSynthetic.slice(0, at) + repl + validSynthetic.slice(at + len), prev)
      }),
      { numRuns: 3000 },
    )
  })

  it('keeps metrics valid between two arbitrary valid samples', () => {
    const host = fc.record({
      cpus: fc.integer({ min: 1, max: 8 }),
      perCpu: fc.array(fc.nat({ max: 2 ** 40 }), { minLength: 8, maxLength: 8 }),
      uptime: fc.double({ min: 0, max: 1e9, noNaN: true }),
      ifaces: fc.array(
        fc.record({ name: fc.constantFrom('eth0', 'eth1', 'wg0'), rx: fc.nat({ max: 2 ** 50 }), tx: fc.nat() }),
        { maxLength: 3 },
      ),
      memTotalKb: fc.integer({ min: 1, max: 2 ** 40 }),
      memAvailableKb: fc.nat({ max: 2 ** 41 }),
    })
    fc.assert(
      fc.property(host, host, fc.integer({ min: -10_000, max: 10_000 }), (h1, h2, dt) => {
        const a = parseSample(parseSections(syntheticFrame(h1)), 100_000)
        const b = parseSample(parseSections(syntheticFrame(h2)), 100_000 + dt)
        assertValid(computeMetrics(a, b))
      }),
      { numRuns: 1000 },
    )
  })
})
