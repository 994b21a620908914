import { NODE_SLOW_SECTIONS, NODE_TICK_SECTIONS, type NodeSectionName } from '../collection/node-families.js'
import type { ProcFault } from './types.js'

/**
 * A simulated Linux host's /proc: deterministic per seed, with counters that only grow with time and a CPU
 * load that drifts (a slow sine plus noise), so successive collections show realistic, changing numbers.
 */

/** mulberry32: a small, fast, seeded PRNG (uniform in [0, 1)). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Mix a fleet seed and a host index into one 32-bit seed. */
export function hostSeed(seed: number, index: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0
  h = Math.imul(h ^ index, 0x85ebca6b) >>> 0
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0
  return (h ^ (h >>> 16)) >>> 0
}

const HZ = 100
/** Fields of a `cpu` line: user nice system idle iowait irq softirq steal guest guest_nice. */
const CPU_FIELDS = 10
const PROCS = [
  'systemd',
  'sshd',
  'nginx',
  'postgres',
  'java',
  'node',
  'python3',
  'redis-server',
  'dockerd',
  'kworker/0:1',
]
const USERS = ['root', 'www-data', 'postgres', 'app', 'redis', 'nobody']

/** The /proc sources the simulator serves, by section name. */
export type SectionName = 'loadavg' | 'meminfo' | 'stat' | 'uptime' | 'netdev' | 'df' | 'ps' | NodeSectionName

/** The node sections of a node request, without and with the slow ones. */
export const NODE_SECTIONS: readonly NodeSectionName[] = NODE_TICK_SECTIONS
export const SLOW_SECTIONS: readonly NodeSectionName[] = NODE_SLOW_SECTIONS
const NODE_SECTION_SET = new Set<string>([...NODE_SECTIONS, ...SLOW_SECTIONS])

/** What a simulated host is beyond its seed: its name (uname) and how many extra mounts and disks it has. */
export interface ProcShape {
  host?: string
  /** tmpfs mounts added to the usual ones (a Kubernetes node has hundreds). Default 0. */
  extraMounts?: number
  /** NVMe disks added to the usual ones. Default 0. */
  extraDisks?: number
}

interface SimDisk {
  name: string
  major: number
  minor: number
  /** Per-second rates of the 17 diskstats counters (0 for io_now). */
  rates: Float64Array
}

interface SimMount {
  device: string
  mount: string
  fstype: string
  options: string
  sizeKb: number
}

export class ProcModel {
  readonly cpus: number
  readonly memTotalKb: number
  readonly swapTotalKb: number
  readonly #rand: () => number
  readonly #bootMs: number
  readonly #baseLoad: number
  readonly #amp: number
  readonly #periodS: number
  readonly #phase: number
  readonly #memBase: number
  readonly #rxRate: number
  readonly #diskKb: number
  readonly #diskUsed: number
  /** Per-CPU counters, in jiffies (floats; printed floored). */
  readonly #cpu: Float64Array
  readonly #skew: Float64Array
  #lastMs: number
  #ctxt: number
  #forks: number
  #noise = 0
  #rx: number
  #tx: number
  #loRx: number
  readonly #host: string
  readonly #psi: boolean
  readonly #disks: SimDisk[] = []
  readonly #mounts: SimMount[] = []
  readonly #vmRates: Float64Array
  readonly #psiRates: Float64Array
  readonly #filesMax: number

  constructor(seed: number, nowMs: number, shape: ProcShape = {}) {
    const r = seededRandom(seed)
    this.#rand = r
    // 2..64 CPUs, weighted towards small machines as real fleets are.
    this.cpus = [2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 24, 32, 48, 64][Math.floor(r() * 14)] ?? 4
    const gbPerCpu = [1, 2, 4, 4, 8][Math.floor(r() * 5)] ?? 4
    this.memTotalKb = Math.round(this.cpus * gbPerCpu * 1024 * 1024 * (0.96 + r() * 0.02))
    this.swapTotalKb = r() < 0.3 ? 0 : Math.round(Math.min(this.memTotalKb / 2, 8 * 1024 * 1024))
    const uptimeS = 600 + r() * 120 * 86_400
    this.#bootMs = nowMs - uptimeS * 1000
    this.#baseLoad = 0.03 + r() * 0.6
    this.#amp = r() * 0.25
    this.#periodS = 60 + r() * 540
    this.#phase = r() * Math.PI * 2
    this.#memBase = 0.2 + r() * 0.55
    this.#rxRate = 1e4 * 10 ** (r() * 3)
    this.#diskKb = Math.round((20 + r() * 480) * 1024 * 1024)
    this.#diskUsed = 0.1 + r() * 0.75
    this.#skew = new Float64Array(this.cpus)
    for (let i = 0; i < this.cpus; i++) this.#skew[i] = 0.6 + r() * 0.8
    this.#cpu = new Float64Array(this.cpus * CPU_FIELDS)
    // As if the host had run at its base load since boot.
    this.#accrue(uptimeS, this.#baseLoad)
    this.#lastMs = nowMs
    this.#ctxt = Math.round(uptimeS * this.cpus * (800 + r() * 4000))
    this.#forks = Math.round(uptimeS * (0.5 + r() * 5))
    this.#rx = Math.round(uptimeS * this.#rxRate * 0.6)
    this.#tx = Math.round(this.#rx * (0.3 + r() * 1.2))
    this.#loRx = Math.round(uptimeS * (100 + r() * 5000))
    // The node_exporter sources draw from their own sequence, so the table's figures stay what they were.
    const n = seededRandom(seed ^ 0x5bd1e995)
    this.#host = shape.host ?? 'sim'
    this.#psi = n() < 0.8
    this.#filesMax = 1_000_000 + Math.floor(n() * 8_000_000)
    this.#vmRates = Float64Array.from([40, 60, 0, 0, 2000, 0.05, 0], (x) => x * (0.2 + n() * 2))
    this.#psiRates = Float64Array.from([20_000, 5_000, 3_000, 500, 200], (x) => x * n())
    const disk = (name: string, major: number, minor: number): void => {
      const rates = new Float64Array(17)
      for (let k = 0; k < 17; k++) rates[k] = k === 8 ? 0 : (k === 2 || k === 6 ? 40_000 : 50) * n()
      this.#disks.push({ name, major, minor, rates })
    }
    disk('vda', 254, 0)
    disk('vda1', 254, 1)
    if (n() < 0.5) disk('vdb', 254, 16)
    for (let i = 0; i < (shape.extraDisks ?? 0); i++) disk(`nvme${i}n1`, 259, i)
    disk('loop0', 7, 0)
    const m = (device: string, mount: string, fstype: string, sizeKb: number, options = 'rw,relatime'): void => {
      this.#mounts.push({ device, mount, fstype, options, sizeKb })
    }
    m('sysfs', '/sys', 'sysfs', 0, 'rw,nosuid,nodev,noexec,relatime')
    m('proc', '/proc', 'proc', 0, 'rw,nosuid,nodev,noexec,relatime')
    m('udev', '/dev', 'devtmpfs', 0, 'rw,nosuid,relatime')
    m('tmpfs', '/run', 'tmpfs', Math.round(this.memTotalKb / 10), 'rw,nosuid,nodev,noexec,relatime')
    m('/dev/vda1', '/', 'ext4', this.#diskKb, 'rw,relatime,errors=remount-ro')
    m('tmpfs', '/dev/shm', 'tmpfs', Math.round(this.memTotalKb / 2), 'rw,nosuid,nodev')
    m('/dev/vda15', '/boot/efi', 'vfat', 106_858)
    if (n() < 0.3) m('/dev/vdb', '/srv/data\\040set', 'xfs', this.#diskKb * 4, 'ro,relatime')
    for (let i = 0; i < (shape.extraMounts ?? 0); i++) {
      m('tmpfs', `/var/lib/kubelet/pods/${i}/volumes/kubernetes.io~projected/kube-api-access`, 'tmpfs', 16_384)
    }
  }

  /** Load (0..1) at a time, seconds since boot. */
  #load(tS: number): number {
    const u = this.#baseLoad + this.#amp * Math.sin((2 * Math.PI * tS) / this.#periodS + this.#phase) + this.#noise
    return Math.min(0.98, Math.max(0.01, u))
  }

  #accrue(dtS: number, load: number): void {
    const jiffies = dtS * HZ
    for (let c = 0; c < this.cpus; c++) {
      const busy = Math.min(0.99, load * (this.#skew[c] ?? 1))
      const b = jiffies * busy
      const o = c * CPU_FIELDS
      const cpu = this.#cpu
      cpu[o] = (cpu[o] ?? 0) + b * 0.7 // user
      cpu[o + 1] = (cpu[o + 1] ?? 0) + b * 0.02 // nice
      cpu[o + 2] = (cpu[o + 2] ?? 0) + b * 0.2 // system
      cpu[o + 3] = (cpu[o + 3] ?? 0) + jiffies * (1 - busy) * 0.98 // idle
      cpu[o + 4] = (cpu[o + 4] ?? 0) + jiffies * (1 - busy) * 0.02 // iowait
      cpu[o + 5] = (cpu[o + 5] ?? 0) + b * 0.01 // irq
      cpu[o + 6] = (cpu[o + 6] ?? 0) + b * 0.05 // softirq
      cpu[o + 7] = (cpu[o + 7] ?? 0) + b * 0.02 // steal
    }
  }

  /** Move the counters forward to `nowMs` (never backwards). */
  advance(nowMs: number): void {
    const dtS = (nowMs - this.#lastMs) / 1000
    if (dtS <= 0) return
    this.#lastMs = nowMs
    this.#noise = (this.#rand() - 0.5) * 0.1
    const load = this.#load(this.#uptimeS())
    this.#accrue(dtS, load)
    this.#ctxt += Math.round(dtS * this.cpus * (500 + 5000 * load))
    this.#forks += Math.round(dtS * (1 + 20 * load * this.#rand()))
    const rx = dtS * this.#rxRate * (0.5 + load)
    this.#rx += Math.round(rx)
    this.#tx += Math.round(rx * 0.8)
    this.#loRx += Math.round(dtS * 2000 * this.#rand())
  }

  #uptimeS(): number {
    return (this.#lastMs - this.#bootMs) / 1000
  }

  loadavg(): string {
    const t = this.#uptimeS()
    const l1 = this.#load(t) * this.cpus * 1.1
    const l5 = this.#load(t - 150) * this.cpus
    const l15 = this.#load(t - 450) * this.cpus * 0.95
    const total = 150 + this.cpus * 8 + (this.#forks % 37)
    const running = 1 + Math.min(total - 1, Math.floor(l1))
    return `${l1.toFixed(2)} ${l5.toFixed(2)} ${l15.toFixed(2)} ${running}/${total} ${100 + (this.#forks % 4_000_000)}\n`
  }

  #mem(): { free: number; buffers: number; cached: number; available: number; swapFree: number; shmem: number } {
    const t = this.#uptimeS()
    const used = Math.min(0.95, this.#memBase + 0.05 * Math.sin(t / 900 + this.#phase) + this.#noise * 0.2)
    const total = this.memTotalKb
    const cached = Math.round(total * (1 - used) * 0.55)
    const buffers = Math.round(total * 0.02)
    const free = Math.max(0, Math.round(total * (1 - used)) - cached - buffers)
    const shmem = Math.round(total * 0.01)
    const available = Math.min(total, free + buffers + Math.round(cached * 0.85))
    const swapFree = Math.round(this.swapTotalKb * (0.9 + 0.1 * Math.cos(t / 1200)))
    return { free, buffers, cached, available, swapFree, shmem }
  }

  meminfo(): string {
    const m = this.#mem()
    const total = this.memTotalKb
    const rows: Array<[string, number]> = [
      ['MemTotal', total],
      ['MemFree', m.free],
      ['MemAvailable', m.available],
      ['Buffers', m.buffers],
      ['Cached', m.cached],
      ['SwapCached', 0],
      ['Active', Math.round((total - m.free) * 0.6)],
      ['Inactive', Math.round((total - m.free) * 0.3)],
      ['SwapTotal', this.swapTotalKb],
      ['SwapFree', m.swapFree],
      ['Dirty', 128 + (this.#forks % 4096)],
      ['Shmem', m.shmem],
      ['SReclaimable', Math.round(total * 0.015)],
      ['SUnreclaim', Math.round(total * 0.005)],
    ]
    return rows.map(([k, v]) => meminfoLine(k, v)).join('')
  }

  stat(): string {
    const sum = new Float64Array(CPU_FIELDS)
    const lines: string[] = []
    for (let c = 0; c < this.cpus; c++) {
      const f: number[] = []
      for (let i = 0; i < CPU_FIELDS; i++) {
        const v = Math.floor(this.#cpu[c * CPU_FIELDS + i] ?? 0)
        f.push(v)
        sum[i] = (sum[i] ?? 0) + v
      }
      lines.push(`cpu${c} ${f.join(' ')}`)
    }
    const btime = Math.floor(this.#bootMs / 1000)
    const load = this.#load(this.#uptimeS())
    return (
      `cpu  ${Array.from(sum).join(' ')}\n${lines.join('\n')}\n` +
      `intr ${Math.floor(this.#ctxt * 0.7)} 0 9 0 0\nctxt ${this.#ctxt}\nbtime ${btime}\nprocesses ${this.#forks}\n` +
      `procs_running ${1 + Math.floor(load * this.cpus * 0.5)}\nprocs_blocked 0\n`
    )
  }

  uptime(): string {
    let idle = 0
    for (let c = 0; c < this.cpus; c++) idle += this.#cpu[c * CPU_FIELDS + 3] ?? 0
    return `${this.#uptimeS().toFixed(2)} ${(idle / HZ).toFixed(2)}\n`
  }

  netdev(): string {
    const row = (name: string, rx: number, tx: number): string => {
      const rp = Math.floor(rx / 900)
      const tp = Math.floor(tx / 700)
      return (
        `${name.padStart(6)}: ${String(rx).padStart(8)} ${String(rp).padStart(7)}    0    0    0     0          0` +
        `         0 ${String(tx).padStart(8)} ${String(tp).padStart(7)}    0    0    0     0       0          0\n`
      )
    }
    return (
      'Inter-|   Receive                                                |  Transmit\n' +
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n' +
      row('lo', this.#loRx, this.#loRx) +
      row('eth0', this.#rx, this.#tx)
    )
  }

  /** `df -P /`, or with `all` the whole `df -P` table. */
  df(all = false): string {
    const grow = Math.min(0.99, this.#diskUsed + this.#uptimeS() * 1e-9)
    const line = (fs: string, size: number, pct: number, mount: string): string => {
      const used = Math.round(size * pct)
      const avail = size - used
      const cap = `${Math.ceil((used / size) * 100)}%`
      return `${fs.padEnd(14)} ${String(size).padStart(11)} ${String(used).padStart(9)} ${String(avail).padStart(9)} ${cap.padStart(8)} ${mount}\n`
    }
    let out = 'Filesystem     1024-blocks      Used Available Capacity Mounted on\n'
    out += line('/dev/sda1', this.#diskKb, grow, '/')
    if (all) {
      const tmp = Math.round(this.memTotalKb / 2)
      out += line('tmpfs', tmp, 0.001, '/dev/shm')
      out += line('tmpfs', Math.round(this.memTotalKb / 10), 0.01, '/run')
      out += line('/dev/sda15', 106_858, 0.06, '/boot/efi')
      out += line('/dev/sdb1', this.#diskKb * 4, grow * 0.7, '/var/lib/data')
    }
    return out
  }

  /** `ps -eo pid,user,pcpu,pmem,rss,comm --sort=-pcpu`, header plus 20 rows. */
  ps(): string {
    const load = this.#load(this.#uptimeS())
    const rows: Array<{ pid: number; user: string; cpu: number; mem: number; rss: number; comm: string }> = []
    const r = seededRandom(Math.floor(this.#lastMs / 1000) ^ this.cpus)
    for (let i = 0; i < 20; i++) {
      const mem = r() * 5
      rows.push({
        pid: 1 + Math.floor(r() * 400_000),
        user: USERS[Math.floor(r() * USERS.length)] ?? 'root',
        cpu: (r() * load * 100 * this.cpus) / (i + 1),
        mem,
        rss: Math.round((this.memTotalKb * mem) / 100),
        comm: PROCS[Math.floor(r() * PROCS.length)] ?? 'sh',
      })
    }
    rows.sort((a, b) => b.cpu - a.cpu)
    let out = '    PID USER     %CPU %MEM   RSS COMMAND\n'
    for (const p of rows) {
      out += `${String(p.pid).padStart(7)} ${p.user.padEnd(8)} ${p.cpu.toFixed(1).padStart(4)} ${p.mem.toFixed(1).padStart(4)} ${String(p.rss).padStart(5)} ${p.comm}\n`
    }
    return out
  }

  /** Seconds since boot (the node counters grow with it, so they never go backwards). */
  #t(): number {
    return this.#uptimeS()
  }

  vmstat(): string {
    const t = this.#t()
    const names = ['pgpgin', 'pgpgout', 'pswpin', 'pswpout', 'pgfault', 'pgmajfault', 'oom_kill']
    let out = 'nr_free_pages 123456\nnr_zone_inactive_anon 4567\n'
    for (let k = 0; k < names.length; k++) out += `${names[k]} ${Math.floor(t * this.#vmRates[k]!)}\n`
    return `${out}pgsteal_kswapd 0\nthp_fault_alloc 12\n`
  }

  filefd(): string {
    return `${1000 + (this.#forks % 5000)}\t0\t${this.#filesMax}\n`
  }

  /** /proc/pressure/<res>, or '' where the host has no PSI. */
  psi(res: 'cpu' | 'io' | 'memory'): string {
    if (!this.#psi) return ''
    const t = this.#t()
    const [some, full] = res === 'cpu' ? [0, -1] : res === 'io' ? [1, 2] : [3, 4]
    const line = (kind: string, rate: number): string =>
      `${kind} avg10=0.00 avg60=0.00 avg300=0.00 total=${Math.floor(t * rate)}\n`
    return line('some', this.#psiRates[some]!) + line('full', full < 0 ? 0 : this.#psiRates[full]!)
  }

  diskstats(): string {
    const t = this.#t()
    let out = ''
    for (const d of this.#disks) {
      const v = Array.from(d.rates, (x, k) => (k === 8 ? 0 : Math.floor(t * x)))
      out += `${String(d.major).padStart(4)} ${String(d.minor).padStart(7)} ${d.name} ${v.join(' ')}\n`
    }
    return out
  }

  nohandler(): string {
    return 'eth0 0\n'
  }

  time(): string {
    return `${(this.#lastMs / 1000).toFixed(6)}\n`
  }

  mounts(): string {
    return this.#mounts.map((m) => `${m.device} ${m.mount} ${m.fstype} ${m.options} 0 0\n`).join('')
  }

  /** statfs lines for the mounts node_exporter keeps (the sim's loop applies the same exclusions). */
  statfs(): string {
    let out = ''
    for (const m of this.#mounts) {
      if (m.sizeKb === 0) continue
      const blocks = Math.floor(m.sizeKb / 4)
      const free = Math.floor(blocks * (1 - this.#diskUsed * 0.8))
      const files = Math.floor(m.sizeKb / 16)
      out += `4096 ${blocks} ${free} ${Math.floor(free * 0.95)} ${files} ${Math.floor(files * 0.9)} ${m.mount.replaceAll('\\040', ' ')}\n`
    }
    return out
  }

  uname(): string {
    return `Linux\n${this.#host}\n6.1.0-18-amd64\n#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\nx86_64\n(none)\n`
  }

  osrelease(): string {
    return (
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n' +
      'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
    )
  }

  /** /sys/class/net's attributes, as the loops send them: `<device>\t<operstate>\t<address>\t<broadcast>\t<duplex>\t<ifalias>`. */
  netclass(): string {
    return (
      'lo\tunknown\t00:00:00:00:00:00\t00:00:00:00:00:00\t\t\n' +
      `eth0\tup\t02:00:00:${this.#macTail()}\tff:ff:ff:ff:ff:ff\tfull\tuplink\n`
    )
  }

  /** The clock sources: `<n>\t<current>\t<available…>`. */
  clocksource(): string {
    return '0\ttsc\ttsc hpet acpi_pm \n'
  }

  /** The time zone, as `date +"%Z %z"` prints it. */
  tz(): string {
    return 'UTC +0000\n'
  }

  /** Three bytes of the host's MAC address, from its name. */
  #macTail(): string {
    let h = 0
    for (let i = 0; i < this.#host.length; i++) h = (h * 31 + this.#host.charCodeAt(i)) >>> 0
    return [16, 8, 0].map((k) => ((h >>> k) & 255).toString(16).padStart(2, '0')).join(':')
  }

  udev(): string {
    let out = ''
    for (const d of this.#disks) {
      if (d.major !== 254 || d.minor % 16 !== 0) continue
      const k = `${d.major}:${d.minor}`
      out += `${k} ID_PATH=pci-0000:00:0${4 + d.minor / 16}.0\n${k} ID_SERIAL_SHORT=kay${d.minor}\n`
    }
    return out
  }

  /** One source's content, by section name. */
  section(name: SectionName, dfAll = false): string {
    switch (name) {
      case 'loadavg':
        return this.loadavg()
      case 'meminfo':
        return this.meminfo()
      case 'stat':
        return this.stat()
      case 'uptime':
        return this.uptime()
      case 'netdev':
        return this.netdev()
      case 'df':
        return this.df(dfAll)
      case 'ps':
        return this.ps()
      case 'procnetdev':
        return this.netdev()
      case 'nohandler':
        return this.nohandler()
      case 'vmstat':
        return this.vmstat()
      case 'filefd':
        return this.filefd()
      case 'psi-cpu':
        return this.psi('cpu')
      case 'psi-io':
        return this.psi('io')
      case 'psi-memory':
        return this.psi('memory')
      case 'diskstats':
        return this.diskstats()
      case 'time':
        return this.time()
      case 'mounts':
        return this.mounts()
      case 'statfs':
        return this.statfs()
      case 'uname':
        return this.uname()
      case 'osrelease':
        return this.osrelease()
      case 'udev':
        return this.udev()
      case 'netclass':
        return this.netclass()
      case 'clocksource':
        return this.clocksource()
      case 'tz':
        return this.tz()
    }
  }
}

function meminfoLine(key: string, kb: number): string {
  return `${`${key}:`.padEnd(15)} ${String(kb).padStart(8)} kB\n`
}

/** Random bytes that are not valid text: NULs, high bytes, broken UTF-8. */
export function junkBytes(n: number, rand: () => number = Math.random): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256)
  if (n > 2) {
    b[0] = 0
    b[1] = 0xc3 // a UTF-8 lead byte with no continuation
    b[2] = 0x28
  }
  return b
}

const HUGE_LINE = 300 * 1024

/** Corrupt one section's content per the fault. Sections a fault does not touch pass through. */
function corruptSection(name: SectionName, content: string, fault: ProcFault): string | Buffer {
  switch (fault) {
    case 'none':
      return content
    case 'malformed':
      if (name === 'loadavg') return 'nan nan\n'
      if (name === 'meminfo') return 'MemTotal lots\nMemFree: -- kB\nMemAvailable:\n'
      if (name === 'stat') return 'cpu  12 34 56\ncpu0 x y z\nctxt\n'
      if (name === 'uptime') return 'up a while\n'
      return content
    case 'huge-line':
      if (name === 'meminfo') return `${content}Huge: ${'9'.repeat(HUGE_LINE)} kB\n`
      return content
    case 'binary':
      if (name === 'stat' || name === 'meminfo') return junkBytes(512)
      return content
    case 'absurd':
      if (name === 'loadavg') return '99999999.99 -1.00 1e308 0/0 -5\n'
      if (name === 'meminfo')
        return `${meminfoLine('MemTotal', 0)}${meminfoLine('MemFree', 2 ** 62)}${meminfoLine('MemAvailable', 2 ** 62)}`
      if (name === 'stat') {
        // Counters beyond 2^64 that shrink over time: a delta against the previous sample goes negative.
        const back = (2n ** 70n - BigInt(Date.now())).toString()
        return `cpu  ${back} 0 ${back} 0 0 0 0 0 0 0\ncpu0 ${back} 0 ${back} 0 0 0 0 0 0 0\nctxt -1\nbtime 0\nprocesses 0\n`
      }
      if (name === 'uptime') return '-5.00 -10.00\n'
      return content
  }
}

/**
 * The sections as they go on the wire: `@@kay <name>\n<content>` each, content ending with a newline (the
 * emitter adds one when the source lacks it, as the real loop does).
 */
export function renderSections(
  model: ProcModel,
  names: readonly SectionName[],
  fault: ProcFault,
  dfAll = false,
): Buffer {
  const parts: Buffer[] = []
  for (const name of names) {
    const raw = model.section(name, dfAll)
    // A node section whose source the host lacks is left out, as the loops leave it out.
    if (raw === '' && NODE_SECTION_SET.has(name)) continue
    const content = corruptSection(name, raw, fault)
    parts.push(Buffer.from(`@@kay ${name}\n`))
    const body = typeof content === 'string' ? Buffer.from(content) : content
    parts.push(body)
    if (body.length === 0 || body[body.length - 1] !== 0x0a) parts.push(Buffer.from('\n'))
  }
  return Buffer.concat(parts)
}
