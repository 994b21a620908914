import { describe, expect, it } from 'vitest'
import {
  computeMetrics,
  MAX_INPUT_CHARS,
  parseCollection,
  parseDetail,
  parseSample,
  parseSections,
  parseTickSample,
  type RawSample,
} from '../../src/collection/index.js'
import { isKayError, type KayError } from '../../src/errors.js'
import { capturedFrame, fixture, syntheticFrame } from '../fixtures/proc/frames.js'

function parseErr(fn: () => unknown): KayError {
  try {
    fn()
  } catch (err) {
    expect(isKayError(err, 'KAY_PARSE_ERROR')).toBe(true)
    return err as KayError
  }
  throw new Error('expected a ParseError')
}

function sample(text: string, at = 0): RawSample {
  return parseSample(parseSections(text), at)
}

describe('parseSections', () => {
  it('splits sections at headers that start a line and keeps each body verbatim', () => {
    const m = parseSections('@@kay a\nx\ny\n@@kay b\nz @@kay c\n@@kay c\n')
    expect([...m.entries()]).toEqual([
      ['a', 'x\ny\n'],
      ['b', 'z @@kay c\n'],
      ['c', ''],
    ])
  })

  it('ignores a banner before the first header, malformed names and the end marker line', () => {
    const m = parseSections('Welcome!\n@@kay loadavg\n1\n@@kay BAD NAME\nq\n@@kay-end tok 1\ntrailer\n@@kayak\n')
    expect([...m.entries()]).toEqual([['loadavg', '1\n']])
  })

  it('keeps the last of a repeated section and copes with a header as the very last bytes', () => {
    const m = parseSections('@@kay a\n1\n@@kay a\n2\n@@kay b')
    expect(m.get('a')).toBe('2\n')
    expect(m.get('b')).toBe('')
  })

  it('refuses input larger than the cap before parsing it', () => {
    const e = parseErr(() => parseSections('x'.repeat(MAX_INPUT_CHARS + 1)))
    expect(e.message).toMatch(/too large/)
  })

  it('refuses a value that is not a string with a ParseError', () => {
    parseErr(() => parseSections(42 as unknown as string))
  })
})

describe('parseSample on this machine captures', () => {
  it('reads every counter of a real 2-CPU sample', () => {
    const s = sample(capturedFrame('local-a'), 1000)
    expect(s.cpus).toBe(2)
    expect(s.cpuIds).toEqual([0, 1])
    const aggLine = fixture('local-a', 'stat').split('\n')[0]!.split(/\s+/).slice(1, 9).map(Number)
    expect(s.cpuTimes.slice(0, 8)).toEqual(aggLine)
    expect(s.memTotalBytes).toBe(24_684_084 * 1024)
    expect(s.memAvailableBytes).toBeLessThanOrEqual(s.memTotalBytes)
    expect(s.swapTotalBytes).toBe(0)
    const [l1, l5, l15, up] = [
      ...fixture('local-a', 'loadavg').split(' ').slice(0, 3),
      fixture('local-a', 'uptime').split(' ')[0],
    ]
    expect([s.load1, s.load5, s.load15, s.uptimeSeconds]).toEqual([Number(l1), Number(l5), Number(l15), Number(up)])
    expect(s.interfaces?.map((x) => x.name)).toEqual(['ifb0', 'ifb1', 'eth0'])
    expect(s.interfaces?.find((x) => x.name === 'eth0')).toEqual({
      name: 'eth0',
      rxBytes: 178_673_921,
      txBytes: 313_030,
    })
    expect(s.rootFsUsedPct).toBe(22)
  })

  it('computes CPU % from two real samples and nothing from the first one', () => {
    const a = parseCollection(capturedFrame('local-a'), 1000)
    expect(a.metrics.cpuPct).toBeUndefined()
    expect(a.metrics.netRxBytesPerSec).toBeUndefined()
    const b = parseCollection(capturedFrame('local-b'), 3000, a.sample)
    const pa = fixture('local-a', 'stat').split('\n')[0]!.split(/\s+/).slice(1, 9).map(Number)
    const pb = fixture('local-b', 'stat').split('\n')[0]!.split(/\s+/).slice(1, 9).map(Number)
    const d = pb.map((v, i) => v - pa[i]!)
    const total = d.reduce((x, y) => x + y, 0)
    expect(b.metrics.cpuPct).toBeCloseTo(100 * (1 - (d[3]! + d[4]!) / total), 9)
    const states = Object.values(b.metrics.cpuStates!)
    expect(states.reduce((x, y) => x + y, 0)).toBeCloseTo(100, 9)
    expect(b.metrics.netRxBytesPerSec).toBeGreaterThanOrEqual(0)
    expect(b.metrics.memUsedBytes).toBe(b.metrics.memTotalBytes - b.metrics.memAvailableBytes)
  })
})

describe('parseSample on synthetic hosts', () => {
  it('reads a 64-CPU host', () => {
    const s = sample(syntheticFrame({ cpus: 64 }))
    expect(s.cpus).toBe(64)
    expect(s.cpuIds).toEqual(Array.from({ length: 64 }, (_, i) => i))
    expect(s.cpuTimes.length).toBe(65 * 8)
    expect(s.cpuTimes[0]).toBe(1000 * 64)
  })

  it('reads only the aggregate cpu counters and the cpu numbers with perCpu false (a tick)', () => {
    const text = syntheticFrame({ cpus: 64 })
    const full = parseSample(parseSections(text), 0)
    const tick = parseSample(parseSections(text), 0, false)
    expect(tick.cpus).toBe(64)
    expect(tick.cpuIds).toEqual(full.cpuIds)
    expect(tick.cpuTimes).toEqual(full.cpuTimes.slice(0, 8))
    // Same metrics either way; a tick sample is no per-core baseline for drill-in.
    const later = parseSample(
      parseSections(syntheticFrame({ cpus: 64, perCpu: [2000, 0, 500, 9000, 0, 0, 0, 0], uptime: 1005 })),
      5000,
    )
    expect(computeMetrics(tick, later)).toEqual(computeMetrics(full, later))
    expect(parseDetail(parseSections(text), tick, 5000).perCpuPct).toEqual([])
  })

  it('reads a host with no swap and one with swap in use', () => {
    expect(computeMetrics(undefined, sample(syntheticFrame({ swapTotalKb: 0 }))).swapUsedBytes).toBe(0)
    const m = computeMetrics(undefined, sample(syntheticFrame({ swapTotalKb: 2048, swapFreeKb: 1024 })))
    expect(m.swapTotalBytes).toBe(2048 * 1024)
    expect(m.swapUsedBytes).toBe(1024 * 1024)
  })

  it('reads many interfaces and leaves lo out', () => {
    const ifaces = Array.from({ length: 200 }, (_, i) => ({ name: `veth${i}`, rx: i * 10, tx: i }))
    const s = sample(syntheticFrame({ ifaces }))
    expect(s.interfaces?.length).toBe(200)
    expect(s.interfaces?.[199]).toEqual({ name: 'veth199', rxBytes: 1990, txBytes: 199 })
    expect(s.interfaces?.some((x) => x.name === 'lo')).toBe(false)
  })

  it('estimates available memory the old way when MemAvailable is absent', () => {
    const s = sample(syntheticFrame({ memAvailableKb: undefined }))
    // MemFree + Buffers + Cached + SReclaimable of the synthetic meminfo.
    expect(s.memAvailableBytes).toBe((1_000_000 + 200_000 + 3_000_000 + 100_000) * 1024)
  })

  it('reads only the meminfo lines it needs: SReclaimable only when MemAvailable is missing', () => {
    const garbled = (t: string) => t.replace(/SReclaimable: +\d+ kB/, 'SReclaimable: lots')
    // With MemAvailable, SReclaimable is not needed, so a bad value there is never read…
    expect(sample(garbled(syntheticFrame())).memAvailableBytes).toBe(8_192_000 * 1024)
    // …without it, SReclaimable goes into the estimate, so the same line is read and refused.
    expect(parseErr(() => sample(garbled(syntheticFrame({ memAvailableKb: undefined })))).message).toMatch(
      /^meminfo: bad value/,
    )
  })

  it('finds the meminfo keys in any order, the first of a repeated key, and nothing outside the section', () => {
    const text = syntheticFrame({ swapTotalKb: 2048, swapFreeKb: 1024 })
    const lines = /@@kay meminfo\n([\s\S]*?)@@kay/.exec(text)![1]!.trimEnd().split('\n')
    const shuffled = [...lines].reverse().join('\n')
    const reordered = text.replace(lines.join('\n'), `${shuffled}\nMemTotal: 1 kB`)
    expect(sample(reordered)).toEqual(sample(text))
    // A key that only appears in another section is not this section's: MemTotal is missing.
    const moved = text.replace(/MemTotal:.*\n/, '').replace('@@kay stat\n', '@@kay stat\nMemTotal: 5 kB\n')
    expect(parseErr(() => parseTickSample(moved, 0)).message).toMatch(/^meminfo: MemTotal missing/)
  })

  it('does not read the counters of lo, which the rates leave out', () => {
    const text = syntheticFrame().replace(/ lo: +\d+/, ' lo: x')
    expect(sample(text).interfaces?.map((x) => x.name)).toEqual(['eth0'])
    expect(parseErr(() => sample(text.replace(/eth0: \d+/, 'eth0: x'))).message).toMatch(/^netdev: bad counter/)
  })

  it('reads the netdev lines the loops write for device interfaces: name, rx bytes, seven zeros, tx bytes', () => {
    const text = syntheticFrame().replace(
      /@@kay netdev\n[\s\S]*?(?=@@kay df)/,
      '@@kay netdev\neth0: 1234 0 0 0 0 0 0 0 5678\nenp1s0: 9 0 0 0 0 0 0 0 10\n',
    )
    expect(sample(text).interfaces).toEqual([
      { name: 'eth0', rxBytes: 1234, txBytes: 5678 },
      { name: 'enp1s0', rxBytes: 9, txBytes: 10 },
    ])
    // Against the next tick's lines, the rates are the deltas summed over the interfaces.
    const later = text.replace('eth0: 1234 0 0 0 0 0 0 0 5678', 'eth0: 3234 0 0 0 0 0 0 0 6678')
    const first = parseCollection(text, 0).sample
    const m = parseCollection(later, 2000, first).metrics
    expect(m.netRxBytesPerSec).toBe(1000)
    expect(m.netTxBytesPerSec).toBe(500)
  })

  it('treats netdev and df as optional and ignores unknown sections', () => {
    const text = syntheticFrame().replace(/@@kay netdev[\s\S]*$/, '@@kay future\nwhatever 1 2 3\n')
    const m = parseCollection(text, 0).metrics
    expect(m.rootFsUsedPct).toBeUndefined()
    expect(m.load1).toBe(1.5)
  })

  it('parses into a spare sample in place, reusing its arrays and interface records, as a fresh parse would', () => {
    const first = syntheticFrame({
      cpus: 64,
      ifaces: [
        { name: 'eth0', rx: 1, tx: 2 },
        { name: 'wg0', rx: 3, tx: 4 },
      ],
    })
    const spare = parseSample(parseSections(first), 0)
    const { cpuTimes, cpuIds, interfaces } = spare
    const eth0 = interfaces?.[0]
    expect(spare.rootFsUsedPct).toBeDefined()
    // Fewer CPUs, one interface gone and one renamed, no df section: nothing of the first sample may stay.
    const second = syntheticFrame({
      cpus: 2,
      ifaces: [
        { name: 'eth0', rx: 10, tx: 20 },
        { name: 'bond0', rx: 30, tx: 40 },
      ],
    }).replace(/@@kay df[\s\S]*$/, '')
    const reused = parseSample(parseSections(second), 5000, false, spare)
    expect(reused).toBe(spare)
    expect(reused).toEqual(parseSample(parseSections(second), 5000, false))
    expect(reused.rootFsUsedPct).toBeUndefined()
    expect(reused.cpuTimes).toBe(cpuTimes)
    expect(reused.cpuIds).toBe(cpuIds)
    expect(reused.interfaces).toBe(interfaces)
    expect(reused.interfaces?.[0]).toBe(eth0)
    expect(reused.interfaces?.map((x) => x.name)).toEqual(['eth0', 'bond0'])
    // Without a netdev section the interfaces are gone too.
    const noNet = syntheticFrame().replace(/@@kay netdev[\s\S]*?(?=@@kay df)/, '')
    expect(parseSample(parseSections(noNet), 0, false, reused).interfaces).toBeUndefined()
  })

  it('accepts old kernels whose cpu lines have only four counters', () => {
    const text = syntheticFrame({ cpus: 1 }).replace(/^cpu(\d*) +(\d+) (\d+) (\d+) (\d+) .*$/gm, 'cpu$1 $2 $3 $4 $5')
    const s = sample(text)
    expect(s.cpuTimes.slice(0, 8)).toEqual([1000, 10, 500, 8000, 0, 0, 0, 0])
  })
})

describe('computeMetrics deltas', () => {
  const base = { cpus: 2, perCpu: [100, 0, 50, 800, 50, 0, 0, 0], uptime: 1000 }

  it('computes CPU busy % and per-state % over the interval', () => {
    const a = sample(syntheticFrame(base), 0)
    const b = sample(syntheticFrame({ ...base, perCpu: [250, 0, 100, 1100, 50, 0, 0, 0], uptime: 1005 }), 5000)
    const m = computeMetrics(a, b)
    // Δ per cpu: user 150, system 50, idle 300 → total 500, busy 200/500.
    expect(m.cpuPct).toBeCloseTo(40, 9)
    expect(m.cpuStates).toEqual({ user: 30, nice: 0, system: 10, idle: 60, iowait: 0, irq: 0, softirq: 0, steal: 0 })
  })

  it('computes network rates per second from the collector clock', () => {
    const a = sample(syntheticFrame({ ifaces: [{ name: 'eth0', rx: 1000, tx: 2000 }] }), 10_000)
    const b = sample(syntheticFrame({ ifaces: [{ name: 'eth0', rx: 6000, tx: 4000 }], uptime: 1005 }), 15_000)
    const m = computeMetrics(a, b)
    expect(m.netRxBytesPerSec).toBe(1000)
    expect(m.netTxBytesPerSec).toBe(400)
  })

  it('gives no rate (never a negative one) when a counter wraps or resets', () => {
    const a = sample(syntheticFrame({ ifaces: [{ name: 'eth0', rx: 4_294_967_000, tx: 10 }] }), 0)
    const b = sample(syntheticFrame({ ifaces: [{ name: 'eth0', rx: 200, tx: 20 }], uptime: 1005 }), 5000)
    const m = computeMetrics(a, b)
    expect(m.netRxBytesPerSec).toBeUndefined()
    expect(m.netTxBytesPerSec).toBeUndefined()
  })

  it('leaves a new interface out of the interval instead of counting its whole history', () => {
    const a = sample(syntheticFrame({ ifaces: [{ name: 'eth0', rx: 0, tx: 0 }] }), 0)
    const ifaces = [
      { name: 'eth0', rx: 500, tx: 500 },
      { name: 'wg0', rx: 1e12, tx: 1e12 },
    ]
    const m = computeMetrics(a, sample(syntheticFrame({ ifaces, uptime: 1001 }), 1000))
    expect(m.netRxBytesPerSec).toBe(500)
  })

  it('gives no CPU % and no rates across a reboot', () => {
    const a = sample(syntheticFrame({ ...base, uptime: 90_000 }), 0)
    const b = sample(syntheticFrame({ ...base, perCpu: [1, 0, 1, 10, 0, 0, 0, 0], uptime: 30 }), 5000)
    const m = computeMetrics(a, b)
    expect(m.cpuPct).toBeUndefined()
    expect(m.cpuStates).toBeUndefined()
    expect(m.netRxBytesPerSec).toBeUndefined()
  })

  it('gives no CPU % when the counters went backwards as a whole', () => {
    const a = sample(syntheticFrame({ ...base, perCpu: [500, 0, 500, 5000, 0, 0, 0, 0] }), 0)
    const b = sample(syntheticFrame({ ...base, perCpu: [400, 0, 400, 4000, 0, 0, 0, 0], uptime: 1005 }), 5000)
    expect(computeMetrics(a, b).cpuPct).toBeUndefined()
  })

  it('clamps an iowait counter that went back a little to zero instead of failing the interval', () => {
    const a = sample(syntheticFrame({ ...base, perCpu: [100, 0, 100, 800, 60, 0, 0, 0] }), 0)
    const b = sample(syntheticFrame({ ...base, perCpu: [200, 0, 200, 1000, 55, 0, 0, 0], uptime: 1005 }), 5000)
    const m = computeMetrics(a, b)
    expect(m.cpuStates?.iowait).toBe(0)
    expect(m.cpuPct).toBeCloseTo(50, 9)
  })

  it('gives no rate when the collector clock did not advance', () => {
    const a = sample(syntheticFrame(), 5000)
    const b = sample(syntheticFrame({ uptime: 1001 }), 5000)
    expect(computeMetrics(a, b).netRxBytesPerSec).toBeUndefined()
  })

  it('carries the root filesystem figure over the ticks without df', () => {
    const a = sample(syntheticFrame({ rootUsedPct: 73 }), 0)
    const b = sample(syntheticFrame({ rootUsedPct: undefined, uptime: 1005 }), 5000)
    const c = sample(syntheticFrame({ rootUsedPct: undefined, uptime: 1010 }), 10_000)
    expect(computeMetrics(a, b).rootFsUsedPct).toBe(73)
    expect(computeMetrics(b, c).rootFsUsedPct).toBe(73)
  })
})

describe('parseDetail', () => {
  const detailText = (dir: 'local-a' | 'local-b') =>
    capturedFrame(dir, ['stat', 'meminfo', 'loadavg', 'uptime', 'netdev']) +
    `@@kay df\n${fixture('local-b', 'df-all')}@@kay ps\n${fixture('local-b', 'ps')}`

  it('reads processes, filesystems and interfaces, with per-core % against a previous sample', () => {
    const prev = sample(capturedFrame('local-a'), 1000)
    const d = parseDetail(parseSections(detailText('local-b')), prev, 3000)
    expect(d.perCpuPct.length).toBe(2)
    for (const p of d.perCpuPct) expect(p).toBeGreaterThanOrEqual(0)
    expect(d.processes.length).toBe(12)
    expect(d.processes[0]).toEqual({
      pid: 2211,
      user: 'postgres',
      cpuPct: 41.5,
      memPct: 6.2,
      rssKb: 1_532_044,
      command: 'postgres',
    })
    expect(d.processes.find((p) => p.pid === 4410)?.command).toBe('Web Content')
    expect(d.filesystems.map((f) => f.mount)).toEqual(['/dev', '/dev/shm', '/', '/sys/fs/cgroup'])
    expect(d.filesystems.find((f) => f.mount === '/')?.usedPct).toBe(22)
    expect(d.interfaces.find((x) => x.name === 'eth0')?.rxBytesPerSec).toBe(0)
    expect(d.metrics.cpuPct).toBeDefined()
  })

  it('has no per-core figures without a previous sample, and empty lists without ps and df', () => {
    const d = parseDetail(parseSections(syntheticFrame().replace(/@@kay df[\s\S]*$/, '')), undefined, 0)
    expect(d.perCpuPct).toEqual([])
    expect(d.processes).toEqual([])
    expect(d.filesystems).toEqual([])
    expect(d.interfaces[0]?.rxBytesPerSec).toBeUndefined()
  })

  it('reads df rows whose filesystem or mount point contains spaces, and a negative Available', () => {
    const df =
      'Filesystem 1024-blocks Used Available Capacity Mounted on\n' +
      'my share 100 50 50 50% /mnt/my disk\n' +
      '/dev/sdb1 100 100 -5 105% /full\n' +
      'proc 0 0 0 - /proc\n' +
      'garbage line\n'
    const d = parseDetail(parseSections(`${syntheticFrame().replace(/@@kay df[\s\S]*$/, '')}@@kay df\n${df}`))
    expect(d.filesystems).toEqual([
      { filesystem: 'my share', sizeKb: 100, usedKb: 50, availKb: 50, usedPct: 50, mount: '/mnt/my disk' },
      { filesystem: '/dev/sdb1', sizeKb: 100, usedKb: 100, availKb: 0, usedPct: 100, mount: '/full' },
      { filesystem: 'proc', sizeKb: 0, usedKb: 0, availKb: 0, usedPct: 0, mount: '/proc' },
    ])
  })

  it('drops per-core figures when the set of CPUs changed (hotplug)', () => {
    const prev = sample(syntheticFrame({ cpus: 4 }), 0)
    const d = parseDetail(parseSections(syntheticFrame({ cpus: 3, uptime: 1005 })), prev, 5000)
    expect(d.perCpuPct).toEqual([])
  })
})

describe('parse errors', () => {
  const good = syntheticFrame()
  const cases: Array<[string, string, RegExp]> = [
    ['a missing loadavg section', good.replace('@@kay loadavg', '@@kay other'), /^loadavg: section missing/],
    ['a missing meminfo section', good.replace('@@kay meminfo', '@@kay other'), /^meminfo: section missing/],
    ['a missing stat section', good.replace('@@kay stat', '@@kay other'), /^stat: section missing/],
    ['a missing uptime section', good.replace('@@kay uptime', '@@kay other'), /^uptime: section missing/],
    ['an empty uptime section', good.replace(/@@kay uptime\n.*\n/, '@@kay uptime\n'), /^uptime: section empty/],
    ['a negative load', good.replace('1.50 1.25', '-1.50 1.25'), /^loadavg:/],
    ['a NaN load', good.replace('1.50 1.25', 'NaN 1.25'), /^loadavg:/],
    ['two load averages only', good.replace('1.50 1.25 0.75 3/512 4242', '1.50 1.25'), /^loadavg:/],
    ['an absurd load', good.replace('1.50 1.25', '99999999.00 1.25'), /^loadavg: load average out of range/],
    ['an absurd uptime', good.replace('1000.00 3000.00', '99999999999.00 1'), /^uptime: uptime out of range/],
    ['MemTotal 0', good.replace(/MemTotal: +\d+/, 'MemTotal: 0'), /^meminfo: MemTotal is 0/],
    ['no MemTotal', good.replace(/MemTotal:.*\n/, ''), /^meminfo: MemTotal missing/],
    ['a meminfo value past 2^53 bytes', good.replace(/MemTotal: +\d+/, 'MemTotal: 9007199254740993'), /^meminfo:/],
    ['a meminfo value in an unknown unit', good.replace(/(MemFree: +\d+) kB/, '$1 MB'), /^meminfo: unexpected unit/],
    ['a counter past 2^53', good.replace(/^cpu0 \d+/m, 'cpu0 99999999999999999999'), /^stat: bad cpu counter/],
    ['a negative counter', good.replace(/^cpu0 \d+/m, 'cpu0 -5'), /^stat: bad cpu counter/],
    ['a cpu line with letters', good.replace(/^cpu1 \d+/m, 'cpu1 12ab'), /^stat: bad cpu counter/],
    ['a cpu line with 3 counters', good.replace(/^cpu2 .*$/m, 'cpu2 1 2 3'), /^stat: cpu line has fewer than 4/],
    ['no aggregate cpu line', good.replace(/^cpu .*\n/m, ''), /^stat: no aggregate cpu line/],
    ['no per-cpu lines', good.replace(/^cpu\d.*\n/gm, ''), /^stat: no per-cpu lines/],
    ['a netdev counter that is not a number', good.replace(/eth0: \d+/, 'eth0: x'), /^netdev: bad counter/],
    ['a truncated netdev line', good.replace(/eth0: .*/, 'eth0: 1 2 3'), /^netdev: bad counter/],
  ]
  for (const [what, text, re] of cases) {
    it(`refuses ${what} with a ParseError naming the section`, () => {
      expect(parseErr(() => parseCollection(text, 0)).message).toMatch(re)
    })
  }

  it('refuses more than 4096 CPUs', () => {
    expect(parseErr(() => parseCollection(syntheticFrame({ cpus: 4097 }), 0)).message).toMatch(/more than 4096 cpus/)
    expect(parseCollection(syntheticFrame({ cpus: 4096 }), 0).metrics.cpus).toBe(4096)
  })

  it('refuses a non-finite sample time and a non-Map sections argument', () => {
    parseErr(() => parseSample(parseSections(good), Number.NaN))
    parseErr(() => parseSample({} as Map<string, string>, 0))
  })

  it('copes with huge lines in linear time', () => {
    const huge = good.replace('@@kay netdev', `@@kay junk\n${'9'.repeat(900_000)}\n@@kay netdev`)
    const t0 = performance.now()
    expect(parseCollection(huge, 0).metrics.cpus).toBe(4)
    expect(performance.now() - t0).toBeLessThan(2000)
    parseErr(() => parseCollection(good.replace('1000.00 3000.00', `${'1'.repeat(500_000)}.0`), 0))
  })
})
