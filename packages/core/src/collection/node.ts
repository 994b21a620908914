/**
 * One host's node_exporter series, from the node sections of a collection (docs/collection-protocol.md), and the
 * sink a shard gathers them in per family for one tick.
 *
 * A host's output is text in the Prometheus exposition format (series lines only: the HELP and TYPE lines are
 * written once per family by whoever renders the whole exposition, from node-families.ts). Every series carries
 * `instance="<host>"` first. What a host's sections do not provide is absent, never 0; a section that does not
 * parse leaves its families out for that tick (as a failed node_exporter collector does) and is counted.
 *
 * Counter state: node_exporter never lets a CPU's counters go backwards (iowait does, on NO_HZ kernels) and
 * restarts a CPU's counters when its idle time falls back by 3 s or more (hotplug); this does the same per host.
 * The slow sections (mount list and statfs, uname, os-release, udev) come only on some ticks: their series are
 * kept and written again on every tick until the next slow tick replaces them.
 */
import {
  DISK_COLUMNS,
  DISK_DEVICES_EXCLUDE,
  FILESYSTEM_FAMILIES,
  FS_TYPES_EXCLUDE,
  MAX_FAMILY_NAME,
  MOUNT_POINTS_EXCLUDE,
  NET_DEVICES_EXCLUDE,
  NETDEV_KEYS,
  VMSTAT_FIELDS,
} from './node-families.js'
import { scanSections } from './parse.js'

const DISK_EXCLUDE_RE = new RegExp(DISK_DEVICES_EXCLUDE)
const MOUNT_EXCLUDE_RE = new RegExp(MOUNT_POINTS_EXCLUDE)
const FSTYPE_EXCLUDE_RE = new RegExp(FS_TYPES_EXCLUDE)
const NET_EXCLUDE_RE = new RegExp(NET_DEVICES_EXCLUDE)
const VMSTAT_RE = new RegExp(VMSTAT_FIELDS)
const VERSION_RE = /^[0-9]+\.?[0-9]*/

/** node_exporter's USER_HZ: /proc/stat counts in 1/100 s. */
const USER_HZ = 100
/** A CPU whose idle time falls back by this much (seconds) has been hot-plugged: its counters restart. */
const JUMP_BACK_SECONDS = 3
const CPU_FIELDS = 10
const CPU_MODES = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'] as const

/** Bounds on what one host's sections may make (a host that sends more has the rest ignored, and counted). */
export const NODE_LIMITS = {
  cpus: 4096,
  fields: 512,
  devices: 4096,
  mounts: 4096,
  /** Families one sink accepts (static ones are ~80; meminfo and vmstat fields add ~70 on today's kernels). */
  families: 1024,
} as const

// The node sections, by name (see docs/collection-protocol.md).
const S_LOADAVG = 0
const S_MEMINFO = 1
const S_STAT = 2
const S_PROCNETDEV = 3
const S_NOHANDLER = 4
const S_VMSTAT = 5
const S_FILEFD = 6
const S_PSI_CPU = 7
const S_PSI_IO = 8
const S_PSI_MEMORY = 9
const S_DISKSTATS = 10
const S_TIME = 11
const S_MOUNTS = 12
const S_STATFS = 13
const S_UNAME = 14
const S_OSRELEASE = 15
const S_UDEV = 16
const SECTION_NAMES = [
  'loadavg',
  'meminfo',
  'stat',
  'procnetdev',
  'nohandler',
  'vmstat',
  'filefd',
  'psi-cpu',
  'psi-io',
  'psi-memory',
  'diskstats',
  'time',
  'mounts',
  'statfs',
  'uname',
  'osrelease',
  'udev',
]
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

/**
 * Where a shard gathers its hosts' series for one tick, per family (packed.ts puts them into the tick's one
 * transferable buffer). A family is created on first use, up to NODE_LIMITS.families; series for further families are
 * dropped and counted in `droppedFamilies`.
 */
export class NodeSink {
  readonly #index = new Map<string, number>()
  #names: string[] = []
  #parts: string[][] = []
  droppedFamilies = 0

  add(family: string, lines: string): void {
    let i = this.#index.get(family)
    if (i === undefined) {
      if (this.#names.length >= NODE_LIMITS.families) {
        this.droppedFamilies++
        return
      }
      i = this.#names.length
      this.#index.set(family, i)
      this.#names.push(family)
      this.#parts.push([])
    }
    this.#parts[i]!.push(lines)
  }

  /** The tick's series, one text per family (in first-use order), and the sink emptied for the next tick. */
  take(): { families: string[]; texts: string[] } {
    const out = { families: this.#names, texts: this.#parts.map((p) => p.join('')) }
    this.#index.clear()
    this.#names = []
    this.#parts = []
    return out
  }
}

/** Cached udev properties of one block device (`<major>:<minor>`). */
type UdevProps = Map<string, string>

/**
 * One host's node_exporter series. `update` parses a collection's node sections (and says whether it had the
 * slow ones), `writeTo` hands the series of the last update to a sink. Keep one per host.
 */
export class NodeSeries {
  /** `instance="<host>"`, the first label of every series. */
  readonly #inst: string
  #cpuIds: number[] = []
  /** Per CPU, CPU_FIELDS counters in seconds: the highest seen (node_exporter's counter state). */
  #cpu = new Float64Array(0)
  /** The slow families' series, written on every tick (undefined: no slow section seen since the last reset). */
  #slow: Array<[string, string]> | undefined
  #udev = new Map<string, UdevProps>()
  /** The last update's series: family names and their lines, in parallel. */
  #fam: string[] = []
  #txt: string[] = []
  #words: string[] = []
  /** Sections that did not parse (their families were left out), since this object was made. */
  badSections = 0
  /** Lines or devices beyond NODE_LIMITS, ignored. */
  overLimit = 0

  constructor(instance: string) {
    this.#inst = `instance="${escapeLabelValue(instance)}"`
  }

  /** Whether the slow sections have been seen since the last reset (a request should ask for them if not). */
  get hasSlow(): boolean {
    return this.#slow !== undefined
  }

  /** The connection was lost (the host may have rebooted): counter state and slow series are dropped. */
  reset(): void {
    this.#cpuIds = []
    this.#cpu = new Float64Array(0)
    this.#slow = undefined
    this.#udev.clear()
    this.#fam.length = 0
    this.#txt.length = 0
  }

  /** The slow series are dropped (their sources stopped answering); the next slow collection brings them back. */
  dropSlow(): void {
    this.#slow = undefined
    this.#udev.clear()
  }

  /** Hands the last update's series to `sink`. */
  writeTo(sink: NodeSink): void {
    for (let i = 0; i < this.#fam.length; i++) sink.add(this.#fam[i]!, this.#txt[i]!)
  }

  /** Drops the last update's series (the tick failed after it: nothing of it may be written). */
  clear(): void {
    this.#fam.length = 0
    this.#txt.length = 0
  }

  /** Parses the node sections of `text` (a collection's output); the series are kept for `writeTo`. */
  update(text: string): void {
    this.#fam.length = 0
    this.#txt.length = 0
    const at = new Int32Array(SECTION_NAMES.length * 2).fill(-1)
    scanSections(text, (t, ns, ne, start, end) => {
      const k = SECTION_INDEX.get(t.slice(ns, ne))
      if (k !== undefined) {
        at[2 * k] = start
        at[2 * k + 1] = end
      }
    })
    const run = (k: number, fn: (s: number, e: number) => void): void => {
      const s = at[2 * k]!
      if (s < 0) return
      const mark = this.#fam.length
      try {
        fn(s, at[2 * k + 1]!)
      } catch {
        // A section that does not parse: its families are left out this tick.
        this.#fam.length = mark
        this.#txt.length = mark
        this.badSections++
      }
    }
    run(S_LOADAVG, (s, e) => this.#loadavg(text, s, e))
    run(S_STAT, (s, e) => this.#stat(text, s, e))
    run(S_MEMINFO, (s, e) => this.#meminfo(text, s, e))
    run(S_PROCNETDEV, (s, e) => this.#netdev(text, s, e, at[2 * S_NOHANDLER]!, at[2 * S_NOHANDLER + 1]!))
    run(S_VMSTAT, (s, e) => this.#vmstat(text, s, e))
    run(S_FILEFD, (s, e) => this.#filefd(text, s, e))
    run(S_PSI_CPU, (s, e) => this.#psi(text, s, e, 'cpu'))
    run(S_PSI_IO, (s, e) => this.#psi(text, s, e, 'io'))
    run(S_PSI_MEMORY, (s, e) => this.#psi(text, s, e, 'memory'))
    run(S_TIME, (s, e) => this.#time(text, s, e))
    // The slow sections come together: `uname` marks a slow collection (every loop sends it then).
    if (at[2 * S_UNAME]! >= 0) this.#slowSections(text, at)
    run(S_DISKSTATS, (s, e) => this.#diskstats(text, s, e))
    if (this.#slow !== undefined) {
      for (const [f, t] of this.#slow) this.#out(f, t)
    }
  }

  #out(family: string, lines: string): void {
    if (lines === '') return
    this.#fam.push(family)
    this.#txt.push(lines)
  }

  #scalar(family: string, v: number): void {
    if (Number.isFinite(v)) this.#out(family, `${family}{${this.#inst}} ${v}\n`)
  }

  #loadavg(s: string, start: number, end: number): void {
    const w = words(s, start, end, this.#words)
    const l1 = udec(w[0])
    const l5 = udec(w[1])
    const l15 = udec(w[2])
    if (Number.isNaN(l1) || Number.isNaN(l5) || Number.isNaN(l15)) throw new Error('loadavg')
    this.#scalar('node_load1', l1)
    this.#scalar('node_load5', l5)
    this.#scalar('node_load15', l15)
  }

  #stat(s: string, start: number, end: number): void {
    const inst = this.#inst
    const ids: number[] = []
    const rows: number[] = []
    let intr = Number.NaN
    let ctxt = Number.NaN
    let btime = Number.NaN
    let forks = Number.NaN
    let running = Number.NaN
    let blocked = Number.NaN
    eachLine(s, start, end, (a, b) => {
      const w = words(s, a, b, this.#words)
      const key = w[0]
      if (key === undefined) return
      if (key.startsWith('cpu')) {
        if (key.length === 3) return
        const id = uint(key.slice(3))
        if (Number.isNaN(id) || id > 65_535) throw new Error('stat')
        if (ids.length >= NODE_LIMITS.cpus) {
          this.overLimit++
          return
        }
        if (w.length < 5) throw new Error('stat')
        ids.push(id)
        for (let k = 1; k <= CPU_FIELDS; k++) {
          const v = k < w.length ? uint(w[k]) : 0
          if (Number.isNaN(v)) throw new Error('stat')
          rows.push(v / USER_HZ)
        }
      } else if (key === 'intr') intr = uint(w[1])
      else if (key === 'ctxt') ctxt = uint(w[1])
      else if (key === 'btime') btime = uint(w[1])
      else if (key === 'processes') forks = uint(w[1])
      else if (key === 'procs_running') running = uint(w[1])
      else if (key === 'procs_blocked') blocked = uint(w[1])
    })
    if (ids.length > 0) {
      const cur = this.#counterState(ids, rows)
      let cpu = ''
      let guest = ''
      for (let k = 0; k < ids.length; k++) {
        const o = k * CPU_FIELDS
        const p = `{${inst},cpu="${ids[k]}",mode="`
        for (let m = 0; m < 8; m++) cpu += `node_cpu_seconds_total${p}${CPU_MODES[m]}"} ${cur[o + m]}\n`
        guest += `node_cpu_guest_seconds_total${p}user"} ${cur[o + 8]}\nnode_cpu_guest_seconds_total${p}nice"} ${cur[o + 9]}\n`
      }
      this.#out('node_cpu_seconds_total', cpu)
      this.#out('node_cpu_guest_seconds_total', guest)
    }
    this.#scalar('node_intr_total', intr)
    this.#scalar('node_context_switches_total', ctxt)
    this.#scalar('node_boot_time_seconds', btime)
    this.#scalar('node_forks_total', forks)
    this.#scalar('node_procs_running', running)
    this.#scalar('node_procs_blocked', blocked)
  }

  /** node_exporter's CPU counter state: never backwards; a CPU's idle falling back ≥ 3 s restarts it. */
  #counterState(ids: number[], rows: number[]): Float64Array {
    const same = ids.length === this.#cpuIds.length && ids.every((id, k) => id === this.#cpuIds[k])
    if (!same) {
      this.#cpuIds = ids
      this.#cpu = new Float64Array(ids.length * CPU_FIELDS)
    }
    const st = this.#cpu
    for (let k = 0; k < ids.length; k++) {
      const o = k * CPU_FIELDS
      if (st[o + 3]! - rows[o + 3]! >= JUMP_BACK_SECONDS) st.fill(0, o, o + CPU_FIELDS)
      for (let f = 0; f < CPU_FIELDS; f++) if (rows[o + f]! >= st[o + f]!) st[o + f] = rows[o + f]!
    }
    return st
  }

  #meminfo(s: string, start: number, end: number): void {
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
      let key = k.slice(0, -1).replace(/\((.*)\)/, '_$1')
      let v = udec(w[1])
      if (Number.isNaN(v)) throw new Error('meminfo')
      if (w.length === 3) {
        v *= 1024
        key += '_bytes'
      } else if (w.length !== 2) throw new Error('meminfo')
      if (!/^[A-Za-z0-9_]+$/.test(key) || key.length > MAX_FAMILY_NAME - 12 || seen.has(key)) return
      seen.add(key)
      this.#scalar(`node_memory_${key}`, v)
    })
  }

  #netdev(s: string, start: number, end: number, nhStart: number, nhEnd: number): void {
    const inst = this.#inst
    const nohandler = new Map<string, string>()
    if (nhStart >= 0) {
      eachLine(s, nhStart, nhEnd, (a, b) => {
        const w = words(s, a, b, this.#words)
        if (w.length === 2 && !Number.isNaN(uint(w[1]))) nohandler.set(w[0]!, w[1]!)
      })
    }
    const cols: string[] = NETDEV_KEYS.map(() => '')
    let nh = ''
    const seen = new Set<string>()
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
      const l = `{${inst},device="${escapeLabelValue(name)}"} `
      for (let k = 0; k < NETDEV_KEYS.length; k++) cols[k] += `node_network_${NETDEV_KEYS[k]}_total${l}${w[k]}\n`
      const x = nohandler.get(name)
      if (x !== undefined) nh += `node_network_receive_nohandler_total${l}${x}\n`
    })
    for (let k = 0; k < NETDEV_KEYS.length; k++) this.#out(`node_network_${NETDEV_KEYS[k]}_total`, cols[k]!)
    this.#out('node_network_receive_nohandler_total', nh)
  }

  #vmstat(s: string, start: number, end: number): void {
    const seen = new Set<string>()
    let n = 0
    eachLine(s, start, end, (a, b) => {
      const w = words(s, a, b, this.#words)
      if (w.length !== 2) return
      const name = w[0]!
      if (!VMSTAT_RE.test(name) || !/^[a-z0-9_]+$/.test(name) || seen.has(name)) return
      if (++n > NODE_LIMITS.fields || name.length > MAX_FAMILY_NAME - 12) {
        this.overLimit++
        return
      }
      const v = uint(w[1])
      if (Number.isNaN(v)) throw new Error('vmstat')
      seen.add(name)
      this.#scalar(`node_vmstat_${name}`, v)
    })
  }

  #filefd(s: string, start: number, end: number): void {
    const w = words(s, start, end, this.#words)
    const allocated = uint(w[0])
    const maximum = uint(w[2])
    if (Number.isNaN(allocated) || Number.isNaN(maximum)) throw new Error('filefd')
    this.#scalar('node_filefd_allocated', allocated)
    this.#scalar('node_filefd_maximum', maximum)
  }

  #psi(s: string, start: number, end: number, res: 'cpu' | 'io' | 'memory'): void {
    let some = Number.NaN
    let full = Number.NaN
    eachLine(s, start, end, (a, b) => {
      const line = s.slice(a, b)
      const m = /^(some|full) .*total=([0-9]{1,20})\s*$/.exec(line)
      if (m === null) throw new Error('psi')
      // Microseconds to seconds, as node_exporter divides (twice by 1000: the same float).
      const v = Number(m[2]) / 1000 / 1000
      if (m[1] === 'some') some = v
      else full = v
    })
    if (Number.isNaN(some)) throw new Error('psi')
    if (res === 'cpu') {
      this.#scalar('node_pressure_cpu_waiting_seconds_total', some)
      return
    }
    if (Number.isNaN(full)) throw new Error('psi')
    this.#scalar(`node_pressure_${res}_waiting_seconds_total`, some)
    this.#scalar(`node_pressure_${res}_stalled_seconds_total`, full)
  }

  #time(s: string, start: number, end: number): void {
    const v = udec(s.slice(start, end).trim())
    if (Number.isNaN(v)) throw new Error('time')
    this.#scalar('node_time_seconds', v)
  }

  #diskstats(s: string, start: number, end: number): void {
    const inst = this.#inst
    const cols: string[] = DISK_COLUMNS.map(() => '')
    let info = ''
    let fsInfo = ''
    let dmInfo = ''
    const ata = ['', '', '']
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
      seen.add(name)
      const d = escapeLabelValue(name)
      const l = `{${inst},device="${d}"} `
      const n = Math.min(w.length - 3, DISK_COLUMNS.length)
      for (let k = 0; k < n; k++) {
        const v = uint(w[k + 3])
        if (Number.isNaN(v)) throw new Error('diskstats')
        const col = DISK_COLUMNS[k]!
        cols[k] += `${col.name}${l}${v * col.scale}\n`
      }
      const u = this.#udev.get(`${major}:${minor}`)
      const p = (key: string): string => escapeLabelValue(u?.get(key) ?? '')
      info +=
        `node_disk_info{${inst},device="${d}",major="${major}",minor="${minor}",path="${p('ID_PATH')}",` +
        `wwn="${p('ID_WWN')}",model="${p('ID_MODEL')}",serial="${p('ID_SERIAL_SHORT')}",revision="${p('ID_REVISION')}"} 1\n`
      if (u === undefined) return
      if (p('ID_FS_TYPE') !== '') {
        fsInfo +=
          `node_disk_filesystem_info{${inst},device="${d}",type="${p('ID_FS_TYPE')}",usage="${p('ID_FS_USAGE')}",` +
          `uuid="${p('ID_FS_UUID')}",version="${p('ID_FS_VERSION')}"} 1\n`
      }
      if (p('DM_NAME') !== '') {
        dmInfo +=
          `node_disk_device_mapper_info{${inst},device="${d}",name="${p('DM_NAME')}",uuid="${p('DM_UUID')}",` +
          `vg_name="${p('DM_VG_NAME')}",lv_name="${p('DM_LV_NAME')}",lv_layer="${p('DM_LV_LAYER')}"} 1\n`
      }
      if (p('ID_ATA') !== '') {
        const keys = ['ID_ATA_WRITE_CACHE', 'ID_ATA_WRITE_CACHE_ENABLED', 'ID_ATA_ROTATION_RATE_RPM']
        for (let k = 0; k < 3; k++) {
          const v = udec(u.get(keys[k]!))
          if (!Number.isNaN(v)) ata[k] += `${ATA_FAMILIES[k]}${l}${v}\n`
        }
      }
    })
    for (let k = 0; k < DISK_COLUMNS.length; k++) this.#out(DISK_COLUMNS[k]!.name, cols[k]!)
    this.#out('node_disk_info', info)
    this.#out('node_disk_filesystem_info', fsInfo)
    this.#out('node_disk_device_mapper_info', dmInfo)
    for (let k = 0; k < 3; k++) this.#out(ATA_FAMILIES[k]!, ata[k]!)
  }

  /** The slow sections: their series replace the kept ones (each part that does not parse is left out). */
  #slowSections(s: string, at: Int32Array): void {
    const slow: Array<[string, string]> = []
    const part = (k: number, fn: (a: number, b: number) => void): void => {
      const a = at[2 * k]!
      if (a < 0) return
      const mark = slow.length
      try {
        fn(a, at[2 * k + 1]!)
      } catch {
        slow.length = mark
        this.badSections++
      }
    }
    const inst = this.#inst
    part(S_MOUNTS, (a, b) => {
      // Without a statfs section the loop could not stat (no statfs call, no `stat -f`): no filesystem families.
      const sa = at[2 * S_STATFS]!
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
      const out = FILESYSTEM_FAMILIES.map(() => '')
      const seen = new Set<string>()
      eachLine(s, a, b, (x, y) => {
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
        const l = `{${inst},device="${escapeLabelValue(device)}",fstype="${escapeLabelValue(fstype)}",mountpoint="${escapeLabelValue(mount)}"} `
        const st = stats.get(mount)
        out[0] += `node_filesystem_device_error${l}${st === undefined ? 1 : 0}\n`
        if (st === undefined) return
        const bsize = uint(st[0])
        out[1] += `node_filesystem_size_bytes${l}${uint(st[1]) * bsize}\n`
        out[2] += `node_filesystem_free_bytes${l}${uint(st[2]) * bsize}\n`
        out[3] += `node_filesystem_avail_bytes${l}${uint(st[3]) * bsize}\n`
        out[4] += `node_filesystem_files${l}${st[4]}\n`
        out[5] += `node_filesystem_files_free${l}${st[5]}\n`
        out[6] += `node_filesystem_readonly${l}${w[3]!.split(',').includes('ro') ? 1 : 0}\n`
      })
      for (let k = 0; k < FILESYSTEM_FAMILIES.length; k++)
        if (out[k] !== '') slow.push([FILESYSTEM_FAMILIES[k]!, out[k]!])
    })
    part(S_UNAME, (a, b) => {
      const lines = s.slice(a, b).split('\n')
      if (lines.length < 6) throw new Error('uname')
      const [sysname, nodename, release, version, machine, domainname] = lines.map(escapeLabelValue)
      slow.push([
        'node_uname_info',
        `node_uname_info{${inst},domainname="${domainname}",machine="${machine}",nodename="${nodename}",` +
          `release="${release}",sysname="${sysname}",version="${version}"} 1\n`,
      ])
    })
    part(S_OSRELEASE, (a, b) => {
      const env = parseOsRelease(s.slice(a, b))
      const v = (k: string): string => escapeLabelValue(env.get(k) ?? '')
      slow.push([
        'node_os_info',
        `node_os_info{${inst},build_id="${v('BUILD_ID')}",id="${v('ID')}",id_like="${v('ID_LIKE')}",` +
          `image_id="${v('IMAGE_ID')}",image_version="${v('IMAGE_VERSION')}",name="${v('NAME')}",` +
          `pretty_name="${v('PRETTY_NAME')}",variant="${v('VARIANT')}",variant_id="${v('VARIANT_ID')}",` +
          `version="${v('VERSION')}",version_codename="${v('VERSION_CODENAME')}",version_id="${v('VERSION_ID')}"} 1\n`,
      ])
      const mm = VERSION_RE.exec(env.get('VERSION_ID') ?? '')
      const version = mm === null ? 0 : Number.parseFloat(mm[0])
      if (version > 0) {
        slow.push([
          'node_os_version',
          `node_os_version{${inst},id="${v('ID')}",id_like="${v('ID_LIKE')}",name="${v('NAME')}"} ${version}\n`,
        ])
      }
    })
    const udev = new Map<string, UdevProps>()
    part(S_UDEV, (a, b) => {
      eachLine(s, a, b, (x, y) => {
        const line = s.slice(x, y)
        const m = /^([0-9]{1,10}:[0-9]{1,10}) ([A-Z_]{1,64})=(.*)$/.exec(line)
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
    this.#slow = slow
  }
}

const ATA_FAMILIES = [
  'node_disk_ata_write_cache',
  'node_disk_ata_write_cache_enabled',
  'node_disk_ata_rotation_rate_rpm',
]
