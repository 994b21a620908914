/**
 * NodeSeries on synthetic node sections: names, labels and units as node_exporter gives them, its counter state,
 * what is left out (absent sources, default exclusions), what is kept between slow ticks, and bounds. The loops'
 * real output is compared with node_exporter itself in packages/cli/test/e2e/node-exporter.sshd.test.ts.
 */
import { describe, expect, it } from 'vitest'
import {
  ByteWriter,
  NODE_LIMITS,
  NodeSeries,
  NodeSink,
  nodeFamilyMeta,
  parseOsRelease,
  STATIC_NODE_FAMILIES,
} from '../../src/collection/index.js'

const sec = (name: string, body: string): string => `@@kay ${name}\n${body}${body.endsWith('\n') ? '' : '\n'}`

const STAT = (idle0: number, iowait0: number, cpus = 2): string => {
  let s = 'cpu  100 0 50 1000 10 0 5 0 0 0\n'
  for (let c = 0; c < cpus; c++)
    s += `cpu${c} ${100 + c} 1 50 ${c === 0 ? idle0 : 500} ${c === 0 ? iowait0 : 5} 0 5 2 3 4\n`
  return `${s}intr 123456\nctxt 98765\nbtime 1700000000\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n`
}

const MEMINFO = [
  'MemTotal:        2048000 kB',
  'MemFree:          512000 kB',
  'MemAvailable:    1024000 kB',
  'Active(anon):       1000 kB',
  'HugePages_Total:       0',
  'Hugepagesize:       2048 kB',
].join('\n')

const NETDEV = [
  'Inter-|   Receive                                                |  Transmit',
  ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
  '    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0',
  '  eth0: 1000 10 1 2 3 4 5 6 2000 20 7 8 9 10 11 12',
].join('\n')

const DISKSTATS = [
  ' 254       0 vda 100 2 300 40 50 6 700 80 0 90 100 1 2 3 4 5 6',
  ' 254       1 vda1 1 1 1 1 1 1 1 1 0 1 1 1 1 1 1 1 1',
  '   7       0 loop0 1 1 1 1 1 1 1 1 0 1 1 1 1 1 1 1 1',
  ' 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11',
].join('\n')

const MOUNTS = [
  'proc /proc proc rw,nosuid 0 0',
  'tmpfs /run tmpfs rw 0 0',
  '/dev/vda / ext4 rw,relatime 0 0',
  'overlay /var/lib/x overlay rw 0 0',
  '/dev/vdb /srv/my\\040disk xfs ro,relatime 0 0',
  'nfs:/x /home nfs4 rw 0 0',
  '/dev/vda / ext4 rw,relatime 0 0',
].join('\n')

const STATFS = ['4096 1000 500 400 100 50 /', '4096 2000 1000 900 200 150 /srv/my disk'].join('\n')

function frame(o: { stat?: string; slow?: boolean; psi?: boolean; extra?: string } = {}): string {
  let f =
    sec('loadavg', '0.50 1.25 2.00 3/200 4242') +
    sec('meminfo', MEMINFO) +
    sec('stat', o.stat ?? STAT(500, 5)) +
    sec('uptime', '1000.00 1500.00') +
    sec('procnetdev', NETDEV) +
    sec('nohandler', 'eth0 13\nlo 0') +
    sec('vmstat', 'nr_free_pages 5\npgpgin 11\npgfault 22\npgmajfault 33\noom_kill 0') +
    sec('filefd', '1024\t0\t65536') +
    sec('diskstats', DISKSTATS) +
    sec('time', '1700000123.456789')
  if (o.psi !== false) {
    f += sec('psi-cpu', 'some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000')
    f += sec(
      'psi-io',
      'some avg10=0.00 avg60=0.00 avg300=0.00 total=2000000\nfull avg10=0 avg60=0 avg300=0 total=1000000',
    )
    f += sec('psi-memory', 'some avg10=0 avg60=0 avg300=0 total=0\nfull avg10=0 avg60=0 avg300=0 total=0')
  }
  if (o.slow) {
    f += sec('mounts', MOUNTS) + sec('statfs', STATFS)
    f += sec('uname', 'Linux\nweb01\n6.1.0\n#1 SMP\nx86_64\n(none)')
    f += sec('osrelease', 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"')
    f += sec('udev', '254:0 ID_PATH=pci-0000:00:04.0\n254:0 ID_SERIAL_SHORT=abc\n254:0 ID_FS_TYPE=ext4')
  }
  return f + (o.extra ?? '')
}

/** The series a NodeSeries hands a sink, as a map from `name{labels}` to value. */
function series(ns: NodeSeries): Map<string, number> {
  const sink = new NodeSink()
  ns.writeTo(sink)
  const out = new Map<string, number>()
  const { families, parts } = sink.take()
  for (let i = 0; i < families.length; i++) {
    for (const line of Buffer.from(parts[i]!).toString('utf8').split('\n')) {
      if (line === '') continue
      const sp = line.lastIndexOf(' ')
      const key = line.slice(0, sp)
      expect(key.startsWith(families[i]!), line).toBe(true)
      expect(out.has(key), `duplicate ${key}`).toBe(false)
      out.set(key, Number(line.slice(sp + 1)))
    }
  }
  return out
}

const familiesOf = (s: Map<string, number>): Set<string> => new Set([...s.keys()].map((k) => k.split('{')[0]!))

describe('NodeSeries', () => {
  it('names, labels and units as node_exporter gives them, every series under instance first', () => {
    const ns = new NodeSeries('web"01')
    ns.update(frame({ slow: true }))
    const s = series(ns)
    const I = 'instance="web\\"01"'
    expect(s.get(`node_cpu_seconds_total{${I},cpu="1",mode="idle"}`)).toBe(5)
    expect(s.get(`node_cpu_seconds_total{${I},cpu="0",mode="user"}`)).toBe(1)
    expect(s.get(`node_cpu_guest_seconds_total{${I},cpu="1",mode="nice"}`)).toBe(0.04)
    expect(s.get(`node_intr_total{${I}}`)).toBe(123456)
    expect(s.get(`node_context_switches_total{${I}}`)).toBe(98765)
    expect(s.get(`node_boot_time_seconds{${I}}`)).toBe(1700000000)
    expect(s.get(`node_forks_total{${I}}`)).toBe(4242)
    expect(s.get(`node_procs_running{${I}}`)).toBe(3)
    expect(s.get(`node_procs_blocked{${I}}`)).toBe(1)
    expect(s.get(`node_load5{${I}}`)).toBe(1.25)
    expect(s.get(`node_memory_MemTotal_bytes{${I}}`)).toBe(2048000 * 1024)
    expect(s.get(`node_memory_Active_anon_bytes{${I}}`)).toBe(1000 * 1024)
    expect(s.get(`node_memory_HugePages_Total{${I}}`)).toBe(0)
    expect(s.get(`node_network_receive_drop_total{${I},device="eth0"}`)).toBe(2)
    expect(s.get(`node_network_transmit_carrier_total{${I},device="eth0"}`)).toBe(11)
    expect(s.get(`node_network_receive_nohandler_total{${I},device="eth0"}`)).toBe(13)
    expect(s.get(`node_vmstat_pgmajfault{${I}}`)).toBe(33)
    expect(s.has(`node_vmstat_nr_free_pages{${I}}`)).toBe(false)
    expect(s.get(`node_filefd_allocated{${I}}`)).toBe(1024)
    expect(s.get(`node_filefd_maximum{${I}}`)).toBe(65536)
    expect(s.get(`node_pressure_cpu_waiting_seconds_total{${I}}`)).toBe(1.5)
    expect(s.get(`node_pressure_io_stalled_seconds_total{${I}}`)).toBe(1)
    expect(s.get(`node_time_seconds{${I}}`)).toBe(1700000123.456789)
    expect(s.get(`node_disk_read_bytes_total{${I},device="vda"}`)).toBe(300 * 512)
    expect(s.get(`node_disk_read_time_seconds_total{${I},device="vda"}`)).toBe(40 * 0.001)
    expect(s.get(`node_disk_io_now{${I},device="vda"}`)).toBe(0)
    expect(s.get(`node_disk_flush_requests_time_seconds_total{${I},device="vda"}`)).toBe(6 * 0.001)
    // A kernel with 11 columns has the first 11 families only.
    expect(s.get(`node_disk_io_time_weighted_seconds_total{${I},device="nvme0n1"}`)).toBe(11 * 0.001)
    expect(s.has(`node_disk_discards_completed_total{${I},device="nvme0n1"}`)).toBe(false)
    expect(
      s.get(
        `node_disk_info{${I},device="vda",major="254",minor="0",path="pci-0000:00:04.0",wwn="",model="",serial="abc",revision=""}`,
      ),
    ).toBe(1)
    expect(s.get(`node_disk_filesystem_info{${I},device="vda",type="ext4",usage="",uuid="",version=""}`)).toBe(1)
    expect(
      s.get(
        `node_uname_info{${I},domainname="(none)",machine="x86_64",nodename="web01",release="6.1.0",sysname="Linux",version="#1 SMP"}`,
      ),
    ).toBe(1)
    expect(s.get(`node_os_version{${I},id="debian",id_like="",name="Debian GNU/Linux"}`)).toBe(12)
    // Every family written is one kay can export, with the type node_exporter gives it.
    for (const f of familiesOf(s)) expect(nodeFamilyMeta(f), f).toBeDefined()
    expect(ns.badSections).toBe(0)
  })

  it('leaves out what node_exporter leaves out by default: lo, partitions and loop devices, pseudo and excluded mounts', () => {
    const ns = new NodeSeries('h')
    ns.update(frame({ slow: true }))
    const keys = [...series(ns).keys()]
    expect(keys.some((k) => k.includes('device="lo"'))).toBe(false)
    expect(keys.some((k) => k.includes('device="vda1"') || k.includes('device="loop0"'))).toBe(false)
    const mounts = new Set(
      keys.filter((k) => k.startsWith('node_filesystem_')).map((k) => /mountpoint="([^"]*)"/.exec(k)![1]),
    )
    // /proc and /run are excluded mount points, overlay an excluded type; / appears once although mounted twice.
    expect([...mounts].sort()).toEqual(['/', '/home', '/srv/my disk'])
  })

  it('reports a mount without a statfs line as device_error 1 and nothing else; ro mounts as readonly 1', () => {
    const ns = new NodeSeries('h')
    ns.update(frame({ slow: true }))
    const s = series(ns)
    const home = 'instance="h",device="nfs:/x",fstype="nfs4",mountpoint="/home"'
    expect(s.get(`node_filesystem_device_error{${home}}`)).toBe(1)
    expect(s.has(`node_filesystem_size_bytes{${home}}`)).toBe(false)
    const srv = 'instance="h",device="/dev/vdb",fstype="xfs",mountpoint="/srv/my disk"'
    expect(s.get(`node_filesystem_readonly{${srv}}`)).toBe(1)
    expect(s.get(`node_filesystem_size_bytes{${srv}}`)).toBe(2000 * 4096)
    expect(s.get(`node_filesystem_avail_bytes{${srv}}`)).toBe(900 * 4096)
    expect(s.get(`node_filesystem_files_free{${srv}}`)).toBe(150)
    expect(s.get(`node_filesystem_device_error{${srv}}`)).toBe(0)
  })

  it('keeps CPU counters from going backwards, and restarts a CPU whose idle time falls back by 3 s or more', () => {
    const ns = new NodeSeries('h')
    const idle0 = (s: Map<string, number>) => s.get('node_cpu_seconds_total{instance="h",cpu="0",mode="idle"}')
    const iowait0 = (s: Map<string, number>) => s.get('node_cpu_seconds_total{instance="h",cpu="0",mode="iowait"}')
    const tick = (idle: number, iowait: number) => {
      ns.update(frame({ stat: STAT(idle, iowait) }))
      return series(ns)
    }
    expect(iowait0(tick(1000, 50))).toBe(0.5)
    // iowait falls back (NO_HZ kernels): the counter stays where it was.
    let s = tick(1100, 40)
    expect(iowait0(s)).toBe(0.5)
    expect(idle0(s)).toBe(11)
    // idle falls back by 2 s: kept.
    expect(idle0(tick(900, 40))).toBe(11)
    // By 3 s or more (a hot-plugged CPU): that CPU's counters restart from what it reports now.
    s = tick(700, 40)
    expect(idle0(s)).toBe(7)
    expect(iowait0(s)).toBe(0.4)
  })

  it('starts the counter state afresh when the set of CPUs changes', () => {
    const ns = new NodeSeries('h')
    ns.update(frame({ stat: STAT(1000, 50, 2) }))
    ns.update(frame({ stat: STAT(1000, 40, 3) }))
    const s = series(ns)
    expect(s.get('node_cpu_seconds_total{instance="h",cpu="0",mode="iowait"}')).toBe(0.4)
    expect(s.has('node_cpu_seconds_total{instance="h",cpu="2",mode="idle"}')).toBe(true)
  })

  it('leaves a family out when its source is absent, never 0: no PSI, no slow sections, cpu PSI without full', () => {
    const ns = new NodeSeries('h')
    ns.update(frame({ psi: false }))
    const f = familiesOf(series(ns))
    expect([...f].some((n) => n.startsWith('node_pressure_'))).toBe(false)
    expect([...f].some((n) => n.startsWith('node_filesystem_') || n.startsWith('node_uname'))).toBe(false)
    ns.update(frame())
    const g = familiesOf(series(ns))
    expect(g.has('node_pressure_cpu_waiting_seconds_total')).toBe(true)
    expect(g.has('node_pressure_memory_stalled_seconds_total')).toBe(true)
  })

  it('writes the slow families on every tick until the next slow tick, and drops them on reset', () => {
    const ns = new NodeSeries('h')
    expect(ns.hasSlow).toBe(false)
    ns.update(frame({ slow: true }))
    expect(ns.hasSlow).toBe(true)
    ns.update(frame())
    const s = series(ns)
    const f = familiesOf(s)
    for (const n of ['node_filesystem_size_bytes', 'node_uname_info', 'node_os_info']) expect(f.has(n), n).toBe(true)
    // Disk info keeps the udev labels learnt on the slow tick.
    expect([...s.keys()].some((k) => k.includes('serial="abc"'))).toBe(true)
    // One update is written once.
    expect(series(ns).size).toBe(0)
    ns.dropSlow()
    ns.update(frame())
    expect(familiesOf(series(ns)).has('node_filesystem_size_bytes')).toBe(false)
    ns.update(frame({ slow: true }))
    ns.reset()
    expect(ns.hasSlow).toBe(false)
    expect(series(ns).size).toBe(0)
  })

  it('skips a section that does not parse (counted) and keeps the others', () => {
    const ns = new NodeSeries('h')
    const bad = frame().replace('1024\t0\t65536', 'lots of fds').replace('total=1500000', 'total=x')
    ns.update(bad)
    const f = familiesOf(series(ns))
    expect(f.has('node_filefd_allocated')).toBe(false)
    expect(f.has('node_pressure_cpu_waiting_seconds_total')).toBe(false)
    expect(f.has('node_memory_MemTotal_bytes')).toBe(true)
    expect(ns.badSections).toBe(2)
    // Garbage does not throw out of update.
    ns.update('@@kay stat\n\u0000\u00ff\ncpu0 x\n@@kay meminfo\nMemTotal: x kB\n@@kay diskstats\nnope\n')
    expect(series(ns).size).toBe(0)
    expect(ns.badSections).toBe(5)
    ns.update(frame())
    ns.clear()
    expect(series(ns).size).toBe(0)
  })

  it('gives node_network_up and node_network_info per /sys/class/net device, the clock sources and the time zone', () => {
    const ns = new NodeSeries('h')
    ns.update(
      sec('uname', 'Linux\nh\n6.1\n#1\nx86_64\n(none)\n') +
        sec(
          'netclass',
          'lo\tunknown\t00:00:00:00:00:00\t00:00:00:00:00:00\t\t\neth0\tup\t02:fc:00:00:00:01\tff:ff:ff:ff:ff:ff\tfull\tmy uplink\n',
        ) +
        sec('clocksource', '0\ttsc\ttsc kvm-clock \n') +
        sec('tz', 'NST -0330'),
    )
    const got = series(ns)
    expect(got.get('node_network_up{instance="h",device="lo"}')).toBe(0)
    expect(got.get('node_network_up{instance="h",device="eth0"}')).toBe(1)
    expect(
      got.get(
        'node_network_info{instance="h",address="02:fc:00:00:00:01",broadcast="ff:ff:ff:ff:ff:ff",device="eth0",duplex="full",ifalias="my uplink",operstate="up"}',
      ),
    ).toBe(1)
    expect(
      got.has(
        'node_network_info{instance="h",address="00:00:00:00:00:00",broadcast="00:00:00:00:00:00",device="lo",duplex="",ifalias="",operstate="unknown"}',
      ),
    ).toBe(true)
    expect(got.get('node_time_clocksource_current_info{instance="h",clocksource="tsc",device="0"}')).toBe(1)
    expect(got.get('node_time_clocksource_available_info{instance="h",clocksource="kvm-clock",device="0"}')).toBe(1)
    expect(got.get('node_time_zone_offset_seconds{instance="h",time_zone="NST"}')).toBe(-12600)
    // A malformed line or zone leaves its section's families out, counted.
    ns.update(sec('uname', 'Linux\nh\n6.1\n#1\nx86_64\n(none)\n') + sec('netclass', 'eth0 up') + sec('tz', 'UTC'))
    const f = familiesOf(series(ns))
    expect(f.has('node_network_up')).toBe(false)
    expect(f.has('node_time_zone_offset_seconds')).toBe(false)
    expect(ns.badSections).toBe(2)
  })

  it('bounds what one host can make: meminfo fields past the limit are ignored and counted', () => {
    const ns = new NodeSeries('h')
    const many = Array.from({ length: NODE_LIMITS.fields + 10 }, (_, i) => `Field${i}: ${i} kB`).join('\n')
    ns.update(sec('meminfo', many))
    expect(series(ns).size).toBe(NODE_LIMITS.fields)
    expect(ns.overLimit).toBe(10)
  })

  it('escapes label values (backslash, quote, newline) as the exposition format wants', () => {
    const ns = new NodeSeries('h')
    ns.update(sec('diskstats', ' 8 0 we"ird\\dev 1 2 3 4 5 6 7 8 9 10 11'))
    expect([...series(ns).keys()][0]).toBe('node_disk_reads_completed_total{instance="h",device="we\\"ird\\\\dev"}')
  })
})

describe('NodeSink', () => {
  const text = (t: { families: string[]; parts: Uint8Array[] }) => ({
    families: t.families,
    texts: t.parts.map((p) => Buffer.from(p).toString('utf8')),
  })

  it('groups series by family in first-use order, forgets families nobody wrote, refuses families past its limit', () => {
    const sink = new NodeSink(4)
    sink.family('node_load1').ascii('a\n')
    sink.family('node_load5').ascii('b\n')
    sink.family('node_load1').ascii('c\n')
    expect(text(sink.take())).toEqual({ families: ['node_load1', 'node_load5'], texts: ['a\nc\n', 'b\n'] })
    expect(text(sink.take())).toEqual({ families: [], texts: [] })
    for (let i = 0; i < 6; i++) sink.family(`node_memory_F${i}`).ascii('x\n')
    expect(sink.take().families).toEqual(['node_memory_F0', 'node_memory_F1', 'node_memory_F2', 'node_memory_F3'])
    expect(sink.droppedFamilies).toBe(2)
    // The families of the last tick were forgotten when nobody wrote them: others fit again.
    sink.take()
    sink.family('node_load15').ascii('d\n')
    expect(text(sink.take())).toEqual({ families: ['node_load15'], texts: ['d\n'] })
  })

  it('undoes what a section wrote on rollback, and only that', () => {
    const sink = new NodeSink()
    sink.begin()
    sink.family('node_load1').ascii('a\n')
    sink.begin()
    sink.family('node_load1').ascii('b\n')
    sink.family('node_load5').ascii('c\n')
    sink.rollback()
    expect(text(sink.take())).toEqual({ families: ['node_load1'], texts: ['a\n'] })
  })
})

describe('ByteWriter', () => {
  it('writes integers, scaled decimals and escaped UTF-8 label values', () => {
    const w = new ByteWriter(2)
    const out: string[] = []
    const put = (f: () => void) => {
      w.len = 0
      f()
      out.push(Buffer.from(w.bytes).toString('utf8'))
    }
    put(() => w.uint(0))
    put(() => w.uint(9007199254740991))
    put(() => w.fixed(74721, 2))
    put(() => w.fixed(5, 2))
    put(() => w.fixed(100, 2))
    put(() => w.fixed(36601, 3))
    put(() => w.fixed(0, 6))
    put(() => w.fixed(1500000, 6))
    put(() => w.label('a"b\\c\nd'))
    put(() => w.label('/mnt/é "x"'))
    expect(out).toEqual([
      '0',
      '9007199254740991',
      '747.21',
      '0.05',
      '1',
      '36.601',
      '0',
      '1.5',
      'a\\"b\\\\c\\nd',
      '/mnt/é \\"x\\"',
    ])
  })
})

describe('nodeFamilyMeta', () => {
  it('knows every static family and derives meminfo and vmstat ones; refuses anything else', () => {
    for (const f of STATIC_NODE_FAMILIES) expect(nodeFamilyMeta(f), f).toBeDefined()
    expect(nodeFamilyMeta('node_memory_MemTotal_bytes')).toEqual({
      type: 'gauge',
      help: 'Memory information field MemTotal_bytes.',
    })
    expect(nodeFamilyMeta('node_vmstat_pgfault')).toEqual({
      type: 'untyped',
      help: '/proc/vmstat information field pgfault.',
    })
    expect(nodeFamilyMeta('node_cpu_seconds_total')?.type).toBe('counter')
    for (const bad of [
      'kay_host_up',
      'node_memory_',
      'node_vmstat_a-b',
      `node_memory_${'x'.repeat(200)}`,
      'node_evil',
    ]) {
      expect(nodeFamilyMeta(bad), bad).toBeUndefined()
    }
  })
})

describe('parseOsRelease', () => {
  it('reads quoted, single-quoted and bare values, escapes and comments as node_exporter does', () => {
    const env = parseOsRelease(
      '# comment\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu \\"Jammy\\" 22.04"\n' +
        "VARIANT='Server Edition'\nexport BUILD_ID=rolling\nbad line\n",
    )
    expect(env.get('NAME')).toBe('Ubuntu')
    expect(env.get('VERSION_ID')).toBe('22.04')
    expect(env.get('ID')).toBe('ubuntu')
    expect(env.get('PRETTY_NAME')).toBe('Ubuntu "Jammy" 22.04')
    expect(env.get('VARIANT')).toBe('Server Edition')
    expect(env.get('BUILD_ID')).toBe('rolling')
    const ns = new NodeSeries('h')
    ns.update(sec('uname', 'Linux\nh\nr\nv\nm\nd') + sec('osrelease', 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\n'))
    expect(series(ns).get('node_os_version{instance="h",id="ubuntu",id_like="",name="Ubuntu"}')).toBe(22.04)
  })
})
