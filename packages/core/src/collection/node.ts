/**
 * One host's node_exporter series, from the node sections of a collection (docs/collection-protocol.md).
 *
 * A host's output is series lines in the Prometheus exposition format, written as bytes into a shard's NodeSink
 * (series-writer.ts) per family (the HELP and TYPE lines are written once per family by whoever renders the whole
 * exposition, from node-families.ts). Every series carries `instance="<host>"` first. What a host's sections do
 * not provide is absent, never 0; a section that does not parse leaves its families out for that tick (as a
 * failed node_exporter collector does) and is counted.
 *
 * Counter state: node_exporter never lets a CPU's counters go backwards (iowait does, on NO_HZ kernels) and
 * restarts a CPU's counters when its idle time falls back by 3 s or more (hotplug); this does the same per host.
 * The slow sections (mount list and statfs, uname, os-release, udev, /sys/class/net's attributes, the clock
 * sources and the time zone) come only on some ticks: their series are
 * kept and written again on every tick until the next slow tick replaces them.
 */
import {
  DISK_COLUMNS,
  DISK_DEVICES_EXCLUDE,
  type FILESYSTEM_FAMILIES,
  FS_TYPES_EXCLUDE,
  MAX_FAMILY_NAME,
  MOUNT_POINTS_EXCLUDE,
  NET_DEVICES_EXCLUDE,
  NETDEV_KEYS,
  NODE_SLOW_SECTIONS,
  NODE_TICK_SECTIONS,
  VMSTAT_FIELDS,
} from './node-families.js'
import { scanSections } from './parse.js'
import { ByteWriter, type NodeSink } from './series-writer.js'

const DISK_EXCLUDE_RE = new RegExp(DISK_DEVICES_EXCLUDE)
const MOUNT_EXCLUDE_RE = new RegExp(MOUNT_POINTS_EXCLUDE)
const FSTYPE_EXCLUDE_RE = new RegExp(FS_TYPES_EXCLUDE)
const NET_EXCLUDE_RE = new RegExp(NET_DEVICES_EXCLUDE)
const VMSTAT_RE = new RegExp(VMSTAT_FIELDS)
const VERSION_RE = /^[0-9]+\.?[0-9]*/

/** A CPU whose idle time falls back by this much (3 s in USER_HZ jiffies) has been hot-plugged: its counters restart. */
const JUMP_BACK_JIFFIES = 300
const CPU_FIELDS = 10
/** What follows a CPU's number in its node_cpu_seconds_total (8 modes) and node_cpu_guest_seconds_total (2) labels. */
const CPU_MODE_LABELS = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'].map(
  (m) => `",mode="${m}"} `,
)
const GUEST_MODE_LABELS = ['",mode="user"} ', '",mode="nice"} ']
const AVAILABLE_CLOCKSOURCE = 'node_time_clocksource_available_info'
const CURRENT_CLOCKSOURCE = 'node_time_clocksource_current_info'
const ATA_KEYS = ['ID_ATA_WRITE_CACHE', 'ID_ATA_WRITE_CACHE_ENABLED', 'ID_ATA_ROTATION_RATE_RPM']
const ATA_FAMILIES = [
  'node_disk_ata_write_cache',
  'node_disk_ata_write_cache_enabled',
  'node_disk_ata_rotation_rate_rpm',
]

/** Bounds on what one host's sections may make (a host that sends more has the rest ignored, and counted). */
export const NODE_LIMITS = {
  cpus: 4096,
  /** meminfo fields; vmstat fields are fewer (64): node_exporter keeps 7 of them on today's kernels. */
  fields: 256,
  vmstatFields: 64,
  devices: 4096,
  mounts: 4096,
  /** Families one sink accepts (static ones are ~80; meminfo and vmstat fields add ~70 on today's kernels). */
  families: 1024,
} as const

// The sections NodeSeries reads, by index into SECTION_NAMES.
const SECTION_NAMES: readonly string[] = ['loadavg', 'meminfo', 'stat', ...NODE_TICK_SECTIONS, ...NODE_SLOW_SECTIONS]
const S_LOADAVG = 0
const S_MEMINFO = 1
const S_STAT = 2
const S_PROCNETDEV = SECTION_NAMES.indexOf('procnetdev')
const S_NOHANDLER = SECTION_NAMES.indexOf('nohandler')
const S_VMSTAT = SECTION_NAMES.indexOf('vmstat')
const S_FILEFD = SECTION_NAMES.indexOf('filefd')
const S_PSI_CPU = SECTION_NAMES.indexOf('psi-cpu')
const S_PSI_IO = SECTION_NAMES.indexOf('psi-io')
const S_PSI_MEMORY = SECTION_NAMES.indexOf('psi-memory')
const S_DISKSTATS = SECTION_NAMES.indexOf('diskstats')
const S_TIME = SECTION_NAMES.indexOf('time')
const S_MOUNTS = SECTION_NAMES.indexOf('mounts')
const S_STATFS = SECTION_NAMES.indexOf('statfs')
const S_UNAME = SECTION_NAMES.indexOf('uname')
const S_OSRELEASE = SECTION_NAMES.indexOf('osrelease')
const S_UDEV = SECTION_NAMES.indexOf('udev')
const S_NETCLASS = SECTION_NAMES.indexOf('netclass')
const S_CLOCKSOURCE = SECTION_NAMES.indexOf('clocksource')
const S_TZ = SECTION_NAMES.indexOf('tz')
const SECTION_INDEX = new Map(SECTION_NAMES.map((n, i) => [n, i]))

/** A label value as the exposition format wants it (backslash, double quote and newline escaped). */
export function escapeLabelValue(v: string): string {
  if (!/[\\"\n]/.test(v)) return v
  return v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))
}

const isBlank = (c: number): boolean => c === 32 || c === 9 || c === 10 || c === 13

/** `s[i, end)` split into blank-separated words (spaces, tabs, line ends). */
function words(s: string, i: number, end: number, out: string[]): string[] {
  out.length = 0
  while (i < end) {
    while (i < end && isBlank(s.charCodeAt(i))) i++
    if (i >= end) break
    const w = i
    while (i < end && !isBlank(s.charCodeAt(i))) i++
    out.push(s.slice(w, i))
  }
  return out
}

/** An unsigned decimal integer (as /proc prints counters), or NaN. */
function uint(w: string | undefined): number {
  if (w === undefined || w.length === 0 || w.length > 20) return Number.NaN
  let n = 0
  for (let i = 0; i < w.length; i++) {
    const d = w.charCodeAt(i) - 48
    if (d < 0 || d > 9) return Number.NaN
    n = n * 10 + d
  }
  return n
}

/** An unsigned decimal with an optional fraction (`12.34`), or NaN. */
function udec(w: string | undefined): number {
  if (w === undefined || w.length === 0 || w.length > 32 || !/^[0-9]+(\.[0-9]+)?$/.test(w)) return Number.NaN
  return Number(w)
}

/** Calls `line(start, end)` for each line of s[start, end). */
function eachLine(s: string, start: number, end: number, line: (a: number, b: number) => void): void {
  let i = start
  while (i < end) {
    let e = s.indexOf('\n', i)
    if (e === -1 || e > end) e = end
    if (e > i) line(i, e)
    i = e + 1
  }
}

/** Unescapes the two escapes node_exporter undoes in a mount point (fstab(5)): `\040` (space) and `\011` (tab). */
function unescapeMount(p: string): string {
  return p.includes('\\0') ? p.replaceAll('\\040', ' ').replaceAll('\\011', '\t') : p
}

/** Parses an os-release file as node_exporter does (shell-like KEY=value, quotes and backslash escapes). */
export function parseOsRelease(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const raw of text.split('\n')) {
    let line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    if (line.startsWith('export ')) line = line.slice(7).trimStart()
    const eq = line.indexOf('=')
    if (eq <= 0) continue
    const key = line.slice(0, eq)
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) continue
    let v = line.slice(eq + 1)
    if (v.startsWith('"')) {
      let s = ''
      let i = 1
      for (; i < v.length && v[i] !== '"'; i++) {
        if (v[i] === '\\' && i + 1 < v.length) {
          i++
          s += v[i] === 'n' ? '\n' : v[i]
        } else s += v[i]
      }
      v = s
    } else if (v.startsWith("'")) {
      const e = v.indexOf("'", 1)
      v = e === -1 ? v.slice(1) : v.slice(1, e)
    } else {
      v = v.replace(/\s+#.*$/, '').trim()
    }
    out.set(key, v)
  }
  return out
}

/** Cached udev properties of one block device (`<major>:<minor>`). */
type UdevProps = Map<string, string>

/**
 * One host's node_exporter series. `update` takes a collection's output (and keeps the slow sections' series when
 * it has them); `writeTo` writes that collection's series into a shard's sink, once. Keep one per host.
 */
export class NodeSeries {
  /** `{instance="<host>"`: how every series of the host starts after its name. */
  readonly #inst: Uint8Array
  #cpuIds: number[] = []
  /** Per CPU, CPU_FIELDS counters in jiffies: the highest seen (node_exporter's counter state). */
  #cpu = new Float64Array(0)
  /** The slow families' series, written on every tick (undefined: no slow section seen since the last reset). */
  #slow: Array<[string, Uint8Array]> | undefined
  #udev = new Map<string, UdevProps>()
  /** The last update's output and where its sections are, until `writeTo` writes it. */
  #text: string | undefined
  readonly #at = new Int32Array(SECTION_NAMES.length * 2)
  readonly #words: string[] = []
  readonly #ids: number[] = []
  readonly #rows: number[] = []
  /** Sections that did not parse (their families were left out), since this object was made. */
  badSections = 0
  /** Lines or devices beyond NODE_LIMITS, ignored. */
  overLimit = 0

  constructor(instance: string) {
    const w = new ByteWriter(64)
    w.ascii('{instance="')
    w.label(instance)
    w.byte(34)
    this.#inst = w.bytes.slice()
  }

  /** Whether the slow sections have been seen since the last reset (a request should ask for them if not). */
  get hasSlow(): boolean {
    return this.#slow !== undefined
  }

  /** The connection was lost (the host may have rebooted): counter state and slow series are dropped. */
  reset(): void {
    this.#cpuIds = []
    this.#cpu = new Float64Array(0)
    this.dropSlow()
    this.#text = undefined
  }

  /** The slow series are dropped (their sources stopped answering); the next slow collection brings them back. */
  dropSlow(): void {
    this.#slow = undefined
    this.#udev.clear()
  }

  /** Forgets the last update (its tick failed after it: nothing of it may be written). */
  clear(): void {
    this.#text = undefined
  }

  /** Takes a collection's output: its series are written by the next `writeTo`; slow sections are kept now. */
  update(text: string): void {
    const at = this.#at
    at.fill(-1)
    scanSections(text, (t, ns, ne, start, end) => {
      const k = SECTION_INDEX.get(t.slice(ns, ne))
      if (k !== undefined) {
        at[2 * k] = start
        at[2 * k + 1] = end
      }
    })
    this.#text = text
    // The slow sections come together: `uname` marks a slow collection (every loop sends it then).
    if (at[2 * S_UNAME]! >= 0) this.#slowSections(text)
  }

  /** Writes the last update's series into `sink` (once: a second call writes nothing). */
  writeTo(sink: NodeSink): void {
    const s = this.#text
    if (s === undefined) return
    this.#text = undefined
    const at = this.#at
    const run = (k: number, fn: (a: number, b: number) => void): void => {
      const a = at[2 * k]!
      const b = at[2 * k + 1]!
      // A section the host could not read is absent (or empty): its families are left out.
      if (a < 0 || b <= a) return
      sink.begin()
      try {
        fn(a, b)
      } catch {
        sink.rollback()
        this.badSections++
      }
    }
    run(S_LOADAVG, (a, b) => this.#loadavg(sink, s, a, b))
    run(S_STAT, (a, b) => this.#stat(sink, s, a, b))
    run(S_MEMINFO, (a, b) => this.#meminfo(sink, s, a, b))
    run(S_PROCNETDEV, (a, b) => this.#netdev(sink, s, a, b, at[2 * S_NOHANDLER]!, at[2 * S_NOHANDLER + 1]!))
    run(S_VMSTAT, (a, b) => this.#vmstat(sink, s, a, b))
    run(S_FILEFD, (a, b) => this.#filefd(sink, s, a, b))
    run(S_PSI_CPU, (a, b) => this.#psi(sink, s, a, b, 'cpu'))
    run(S_PSI_IO, (a, b) => this.#psi(sink, s, a, b, 'io'))
    run(S_PSI_MEMORY, (a, b) => this.#psi(sink, s, a, b, 'memory'))
    run(S_TIME, (a, b) => this.#time(sink, s, a, b))
    run(S_DISKSTATS, (a, b) => this.#diskstats(sink, s, a, b))
    if (this.#slow !== undefined) for (const [f, bytes] of this.#slow) sink.family(f).copy(bytes)
  }

  /** Starts a series of `family` in `w`: its name and `{instance="<host>"`; the caller adds labels and `} value`. */
  #open(w: ByteWriter, family: string): void {
    w.ascii(family)
    w.copy(this.#inst)
  }

  /** A series without labels besides instance, its value `s[a, b)` as sent (digits, checked by the caller). */
  #raw(sink: NodeSink, family: string, s: string): void {
    const w = sink.family(family)
    this.#open(w, family)
    w.ascii('} ')
    w.ascii(s)
    w.byte(10)
  }

  #loadavg(sink: NodeSink, s: string, start: number, end: number): void {
    const w = words(s, start, end, this.#words)
    if (Number.isNaN(udec(w[0])) || Number.isNaN(udec(w[1])) || Number.isNaN(udec(w[2]))) throw new Error('loadavg')
    this.#raw(sink, 'node_load1', w[0]!)
    this.#raw(sink, 'node_load5', w[1]!)
    this.#raw(sink, 'node_load15', w[2]!)
  }

  #stat(sink: NodeSink, s: string, start: number, end: number): void {
    const ids = this.#ids
    const rows = this.#rows
    ids.length = 0
    rows.length = 0
    // intr, ctxt, btime, processes, procs_running, procs_blocked: the value as sent (checked digits).
    const scalars: Array<string | undefined> = [undefined, undefined, undefined, undefined, undefined, undefined]
    eachLine(s, start, end, (a, b) => {
      const w = words(s, a, b, this.#words)
      const key = w[0]
      if (key === undefined) return
      if (key.startsWith('cpu')) {
        if (key.length === 3) return
        const id = uint(key.slice(3))
        if (Number.isNaN(id) || id > 65_535 || w.length < 5) throw new Error('stat')
        if (ids.length >= NODE_LIMITS.cpus) {
          this.overLimit++
          return
        }
        ids.push(id)
        for (let k = 1; k <= CPU_FIELDS; k++) {
          const v = k < w.length ? uint(w[k]) : 0
          if (Number.isNaN(v)) throw new Error('stat')
          rows.push(v)
        }
        return
      }
      const k = STAT_KEYS.indexOf(key)
      if (k >= 0 && !Number.isNaN(uint(w[1]))) scalars[k] = w[1]
    })
    if (ids.length > 0) {
      const cur = this.#counterState(ids, rows)
      const cpu = sink.family('node_cpu_seconds_total')
      const guest = sink.family('node_cpu_guest_seconds_total')
      for (let k = 0; k < ids.length; k++) {
        const o = k * CPU_FIELDS
        for (let m = 0; m < 10; m++) {
          const w = m < 8 ? cpu : guest
          this.#open(w, m < 8 ? 'node_cpu_seconds_total' : 'node_cpu_guest_seconds_total')
          w.ascii(',cpu="')
          w.uint(ids[k]!)
          w.ascii(m < 8 ? CPU_MODE_LABELS[m]! : GUEST_MODE_LABELS[m - 8]!)
          // Jiffies to seconds (USER_HZ is 100), as node_exporter divides them.
          w.fixed(cur[o + m]!, 2)
          w.byte(10)
        }
      }
    }
    for (let k = 0; k < STAT_KEYS.length; k++)
      if (scalars[k] !== undefined) this.#raw(sink, STAT_FAMILIES[k]!, scalars[k]!)
  }

  /** node_exporter's CPU counter state: never backwards; a CPU's idle falling back ≥ 3 s restarts it. */
  #counterState(ids: number[], rows: number[]): Float64Array {
    const same = ids.length === this.#cpuIds.length && ids.every((id, k) => id === this.#cpuIds[k])
    if (!same) {
      this.#cpuIds = ids.slice()
      this.#cpu = new Float64Array(ids.length * CPU_FIELDS)
    }
    const st = this.#cpu
    for (let k = 0; k < ids.length; k++) {
      const o = k * CPU_FIELDS
      if (st[o + 3]! - rows[o + 3]! >= JUMP_BACK_JIFFIES) st.fill(0, o, o + CPU_FIELDS)
      for (let f = 0; f < CPU_FIELDS; f++) if (rows[o + f]! >= st[o + f]!) st[o + f] = rows[o + f]!
    }
    return st
  }

  #meminfo(sink: NodeSink, s: string, start: number, end: number): void {
    const seen = new Set<string>()
    let n = 0
    eachLine(s, start, end, (a, b) => {
      const w = words(s, a, b, this.#words)
      if (w.length < 2) return
      if (++n > NODE_LIMITS.fields) {
        this.overLimit++
        return
      }
      const k = w[0]!
      if (!k.endsWith(':')) throw new Error('meminfo')
      // Active(anon) → Active_anon, as node_exporter names it.
      let key = k.slice(0, -1)
      if (key.includes('(')) key = key.replace(/\((.*)\)/, '_$1')
      const v = uint(w[1])
      if (Number.isNaN(v)) throw new Error('meminfo')
      if (w.length === 3) key += '_bytes'
      else if (w.length !== 2) throw new Error('meminfo')
      if (!/^[A-Za-z0-9_]+$/.test(key) || key.length > MAX_FAMILY_NAME - 12 || seen.has(key)) return
      seen.add(key)
      const family = `node_memory_${key}`
      const out = sink.family(family)
      this.#open(out, family)
      out.ascii('} ')
      // kB, as node_exporter reads every unit, to bytes.
      if (w.length === 3) out.uint(v * 1024)
      else out.ascii(w[1]!)
      out.byte(10)
    })
  }

  #netdev(sink: NodeSink, s: string, start: number, end: number, nhStart: number, nhEnd: number): void {
    let nohandler: Map<string, string> | undefined
    if (nhStart >= 0) {
      nohandler = new Map()
      eachLine(s, nhStart, nhEnd, (a, b) => {
        const w = words(s, a, b, this.#words)
        if (w.length === 2 && !Number.isNaN(uint(w[1]))) nohandler!.set(w[0]!, w[1]!)
      })
    }
    const seen = new Set<string>()
    const writers = NETDEV_FAMILIES.map((f) => sink.family(f))
    eachLine(s, start, end, (a, b) => {
      const colon = s.indexOf(':', a)
      if (colon === -1 || colon >= b) return
      const name = s.slice(a, colon).trim()
      if (name === '' || name.includes('|') || NET_EXCLUDE_RE.test(name) || seen.has(name)) return
      if (seen.size >= NODE_LIMITS.devices) {
        this.overLimit++
        return
      }
      const w = words(s, colon + 1, b, this.#words)
      if (w.length < NETDEV_KEYS.length) throw new Error('procnetdev')
      for (let k = 0; k < NETDEV_KEYS.length; k++) if (Number.isNaN(uint(w[k]))) throw new Error('procnetdev')
      seen.add(name)
      for (let k = 0; k < NETDEV_KEYS.length; k++) this.#device(writers[k]!, NETDEV_FAMILIES[k]!, name, w[k]!)
      const x = nohandler?.get(name)
      if (x !== undefined) {
        const f = 'node_network_receive_nohandler_total'
        this.#device(sink.family(f), f, name, x)
      }
    })
  }

  /** A series labelled `device="<name>"`, its value as sent. */
  #device(w: ByteWriter, family: string, name: string, value: string): void {
    this.#open(w, family)
    w.ascii(',device="')
    w.label(name)
    w.ascii('"} ')
    w.ascii(value)
    w.byte(10)
  }

  #vmstat(sink: NodeSink, s: string, start: number, end: number): void {
    const seen = new Set<string>()
    eachLine(s, start, end, (a, b) => {
      const w = words(s, a, b, this.#words)
      if (w.length !== 2) return
      const name = w[0]!
      if (!VMSTAT_RE.test(name) || !/^[a-z0-9_]+$/.test(name) || seen.has(name)) return
      if (seen.size >= NODE_LIMITS.vmstatFields || name.length > MAX_FAMILY_NAME - 12) {
        this.overLimit++
        return
      }
      if (Number.isNaN(uint(w[1]))) throw new Error('vmstat')
      seen.add(name)
      this.#raw(sink, `node_vmstat_${name}`, w[1]!)
    })
  }

  #filefd(sink: NodeSink, s: string, start: number, end: number): void {
    const w = words(s, start, end, this.#words)
    if (Number.isNaN(uint(w[0])) || Number.isNaN(uint(w[2]))) throw new Error('filefd')
    this.#raw(sink, 'node_filefd_allocated', w[0]!)
    this.#raw(sink, 'node_filefd_maximum', w[2]!)
  }

  #psi(sink: NodeSink, s: string, start: number, end: number, res: 'cpu' | 'io' | 'memory'): void {
    let some = -1
    let full = -1
    eachLine(s, start, end, (a, b) => {
      const m = /^(some|full) .*total=([0-9]{1,16})\s*$/.exec(s.slice(a, b))
      if (m === null) throw new Error('psi')
      if (m[1] === 'some') some = Number(m[2])
      else full = Number(m[2])
    })
    if (some < 0 || (res !== 'cpu' && full < 0)) throw new Error('psi')
    // Microseconds to seconds. node_exporter 1.5 reads only cpu's `some` line.
    const put = (family: string, us: number): void => {
      const w = sink.family(family)
      this.#open(w, family)
      w.ascii('} ')
      w.fixed(us, 6)
      w.byte(10)
    }
    if (res === 'cpu') {
      put('node_pressure_cpu_waiting_seconds_total', some)
      return
    }
    put(`node_pressure_${res}_waiting_seconds_total`, some)
    put(`node_pressure_${res}_stalled_seconds_total`, full)
  }

  #time(sink: NodeSink, s: string, start: number, end: number): void {
    const v = s.slice(start, end).trim()
    if (Number.isNaN(udec(v))) throw new Error('time')
    this.#raw(sink, 'node_time_seconds', v)
  }

  #diskstats(sink: NodeSink, s: string, start: number, end: number): void {
    const seen = new Set<string>()
    eachLine(s, start, end, (a, b) => {
      const w = words(s, a, b, this.#words)
      if (w.length < 4) throw new Error('diskstats')
      const major = uint(w[0])
      const minor = uint(w[1])
      const name = w[2]!
      if (Number.isNaN(major) || Number.isNaN(minor)) throw new Error('diskstats')
      if (DISK_EXCLUDE_RE.test(name) || seen.has(name)) return
      if (seen.size >= NODE_LIMITS.devices) {
        this.overLimit++
        return
      }
      const n = Math.min(w.length - 3, DISK_COLUMNS.length)
      for (let k = 0; k < n; k++) if (Number.isNaN(uint(w[k + 3]))) throw new Error('diskstats')
      seen.add(name)
      for (let k = 0; k < n; k++) {
        const col = DISK_COLUMNS[k]!
        const out = sink.family(col.name)
        this.#open(out, col.name)
        out.ascii(',device="')
        out.label(name)
        out.ascii('"} ')
        const v = uint(w[k + 3])
        // Sectors to bytes (×512), milliseconds to seconds; the rest as sent.
        if (col.scale === 512) out.uint(v * 512)
        else if (col.scale === 0.001) out.fixed(v, 3)
        else out.ascii(w[k + 3]!)
        out.byte(10)
      }
      this.#diskInfo(sink, name, major, minor)
    })
  }

  /** node_disk_info (always) and the udev-derived info families (when udev knows the device). */
  #diskInfo(sink: NodeSink, name: string, major: number, minor: number): void {
    const u = this.#udev.get(`${major}:${minor}`)
    const info = (family: string, labels: Array<[string, string]>): void => {
      const w = sink.family(family)
      this.#open(w, family)
      w.ascii(',device="')
      w.label(name)
      for (const [k, v] of labels) {
        w.ascii(`",${k}="`)
        w.label(v)
      }
      w.ascii('"} 1\n')
    }
    const p = (key: string): string => u?.get(key) ?? ''
    info('node_disk_info', [
      ['major', String(major)],
      ['minor', String(minor)],
      ['path', p('ID_PATH')],
      ['wwn', p('ID_WWN')],
      ['model', p('ID_MODEL')],
      ['serial', p('ID_SERIAL_SHORT')],
      ['revision', p('ID_REVISION')],
    ])
    if (u === undefined) return
    if (p('ID_FS_TYPE') !== '') {
      info('node_disk_filesystem_info', [
        ['type', p('ID_FS_TYPE')],
        ['usage', p('ID_FS_USAGE')],
        ['uuid', p('ID_FS_UUID')],
        ['version', p('ID_FS_VERSION')],
      ])
    }
    if (p('DM_NAME') !== '') {
      info('node_disk_device_mapper_info', [
        ['name', p('DM_NAME')],
        ['uuid', p('DM_UUID')],
        ['vg_name', p('DM_VG_NAME')],
        ['lv_name', p('DM_LV_NAME')],
        ['lv_layer', p('DM_LV_LAYER')],
      ])
    }
    if (p('ID_ATA') === '') return
    for (let k = 0; k < 3; k++) {
      const v = u.get(ATA_KEYS[k]!)
      if (v === undefined || Number.isNaN(udec(v))) continue
      const w = sink.family(ATA_FAMILIES[k]!)
      this.#open(w, ATA_FAMILIES[k]!)
      w.ascii(',device="')
      w.label(name)
      w.ascii('"} ')
      w.ascii(v)
      w.byte(10)
    }
  }

  /** The slow sections: their series (rendered once, kept as bytes) replace the kept ones; each part that does not parse is left out. */
  #slowSections(s: string): void {
    const at = this.#at
    const out = new Map<string, ByteWriter>()
    const family = (f: string): ByteWriter => {
      let w = out.get(f)
      if (w === undefined) {
        w = new ByteWriter(256)
        out.set(f, w)
      }
      return w
    }
    const part = (k: number, fn: (a: number, b: number) => void): void => {
      const a = at[2 * k]!
      if (a < 0) return
      const mark = new Map([...out].map(([f, w]) => [f, w.len]))
      try {
        fn(a, at[2 * k + 1]!)
      } catch {
        for (const [f, w] of out) w.len = mark.get(f) ?? 0
        this.badSections++
      }
    }
    part(S_MOUNTS, (a, b) => this.#filesystems(family, s, a, b))
    part(S_UNAME, (a, b) => {
      const lines = s.slice(a, b).split('\n')
      if (lines.length < 6) throw new Error('uname')
      const [sysname, nodename, release, version, machine, domainname] = lines
      this.#info(family('node_uname_info'), 'node_uname_info', [
        ['domainname', domainname!],
        ['machine', machine!],
        ['nodename', nodename!],
        ['release', release!],
        ['sysname', sysname!],
        ['version', version!],
      ])
    })
    part(S_OSRELEASE, (a, b) => {
      const env = parseOsRelease(s.slice(a, b))
      const v = (k: string): string => env.get(k) ?? ''
      this.#info(family('node_os_info'), 'node_os_info', [
        ['build_id', v('BUILD_ID')],
        ['id', v('ID')],
        ['id_like', v('ID_LIKE')],
        ['image_id', v('IMAGE_ID')],
        ['image_version', v('IMAGE_VERSION')],
        ['name', v('NAME')],
        ['pretty_name', v('PRETTY_NAME')],
        ['variant', v('VARIANT')],
        ['variant_id', v('VARIANT_ID')],
        ['version', v('VERSION')],
        ['version_codename', v('VERSION_CODENAME')],
        ['version_id', v('VERSION_ID')],
      ])
      const mm = VERSION_RE.exec(v('VERSION_ID'))
      const version = mm === null ? 0 : Number.parseFloat(mm[0])
      if (version > 0) {
        const labels: Array<[string, string]> = [
          ['id', v('ID')],
          ['id_like', v('ID_LIKE')],
          ['name', v('NAME')],
        ]
        this.#info(family('node_os_version'), 'node_os_version', labels, String(version))
      }
    })
    // node_exporter's netclass collector: every device of /sys/class/net, lo included (its default ignores none).
    part(S_NETCLASS, (a, b) => {
      let n = 0
      eachLine(s, a, b, (x, y) => {
        const f = s.slice(x, y).split('\t')
        const device = f[0]!.trim()
        if (f.length < 6 || device === '') throw new Error('netclass')
        if (++n > NODE_LIMITS.devices) {
          this.overLimit++
          return
        }
        const operstate = f[1]!.trim()
        this.#info(family('node_network_info'), 'node_network_info', [
          ['address', f[2]!.trim()],
          ['broadcast', f[3]!.trim()],
          ['device', device],
          ['duplex', f[4]!.trim()],
          ['ifalias', f.slice(5).join('\t').trim()],
          ['operstate', operstate],
        ])
        this.#info(family('node_network_up'), 'node_network_up', [['device', device]], operstate === 'up' ? '1' : '0')
      })
    })
    part(S_CLOCKSOURCE, (a, b) => {
      eachLine(s, a, b, (x, y) => {
        const f = s.slice(x, y).split('\t')
        if (f.length < 3 || !/^[0-9]{1,6}$/.test(f[0]!)) throw new Error('clocksource')
        const device = f[0]!
        for (const c of f[2]!.split(/\s+/).slice(0, 64)) {
          if (c !== '')
            this.#info(family(AVAILABLE_CLOCKSOURCE), AVAILABLE_CLOCKSOURCE, [
              ['clocksource', c],
              ['device', device],
            ])
        }
        const current = f[1]!.trim()
        if (current !== '') {
          this.#info(family(CURRENT_CLOCKSOURCE), CURRENT_CLOCKSOURCE, [
            ['clocksource', current],
            ['device', device],
          ])
        }
      })
    })
    part(S_TZ, (a, b) => {
      const m = /^(\S{1,64}) ([+-])([0-9]{2})([0-9]{2})$/.exec(s.slice(a, b).trim())
      if (m === null) throw new Error('tz')
      const offset = (m[2] === '-' ? -1 : 1) * (Number(m[3]) * 3600 + Number(m[4]) * 60)
      this.#info(
        family('node_time_zone_offset_seconds'),
        'node_time_zone_offset_seconds',
        [['time_zone', m[1]!]],
        String(offset),
      )
    })
    const udev = new Map<string, UdevProps>()
    part(S_UDEV, (a, b) => {
      eachLine(s, a, b, (x, y) => {
        const m = /^([0-9]{1,10}:[0-9]{1,10}) ([A-Z_]{1,64})=(.*)$/.exec(s.slice(x, y))
        if (m === null) return
        let props = udev.get(m[1]!)
        if (props === undefined) {
          if (udev.size >= NODE_LIMITS.devices) return
          props = new Map()
          udev.set(m[1]!, props)
        }
        props.set(m[2]!, m[3]!)
      })
    })
    this.#udev = udev
    this.#slow = [...out].filter(([, w]) => w.len > 0).map(([f, w]) => [f, w.bytes.slice()])
  }

  /** An info-like series: `family{instance,labels…} value` (1 by default). */
  #info(w: ByteWriter, family: string, labels: Array<[string, string]>, value = '1'): void {
    this.#open(w, family)
    for (const [k, v] of labels) {
      w.ascii(`,${k}="`)
      w.label(v)
      w.byte(34)
    }
    w.ascii('} ')
    w.ascii(value)
    w.byte(10)
  }

  /** The filesystem families from the mount list and its statfs lines (none without a statfs section). */
  #filesystems(family: (f: string) => ByteWriter, s: string, start: number, end: number): void {
    const at = this.#at
    const sa = at[2 * S_STATFS]!
    // Without a statfs section the loop could not stat (no statfs call, no `stat -f`): no filesystem families.
    if (sa < 0) return
    const stats = new Map<string, string[]>()
    eachLine(s, sa, at[2 * S_STATFS + 1]!, (x, y) => {
      const w = words(s, x, y, this.#words)
      if (w.length < 7) throw new Error('statfs')
      const nums = w.slice(0, 6)
      if (nums.some((v) => Number.isNaN(uint(v)))) throw new Error('statfs')
      // The mount point is the rest of the line after six numbers and one blank (it may contain blanks).
      let i = x
      for (let k = 0; k < 6; k++) {
        while (s.charCodeAt(i) === 32 || s.charCodeAt(i) === 9) i++
        while (i < y && s.charCodeAt(i) !== 32 && s.charCodeAt(i) !== 9) i++
      }
      stats.set(s.slice(i + 1, y), nums)
    })
    const seen = new Set<string>()
    eachLine(s, start, end, (x, y) => {
      const w = words(s, x, y, this.#words)
      if (w.length < 4) throw new Error('mounts')
      const device = w[0]!
      const mount = unescapeMount(w[1]!)
      const fstype = w[2]!
      if (MOUNT_EXCLUDE_RE.test(mount) || FSTYPE_EXCLUDE_RE.test(fstype)) return
      const key = `${device}\0${mount}\0${fstype}`
      if (seen.has(key)) return
      if (seen.size >= NODE_LIMITS.mounts) {
        this.overLimit++
        return
      }
      seen.add(key)
      const st = stats.get(mount)
      const labels: Array<[string, string]> = [
        ['device', device],
        ['fstype', fstype],
        ['mountpoint', mount],
      ]
      const put = (f: (typeof FILESYSTEM_FAMILIES)[number], v: string): void => this.#info(family(f), f, labels, v)
      put('node_filesystem_device_error', st === undefined ? '1' : '0')
      if (st === undefined) return
      const bsize = uint(st[0])
      put('node_filesystem_size_bytes', String(uint(st[1]) * bsize))
      put('node_filesystem_free_bytes', String(uint(st[2]) * bsize))
      put('node_filesystem_avail_bytes', String(uint(st[3]) * bsize))
      put('node_filesystem_files', st[4]!)
      put('node_filesystem_files_free', st[5]!)
      put('node_filesystem_readonly', w[3]!.split(',').includes('ro') ? '1' : '0')
    })
  }
}

const STAT_KEYS = ['intr', 'ctxt', 'btime', 'processes', 'procs_running', 'procs_blocked']
const STAT_FAMILIES = [
  'node_intr_total',
  'node_context_switches_total',
  'node_boot_time_seconds',
  'node_forks_total',
  'node_procs_running',
  'node_procs_blocked',
]
const NETDEV_FAMILIES = NETDEV_KEYS.map((k) => `node_network_${k}_total`)
