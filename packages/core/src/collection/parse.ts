/**
 * Parsing collected /proc text into counters ({@link RawSample}) and counters into {@link HostMetrics}.
 *
 * This runs once per host per tick (10,000 hosts at 5 s is 2,000 calls/s per process), on text a remote host
 * controls. So it is written as linear scans with `indexOf`/`charCodeAt` (no regex splitting, few substrings),
 * it caps its input, and every failure — garbage, truncation, binary, absurd numbers — is a {@link ParseError}
 * naming the section, never another kind of exception and never a loop that does not advance.
 */

import { type KayError, ParseError } from '../errors.js'
import type { CpuState, HostDetail, HostMetrics, InterfaceCounters, RawSample } from './types.js'

/** Input larger than this (in UTF-16 units, ≈ bytes for /proc text) is refused before any parsing. */
export const MAX_INPUT_CHARS = 1024 * 1024
/** More `cpuN` lines than this is not a real host. */
const MAX_CPUS = 4096
/** More interfaces than this in /proc/net/dev is refused. */
const MAX_INTERFACES = 65_536
/** Load averages above this are refused as absurd. */
export const MAX_LOAD = 1_000_000
/** Uptimes above this (≈ 317 years) are refused as absurd. */
export const MAX_UPTIME_SECONDS = 1e10

/** The CPU states in /proc/stat column order (the order of each row of {@link RawSample.cpuTimes}). */
export const CPU_STATES: readonly CpuState[] = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal']

const NSTATES = 8
const MAX_SAFE = Number.MAX_SAFE_INTEGER
const MAX_KB = Math.floor(MAX_SAFE / 1024)
const MAX_SECTION_NAME = 32
const MAX_PS_ROWS = 100
const MAX_DF_ROWS = 10_000

const C_NL = 10
const C_SPACE = 32
const C_TAB = 9
const C_0 = 48
const C_9 = 57
const C_DOT = 46

function bad(section: string, what: string): KayError {
  return new ParseError(`${section}: ${what}`, { details: { section } })
}

// ---------------------------------------------------------------------------------------------------------------
// Sections

/**
 * Splits collected output into its sections: each `@@kay <name>` header at the start of a line opens a section
 * that runs to the next header (or to a `@@kay-end` marker line, or the end). Text before the first header (a
 * login banner, say) and sections with malformed names are ignored; unknown names are kept (callers ignore
 * them); a repeated name keeps the last. Throws {@link ParseError} only when the input is not a string or is
 * larger than {@link MAX_INPUT_CHARS}.
 */
export function parseSections(text: string): Map<string, string> {
  const out = new Map<string, string>()
  scanSections(text, (t, nameStart, nameEnd, start, end) => {
    out.set(t.slice(nameStart, nameEnd), t.slice(start, end))
  })
  return out
}

/**
 * The scan behind {@link parseSections} (and node.ts): calls `section` with the offsets of each well-named section's name and
 * body, in order (a repeated name is reported again; keeping the last is the caller's part).
 */
export function scanSections(
  text: string,
  section: (text: string, nameStart: number, nameEnd: number, start: number, end: number) => void,
): void {
  if (typeof text !== 'string') throw bad('input', 'not a string')
  if (text.length > MAX_INPUT_CHARS) throw bad('input', `too large (${text.length} > ${MAX_INPUT_CHARS} chars)`)
  const len = text.length
  let nameStart = -1
  let nameEnd = -1
  let bodyStart = 0
  let p = text.startsWith('@@kay', 0) ? 0 : nextCandidate(text, 0)
  while (p !== -1) {
    const c = text.charCodeAt(p + 5)
    const isHeader = c === C_SPACE
    const isEnd = !isHeader && text.startsWith('@@kay-end', p) && (p + 9 >= len || isBlankOrNl(text, p + 9))
    if (!isHeader && !isEnd) {
      p = nextCandidate(text, p + 1)
      continue
    }
    if (nameStart >= 0) section(text, nameStart, nameEnd, bodyStart, p)
    let e = text.indexOf('\n', p)
    if (e === -1) e = len
    nameStart = isHeader && validSectionName(text, p + 6, e) ? p + 6 : -1
    nameEnd = e
    bodyStart = e < len ? e + 1 : len
    p = nextCandidate(text, e)
  }
  if (nameStart >= 0) section(text, nameStart, nameEnd, bodyStart, len)
}

function nextCandidate(text: string, from: number): number {
  const r = text.indexOf('\n@@kay', from)
  return r === -1 ? -1 : r + 1
}

function isBlankOrNl(s: string, i: number): boolean {
  const c = s.charCodeAt(i)
  return c === C_SPACE || c === C_NL || c === C_TAB
}

/** A section name is 1–32 of [a-z0-9_-]; anything else makes the header's section ignored. */
function validSectionName(s: string, start: number, end: number): boolean {
  if (end <= start || end - start > MAX_SECTION_NAME) return false
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i)
    const ok = (c >= 97 && c <= 122) || (c >= C_0 && c <= C_9) || c === 95 || c === 45
    if (!ok) return false
  }
  return true
}

// ---------------------------------------------------------------------------------------------------------------
// Number readers. They return -1 for "no valid number here" and leave the index after the number in `pos`
// (a module-level cursor instead of a returned tuple: no allocation per number).

let pos = 0

function skipBlanks(s: string, i: number, end: number): number {
  while (i < end) {
    const c = s.charCodeAt(i)
    if (c !== C_SPACE && c !== C_TAB) break
    i++
  }
  return i
}

function lineEnd(s: string, i: number, end: number): number {
  const e = s.indexOf('\n', i)
  return e === -1 || e > end ? end : e
}

/** A number must end at a blank, a newline or the end; `12x` is not a number. */
function endsToken(s: string, i: number, end: number): boolean {
  if (i >= end) return true
  const c = s.charCodeAt(i)
  return c === C_SPACE || c === C_TAB || c === C_NL
}

/** The value of the run of decimal digits at `i` (0 if none); sets `pos` just past it. */
function scanDigits(s: string, i: number, end: number): number {
  let n = 0
  while (i < end) {
    const d = s.charCodeAt(i) - C_0
    if (d < 0 || d > 9) break
    n = n * 10 + d
    i++
  }
  pos = i
  return n
}

/** An unsigned decimal integer ≤ 2^53−1 after optional blanks; -1 if there is none. */
function readUint(s: string, i: number, end: number): number {
  const start = skipBlanks(s, i, end)
  const n = scanDigits(s, start, end)
  if (pos === start || pos - start > 16 || n > MAX_SAFE || !endsToken(s, pos, end)) return -1
  return n
}

/** An unsigned decimal `123` or `123.45` after optional blanks; -1 if there is none. */
function readDecimal(s: string, i: number, end: number): number {
  const start = skipBlanks(s, i, end)
  let n = scanDigits(s, start, end)
  i = pos
  if (i === start || i - start > 15) return -1
  if (i < end && s.charCodeAt(i) === C_DOT) {
    i++
    let scale = 1
    let frac = 0
    const fstart = i
    while (i < end) {
      const d = s.charCodeAt(i) - C_0
      if (d < 0 || d > 9) break
      // Digits past the ninth cannot matter for a metric; read them, ignore them.
      if (i - fstart < 9) {
        frac = frac * 10 + d
        scale *= 10
      }
      i++
    }
    if (i === fstart) {
      pos = i
      return -1
    }
    n += frac / scale
  }
  pos = i
  return endsToken(s, i, end) ? n : -1
}

// ---------------------------------------------------------------------------------------------------------------
// Sample

// The sections a sample reads, by index, and where each lies for the parse under way: the string holding it and
// its bounds in that string (module scratch, as the parser is synchronous; `undefined`: the section is absent).
// `procnetdev` (a node collection's /proc/net/dev) stands in for `netdev` when a node collection has no netdev
// section: the loops send netdev there only when the host has interfaces with a device.
const SAMPLE_SECTIONS = ['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df', 'procnetdev'] as const
const LOADAVG = 0
const MEMINFO = 1
const STAT = 2
const UPTIME = 3
const NETDEV = 4
const DF = 5
const PROCNETDEV = 6
const srcText: Array<string | undefined> = SAMPLE_SECTIONS.map(() => undefined)
const srcStart = new Int32Array(SAMPLE_SECTIONS.length)
const srcEnd = new Int32Array(SAMPLE_SECTIONS.length)

function required(k: number): string {
  const s = srcText[k]
  if (s === undefined) throw bad(SAMPLE_SECTIONS[k]!, 'section missing')
  if (srcEnd[k]! <= srcStart[k]!) throw bad(SAMPLE_SECTIONS[k]!, 'section empty')
  return s
}

/**
 * Reads the counters of one collection. Needs the `loadavg`, `meminfo`, `stat` and `uptime` sections; `netdev`
 * and `df` are optional. `at` is the collector's epoch ms for the sample. Throws {@link ParseError} naming the
 * section on anything malformed or absurd. `perCpu: false` (what a tick needs) reads the aggregate cpu line's
 * counters and only the number of each per-CPU line: on a 64-CPU host the per-CPU counters are most of the parse.
 *
 * `into`: a sample that is no longer needed, overwritten in place (its arrays and interface records reused) and
 * returned, so that a host's steady ticks allocate no sample: a sample lives a whole tick interval, long enough
 * to be promoted to V8's old generation, and promoted garbage is what makes major GCs. After a throw, `into`
 * holds a partial sample: it is still only fit to be passed as `into` again.
 */
export function parseSample(sections: Map<string, string>, at: number, perCpu = true, into?: RawSample): RawSample {
  if (!(sections instanceof Map)) throw bad('input', 'sections is not a Map')
  for (let k = 0; k < SAMPLE_SECTIONS.length; k++) {
    const s = sections.get(SAMPLE_SECTIONS[k]!)
    srcText[k] = typeof s === 'string' ? s : undefined
    srcStart[k] = 0
    srcEnd[k] = typeof s === 'string' ? s.length : 0
  }
  return sampleFromSources(at, perCpu, into)
}

/**
 * What a tick does: `parseSample(parseSections(text), at, false, into)`, with the same results and the same
 * errors, but reading each section where it lies in `text`: no Map and no substring per section (a section
 * substring is a sliced string, slower to scan than the flat text).
 */
export function parseTickSample(text: string, at: number, into?: RawSample): RawSample {
  srcText.fill(undefined)
  scanSections(text, noteSampleSection)
  return sampleFromSources(at, false, into)
}

function noteSampleSection(text: string, nameStart: number, nameEnd: number, start: number, end: number): void {
  for (let k = 0; k < SAMPLE_SECTIONS.length; k++) {
    const n = SAMPLE_SECTIONS[k]!
    if (nameEnd - nameStart === n.length && text.startsWith(n, nameStart)) {
      // A repeated section: the last one counts, as in parseSections.
      srcText[k] = text
      srcStart[k] = start
      srcEnd[k] = end
      return
    }
  }
}

function sampleFromSources(at: number, perCpu: boolean, into: RawSample | undefined): RawSample {
  if (typeof at !== 'number' || !Number.isFinite(at)) throw bad('input', 'sample time is not a finite number')
  const loadavg = required(LOADAVG)
  const meminfo = required(MEMINFO)
  const stat = required(STAT)
  const uptime = required(UPTIME)

  const lend = srcEnd[LOADAVG]!
  const load1 = readDecimal(loadavg, srcStart[LOADAVG]!, lend)
  const load5 = load1 < 0 ? -1 : readDecimal(loadavg, pos, lend)
  const load15 = load5 < 0 ? -1 : readDecimal(loadavg, pos, lend)
  if (load15 < 0) throw bad('loadavg', 'expected three load averages')
  if (load1 > MAX_LOAD || load5 > MAX_LOAD || load15 > MAX_LOAD) throw bad('loadavg', 'load average out of range')

  const uptimeSeconds = readDecimal(uptime, srcStart[UPTIME]!, srcEnd[UPTIME]!)
  if (uptimeSeconds < 0) throw bad('uptime', 'expected the uptime in seconds')
  if (uptimeSeconds > MAX_UPTIME_SECONDS) throw bad('uptime', 'uptime out of range')

  let sample: RawSample
  if (into === undefined) {
    sample = {
      at,
      cpus: 0,
      cpuIds: [],
      cpuTimes: [],
      memTotalBytes: 0,
      memFreeBytes: 0,
      memAvailableBytes: 0,
      swapTotalBytes: 0,
      swapFreeBytes: 0,
      load1,
      load5,
      load15,
      uptimeSeconds,
      interfaces: undefined,
      rootFsUsedPct: undefined,
    }
  } else {
    sample = into
    sample.at = at
    sample.cpus = 0
    sample.load1 = load1
    sample.load5 = load5
    sample.load15 = load15
    sample.uptimeSeconds = uptimeSeconds
    sample.rootFsUsedPct = undefined
  }
  parseStat(stat, srcStart[STAT]!, srcEnd[STAT]!, sample, perCpu)
  parseMeminfo(meminfo, srcStart[MEMINFO]!, srcEnd[MEMINFO]!, sample)
  const nd = srcText[NETDEV] === undefined && srcText[PROCNETDEV] !== undefined ? PROCNETDEV : NETDEV
  const netdev = srcText[nd]
  sample.interfaces =
    netdev === undefined ? undefined : parseNetdev(netdev, srcStart[nd]!, srcEnd[nd]!, sample.interfaces ?? [])
  const df = srcText[DF]
  if (df !== undefined) sample.rootFsUsedPct = rootFsPct(df, srcStart[DF]!, srcEnd[DF]!)
  return sample
}

function parseStat(s: string, start: number, end: number, out: RawSample, perCpu: boolean): void {
  // Written by index over what `out` held (a reused sample's arrays keep their storage), then cut to length.
  const times = out.cpuTimes
  const ids = out.cpuIds
  let nTimes = NSTATES
  let nIds = 0
  for (let k = 0; k < NSTATES; k++) times[k] = 0
  let seenAggregate = false
  let inCpuBlock = false
  let i = start
  while (i < end) {
    const e = lineEnd(s, i, end)
    if (s.charCodeAt(i) === 99 && s.startsWith('cpu', i)) {
      let j = i + 3
      const c = s.charCodeAt(j)
      let row: number
      if (c >= C_0 && c <= C_9) {
        const id = readUint(s, j, e)
        if (id < 0 || id > 65_535) throw bad('stat', 'bad cpu number')
        if (nIds >= MAX_CPUS) throw bad('stat', `more than ${MAX_CPUS} cpus`)
        j = pos
        ids[nIds++] = id
        if (!perCpu) {
          i = e + 1
          inCpuBlock = true
          continue
        }
        row = nTimes
        for (let k = 0; k < NSTATES; k++) times[nTimes++] = 0
      } else if (c === C_SPACE || c === C_TAB) {
        if (seenAggregate) throw bad('stat', 'two aggregate cpu lines')
        seenAggregate = true
        row = 0
      } else {
        // `cpufoo ...`: not a cpu line.
        if (inCpuBlock) break
        i = e + 1
        continue
      }
      inCpuBlock = true
      let n = 0
      for (;;) {
        j = skipBlanks(s, j, e)
        if (j >= e) break
        const v = readUint(s, j, e)
        if (v < 0) throw bad('stat', 'bad cpu counter')
        if (n < NSTATES) times[row + n] = v
        n++
        j = pos
      }
      if (n < 4) throw bad('stat', 'cpu line has fewer than 4 counters')
    } else if (inCpuBlock) {
      // The cpu lines are one block at the top; the rest (a long `intr` line) is not needed.
      break
    }
    i = e + 1
  }
  if (ids.length !== nIds) ids.length = nIds
  if (times.length !== nTimes) times.length = nTimes
  if (!seenAggregate) throw bad('stat', 'no aggregate cpu line')
  if (nIds === 0) throw bad('stat', 'no per-cpu lines')
  out.cpus = nIds
}

// The meminfo keys the parser reads, by index.
const MEM_TOTAL = 0
const MEM_FREE = 1
const MEM_AVAILABLE = 2
const BUFFERS = 3
const CACHED = 4
const SRECLAIMABLE = 5
const SWAP_TOTAL = 6
const SWAP_FREE = 7
const MEM_KEYS = [
  'MemTotal:',
  'MemFree:',
  'MemAvailable:',
  'Buffers:',
  'Cached:',
  'SReclaimable:',
  'SwapTotal:',
  'SwapFree:',
]
const MEM_LINE_KEYS = MEM_KEYS.map((k) => `\n${k}`)

/**
 * The kB value on the first line of s[start, end) that starts with MEM_KEYS[key], or -1 when no line does. Each
 * key is found with one native search instead of walking the ~50 lines of /proc/meminfo one by one.
 */
function memValue(s: string, start: number, end: number, key: number): number {
  const k = MEM_KEYS[key]!
  let at: number
  if (end - start >= k.length && s.startsWith(k, start)) at = start
  else {
    const p = s.indexOf(MEM_LINE_KEYS[key]!, start)
    if (p === -1 || p + 1 + k.length > end) return -1
    at = p + 1
  }
  const e = lineEnd(s, at, end)
  const kb = readUint(s, at + k.length, e)
  if (kb < 0) throw bad('meminfo', 'bad value')
  if (kb > MAX_KB) throw bad('meminfo', 'value out of range')
  const u = skipBlanks(s, pos, e)
  if (u < e && !(e - u === 2 && s.startsWith('kB', u))) throw bad('meminfo', 'unexpected unit')
  return kb
}

/** Reads only the lines it needs: Buffers, Cached and SReclaimable only to estimate a missing MemAvailable. */
function parseMeminfo(s: string, start: number, end: number, out: RawSample): void {
  const total = memValue(s, start, end, MEM_TOTAL)
  if (total < 0) throw bad('meminfo', 'MemTotal missing')
  if (total === 0) throw bad('meminfo', 'MemTotal is 0')
  const free = memValue(s, start, end, MEM_FREE)
  if (free < 0) throw bad('meminfo', 'MemFree missing')
  let avail = memValue(s, start, end, MEM_AVAILABLE)
  if (avail < 0) {
    // Kernels before 3.14 have no MemAvailable: estimate it the way free(1) used to.
    const buffers = memValue(s, start, end, BUFFERS)
    const cached = memValue(s, start, end, CACHED)
    const reclaimable = memValue(s, start, end, SRECLAIMABLE)
    avail = free + Math.max(0, buffers) + Math.max(0, cached) + Math.max(0, reclaimable)
  }
  const swapTotal = Math.max(0, memValue(s, start, end, SWAP_TOTAL))
  const swapFree = Math.max(0, memValue(s, start, end, SWAP_FREE))
  // Containers (lxcfs) can report inconsistent figures; clamp rather than report used < 0.
  out.memTotalBytes = total * 1024
  out.memFreeBytes = Math.min(free, total) * 1024
  out.memAvailableBytes = Math.min(avail, total) * 1024
  out.swapTotalBytes = swapTotal * 1024
  out.swapFreeBytes = Math.min(swapFree, swapTotal) * 1024
}

/** Fills `out` (records already in it are reused: a host's interfaces rarely change between two ticks). */
function parseNetdev(s: string, start: number, end: number, out: InterfaceCounters[]): InterfaceCounters[] {
  let n = 0
  let i = start
  while (i < end) {
    const e = lineEnd(s, i, end)
    const colon = s.indexOf(':', i)
    // Lines without a colon are the two header lines (`Inter-|   Receive ...`).
    if (colon !== -1 && colon < e) {
      const ns = skipBlanks(s, i, colon)
      let ne = colon
      while (ne > ns && (s.charCodeAt(ne - 1) === C_SPACE || s.charCodeAt(ne - 1) === C_TAB)) ne--
      if (ne === ns || ne - ns > 64) throw bad('netdev', 'bad interface name')
      if (ne - ns === 2 && s.startsWith('lo', ns)) {
        // Loopback is left out of the rates: its counters are not read.
        i = e + 1
        continue
      }
      const rx = readUint(s, colon + 1, e)
      if (rx < 0) throw bad('netdev', 'bad counter')
      for (let k = 0; k < 7; k++) {
        if (readUint(s, pos, e) < 0) throw bad('netdev', 'bad counter')
      }
      const tx = readUint(s, pos, e)
      if (tx < 0) throw bad('netdev', 'bad counter')
      if (n >= MAX_INTERFACES) throw bad('netdev', 'too many interfaces')
      const r = out[n]
      if (r === undefined) out.push({ name: s.slice(ns, ne), rxBytes: rx, txBytes: tx })
      else {
        if (r.name.length !== ne - ns || !s.startsWith(r.name, ns)) r.name = s.slice(ns, ne)
        r.rxBytes = rx
        r.txBytes = tx
      }
      n++
    }
    i = e + 1
  }
  if (out.length !== n) out.length = n
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// df and ps (tolerant: rows that do not parse are skipped; these sections are optional and tools differ)

type FsRow = HostDetail['filesystems'][number]
type PsRow = HostDetail['processes'][number]

/** Splits a line into blank-separated tokens with their start offsets. */
function tokens(s: string, start: number, end: number, words: string[], starts: number[]): void {
  words.length = 0
  starts.length = 0
  let i = start
  while (i < end) {
    i = skipBlanks(s, i, end)
    if (i >= end) break
    const t = i
    while (i < end && s.charCodeAt(i) !== C_SPACE && s.charCodeAt(i) !== C_TAB) i++
    words.push(s.slice(t, i))
    starts.push(t)
  }
}

/** A possibly negative integer token (GNU df prints a negative Available when reserved blocks are in use). */
function intToken(w: string | undefined): number {
  if (w === undefined) return Number.NaN
  const neg = w.charCodeAt(0) === 45
  const v = readUint(w, neg ? 1 : 0, w.length)
  if (v < 0 || pos !== w.length) return Number.NaN
  return neg ? -v : v
}

function pctToken(w: string | undefined): number {
  if (w === undefined) return Number.NaN
  if (w === '-') return 0
  if (w.length < 2 || w.charCodeAt(w.length - 1) !== 37) return Number.NaN
  const v = readUint(w, 0, w.length - 1)
  return v < 0 ? Number.NaN : v
}

function parseDfRows(s: string, start: number, end: number, rootOnly: boolean): FsRow[] {
  const out: FsRow[] = []
  const words: string[] = []
  const starts: number[] = []
  let i = start
  while (i < end && out.length < MAX_DF_ROWS) {
    const e = lineEnd(s, i, end)
    tokens(s, i, e, words, starts)
    // Filesystem names and mount points may contain spaces: find the first `size used avail pct%` run with at
    // least one token before it and one after it.
    for (let c = 4; c < words.length - 1; c++) {
      const usedPct = pctToken(words[c])
      if (Number.isNaN(usedPct)) continue
      const sizeKb = intToken(words[c - 3])
      const usedKb = intToken(words[c - 2])
      const availKb = intToken(words[c - 1])
      if (Number.isNaN(sizeKb) || Number.isNaN(usedKb) || Number.isNaN(availKb) || sizeKb < 0 || usedKb < 0) continue
      const mount = s.slice(starts[c + 1]!, e).trimEnd()
      if (rootOnly && mount !== '/') break
      out.push({
        filesystem: c === 4 ? words[0]! : s.slice(starts[0]!, starts[c - 3]!).trimEnd(),
        sizeKb,
        usedKb,
        availKb: Math.max(0, availKb),
        usedPct: Math.min(100, usedPct),
        mount,
      })
      break
    }
    i = e + 1
  }
  return out
}

function rootFsPct(df: string, start: number, end: number): number | undefined {
  const rows = parseDfRows(df, start, end, true)
  return rows.length > 0 ? rows[0]!.usedPct : undefined
}

function parsePs(s: string): PsRow[] {
  const out: PsRow[] = []
  const words: string[] = []
  const starts: number[] = []
  const end = s.length
  let i = 0
  while (i < end && out.length < MAX_PS_ROWS) {
    const e = lineEnd(s, i, end)
    tokens(s, i, e, words, starts)
    if (words.length >= 6) {
      const pid = intToken(words[0])
      const cpuPct = readDecimal(words[2]!, 0, words[2]!.length)
      const memPct = readDecimal(words[3]!, 0, words[3]!.length)
      const rssKb = intToken(words[4])
      // The header row (`PID USER ...`) fails the pid test and is skipped like any malformed row.
      if (pid >= 0 && cpuPct >= 0 && memPct >= 0 && memPct <= 100 && rssKb >= 0) {
        out.push({ pid, user: words[1]!, cpuPct, memPct, rssKb, command: s.slice(starts[5]!, e).trimEnd() })
      }
    }
    i = e + 1
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Deltas

const deltaScratch = new Float64Array(NSTATES)

/**
 * Fills `deltaScratch` with the per-state jiffy deltas of one row and returns their total, or -1 when the row's
 * counters went backwards as a whole (a reset). A single state going backwards is clamped to 0: iowait is known
 * to decrease on NO_HZ kernels.
 */
function cpuRowDelta(prev: number[], prevRow: number, cur: number[], curRow: number): number {
  let raw = 0
  let total = 0
  for (let k = 0; k < NSTATES; k++) {
    const d = (cur[curRow + k] ?? 0) - (prev[prevRow + k] ?? 0)
    raw += d
    const c = Math.max(d, 0)
    deltaScratch[k] = c
    total += c
  }
  return raw < 0 || !Number.isFinite(total) ? -1 : total
}

function clampPct(x: number): number {
  return Math.min(Math.max(x, 0), 100)
}

function busyPct(total: number): number {
  return clampPct(100 * (1 - (deltaScratch[3]! + deltaScratch[4]!) / total))
}

/** True when cur cannot be compared with prev: the host rebooted (its uptime went back). */
function incomparable(prev: RawSample, cur: RawSample): boolean {
  return cur.uptimeSeconds < prev.uptimeSeconds
}

function netTotals(prev: RawSample, cur: RawSample, seconds: number): { rx: number; tx: number } | undefined {
  const a = prev.interfaces
  const b = cur.interfaces
  if (a === undefined || b === undefined || !(seconds > 0)) return undefined
  let rx = 0
  let tx = 0
  for (let k = 0; k < b.length; k++) {
    const p = findIface(a, b[k]!.name, k)
    // A new interface has no previous counters; it is left out of this interval.
    if (p === undefined) continue
    const drx = b[k]!.rxBytes - p.rxBytes
    const dtx = b[k]!.txBytes - p.txBytes
    // A counter that went backwards wrapped (32-bit counters) or was reset: no honest rate this interval.
    if (drx < 0 || dtx < 0) return undefined
    rx += drx
    tx += dtx
  }
  return { rx: rx / seconds, tx: tx / seconds }
}

function findIface(list: InterfaceCounters[], name: string, hint: number): InterfaceCounters | undefined {
  const h = list[hint]
  if (h !== undefined && h.name === name) return h
  for (const x of list) if (x.name === name) return x
  return undefined
}

/**
 * Turns counters into metrics. Without `prev` (the first sample) there is no CPU % and no network rate; the
 * same holds when the host rebooted between the two samples, when time did not advance, or when counters went
 * backwards (resets, 32-bit wraps): the rate is undefined, never negative.
 *
 * df is collected only every Nth tick, so when `cur` has no root filesystem figure it inherits `prev`'s, and
 * that is written into `cur` so that it carries over to the next tick too.
 */
export function computeMetrics(prev: RawSample | undefined, cur: RawSample): HostMetrics {
  if (cur.rootFsUsedPct === undefined && prev?.rootFsUsedPct !== undefined) cur.rootFsUsedPct = prev.rootFsUsedPct
  const used = cur.memTotalBytes - cur.memAvailableBytes
  const m: HostMetrics = {
    at: cur.at,
    cpus: cur.cpus,
    memTotalBytes: cur.memTotalBytes,
    memUsedBytes: Math.max(used, 0),
    memAvailableBytes: cur.memAvailableBytes,
    swapTotalBytes: cur.swapTotalBytes,
    swapUsedBytes: cur.swapTotalBytes - cur.swapFreeBytes,
    load1: cur.load1,
    load5: cur.load5,
    load15: cur.load15,
    uptimeSeconds: cur.uptimeSeconds,
  }
  if (cur.rootFsUsedPct !== undefined) m.rootFsUsedPct = cur.rootFsUsedPct
  if (prev === undefined || incomparable(prev, cur)) return m
  const total = cpuRowDelta(prev.cpuTimes, 0, cur.cpuTimes, 0)
  if (total > 0) {
    m.cpuPct = busyPct(total)
    const d = deltaScratch
    m.cpuStates = {
      user: (100 * d[0]!) / total,
      nice: (100 * d[1]!) / total,
      system: (100 * d[2]!) / total,
      idle: (100 * d[3]!) / total,
      iowait: (100 * d[4]!) / total,
      irq: (100 * d[5]!) / total,
      softirq: (100 * d[6]!) / total,
      steal: (100 * d[7]!) / total,
    }
  }
  const net = netTotals(prev, cur, (cur.at - prev.at) / 1000)
  if (net !== undefined) {
    m.netRxBytesPerSec = net.rx
    m.netTxBytesPerSec = net.tx
  }
  return m
}

/**
 * Parses collected text and computes metrics against the previous sample in one call: what a host actor does
 * per tick. Keep `sample` as the next call's `prev`.
 */
export function parseCollection(
  text: string,
  at: number,
  prev?: RawSample,
): { sample: RawSample; metrics: HostMetrics } {
  const sample = parseSample(parseSections(text), at)
  return { sample, metrics: computeMetrics(prev, sample) }
}

/**
 * Parses a `: kay-detail v1;` reply. Per-core % and interface rates need `prev` (e.g. the last sample from the
 * collection stream); without it, or across a reboot or CPU hotplug, `perCpuPct` is empty. `perCpuPct[k]` is
 * the k-th online CPU (the cpu number when all are online).
 */
export function parseDetail(sections: Map<string, string>, prev?: RawSample, at: number = Date.now()): HostDetail {
  return parseDetailSample(sections, prev, at).detail
}

/** {@link parseDetail}, also returning the raw sample it parsed (the next call's `prev`), so it is parsed once. */
export function parseDetailSample(
  sections: Map<string, string>,
  prev: RawSample | undefined,
  at: number,
): { detail: HostDetail; sample: RawSample } {
  const cur = parseSample(sections, at)
  const metrics = computeMetrics(prev, cur)
  const perCpuPct: number[] = []
  const comparable = prev !== undefined && !incomparable(prev, cur)
  if (comparable && sameCpus(prev, cur)) {
    for (let k = 0; k < cur.cpus; k++) {
      const row = (k + 1) * NSTATES
      const total = cpuRowDelta(prev.cpuTimes, row, cur.cpuTimes, row)
      if (total < 0) {
        perCpuPct.length = 0
        break
      }
      perCpuPct.push(total === 0 ? 0 : busyPct(total))
    }
  }
  const seconds = prev === undefined ? 0 : (cur.at - prev.at) / 1000
  const interfaces: HostDetail['interfaces'] = []
  for (let k = 0; k < (cur.interfaces?.length ?? 0); k++) {
    const x = cur.interfaces![k]!
    const row: HostDetail['interfaces'][number] = { name: x.name, rxBytes: x.rxBytes, txBytes: x.txBytes }
    const p = comparable && seconds > 0 && prev.interfaces ? findIface(prev.interfaces, x.name, k) : undefined
    if (p !== undefined && x.rxBytes >= p.rxBytes && x.txBytes >= p.txBytes) {
      row.rxBytesPerSec = (x.rxBytes - p.rxBytes) / seconds
      row.txBytesPerSec = (x.txBytes - p.txBytes) / seconds
    }
    interfaces.push(row)
  }
  const df = sections.get('df')
  const ps = sections.get('ps')
  const detail: HostDetail = {
    metrics,
    perCpuPct,
    processes: typeof ps === 'string' ? parsePs(ps) : [],
    filesystems: typeof df === 'string' ? parseDfRows(df, 0, df.length, false) : [],
    interfaces,
  }
  return { detail, sample: cur }
}

function sameCpus(a: RawSample, b: RawSample): boolean {
  if (a.cpus !== b.cpus || a.cpuTimes.length !== b.cpuTimes.length) return false
  for (let k = 0; k < a.cpus; k++) if (a.cpuIds[k] !== b.cpuIds[k]) return false
  return true
}
