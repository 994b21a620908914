/**
 * `kay serve` side by side with the real node_exporter (Debian's prometheus-node-exporter 1.5, which CI installs
 * and never starts as a service): both read this machine, node_exporter directly (as the kaytest user, as it is
 * meant to run: unprivileged) and kay through a real OpenSSH sshd as that same user. Family by family they must
 * report the same series (names, types, help, label sets, after the exclusions documented in the README), gauges
 * equal within the tolerances below, counters bracketed by two node_exporter scrapes taken around kay's tick.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { NODE_EXPORTER_COLLECTORS } from '@kay/core/internal'
import { SSHD_TEST_USER, until } from '@kay/core/testing'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  type Child,
  freePort,
  get,
  metricsWhen,
  type ParsedExposition,
  parseExposition,
  type Sample,
  seriesKey,
  serve,
  sshdHosts,
  startChild,
  stopChildren,
  stopSshdHosts,
} from './support/serve.js'

export const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter'

/**
 * What node_exporter exports with these collectors and kay does not (README, "What kay serve does not export"):
 * node_exporter's own families, and of the netclass collector everything but node_network_up and node_network_info.
 */
const NOT_EXPORTED = [
  /^promhttp_/,
  /^node_scrape_collector_/,
  /^node_exporter_build_info$/,
  /^node_network_(address_assign_type|carrier|carrier_(up_|down_)?changes_total|device_id|dormant|flags|iface_id|iface_link|iface_link_mode|mtu_bytes|name_assign_type|net_dev_group|protocol_type|speed_bytes|transmit_queue_length)$/,
]

/** The collectors compared: those kay serves, and netclass for node_network_up and node_network_info. */
const COMPARED_COLLECTORS = [...NODE_EXPORTER_COLLECTORS, 'netclass']

afterEach(() => stopChildren())
afterAll(() => stopSshdHosts())

/** node_exporter on a free loopback port with the given collectors, as kaytest when we are root. */
export async function startNodeExporter(collectors: readonly string[] | 'defaults'): Promise<Child> {
  if (!existsSync(NODE_EXPORTER)) {
    throw new Error(`${NODE_EXPORTER} missing: run .ci/setup-tools.sh (Debian's prometheus-node-exporter)`)
  }
  const port = await freePort()
  const args = [`--web.listen-address=127.0.0.1:${port}`, '--web.disable-exporter-metrics', '--log.level=warn']
  if (collectors !== 'defaults') args.push('--collector.disable-defaults', ...collectors.map((c) => `--collector.${c}`))
  const ids =
    process.getuid?.() === 0
      ? {
          uid: Number(execFileSync('id', ['-u', SSHD_TEST_USER], { encoding: 'utf8' })),
          gid: Number(execFileSync('id', ['-g', SSHD_TEST_USER], { encoding: 'utf8' })),
        }
      : {}
  const ne = startChild(NODE_EXPORTER, args, port, { ...ids, cwd: '/' })
  await until(
    'node_exporter',
    async () => ((await get(port, '/metrics').catch(() => undefined))?.status === 200 ? true : undefined),
    { timeoutMs: 15_000, everyMs: 50 },
  )
  return ne
}

const DROP = ['instance']
const MiB = 1024 * 1024

/** How far a gauge of kay's may be from the range of node_exporter's two readings (absolute). */
function gaugeTolerance(name: string, a: number, b: number, memTotal: number): number {
  const rel = 0.01 * Math.max(Math.abs(a), Math.abs(b))
  if (name.startsWith('node_memory_') && name.endsWith('_bytes')) return Math.max(rel, 0.02 * memTotal + 64 * MiB)
  if (name.startsWith('node_load')) return 1
  if (name === 'node_procs_running' || name === 'node_procs_blocked') return 64
  if (name === 'node_filefd_allocated') return 4096
  if (name === 'node_time_seconds' || name === 'node_boot_time_seconds') return 2
  // kay reads the filesystems every 12th tick: up to 12 s older than node_exporter's readings.
  if (name === 'node_filesystem_free_bytes' || name === 'node_filesystem_avail_bytes') return Math.max(rel, 1024 * MiB)
  if (name === 'node_filesystem_files_free') return 100_000
  if (name === 'node_disk_io_now') return 64
  return rel
}

/**
 * The differences between kay's series for `host` and node_exporter's two readings `a0` (before kay's tick) and
 * `a1` (after), each naming the family or series. A series present in both of node_exporter's readings must be
 * in kay's; one of kay's must be in at least one of them (interfaces and mounts come and go on a busy machine).
 */
export function compare(a0: ParsedExposition, k: ParsedExposition, a1: ParsedExposition, host: string): string[] {
  const problems: string[] = []
  const excluded = (name: string) => NOT_EXPORTED.some((re) => re.test(name))
  const byKey = (samples: Sample[]) =>
    new Map(samples.filter((s) => !excluded(s.name)).map((s) => [seriesKey(s, DROP), s]))
  const A0 = byKey(a0.samples)
  const A1 = byKey(a1.samples)
  const K = byKey(k.samples.filter((s) => s.name.startsWith('node_') && s.labels.get('instance') === host))
  const families = (m: Map<string, Sample>) => new Set([...m.values()].map((s) => s.name))
  const neFamilies = new Set([...families(A0)].filter((f) => families(A1).has(f)))
  const kayFamilies = families(K)
  for (const f of neFamilies) if (!kayFamilies.has(f)) problems.push(`family missing in kay: ${f}`)
  for (const f of kayFamilies) if (!neFamilies.has(f)) problems.push(`family not in node_exporter: ${f}`)
  for (const f of kayFamilies) {
    const mine = k.meta.get(f)
    const theirs = a0.meta.get(f)
    if (theirs && (mine?.type !== theirs.type || mine?.help !== theirs.help)) {
      problems.push(`${f}: TYPE/HELP ${JSON.stringify(mine)} vs node_exporter ${JSON.stringify(theirs)}`)
    }
  }
  const memTotal = [...A0.values()].find((s) => s.name === 'node_memory_MemTotal_bytes')?.value ?? 0
  for (const [key, s0] of A0) {
    const s1 = A1.get(key)
    if (s1 === undefined || !neFamilies.has(s0.name) || !kayFamilies.has(s0.name)) continue
    const mine = K.get(key)
    if (mine === undefined) {
      problems.push(`series missing in kay: ${key}`)
      continue
    }
    const type = a0.meta.get(s0.name)?.type
    const lo = Math.min(s0.value, s1.value)
    const hi = Math.max(s0.value, s1.value)
    const tol = type === 'counter' ? 1e-9 * Math.max(1, hi) : gaugeTolerance(s0.name, lo, hi, memTotal)
    if (!(mine.value >= lo - tol && mine.value <= hi + tol)) {
      problems.push(`${type} ${key}: kay ${mine.value}, node_exporter ${s0.value} then ${s1.value} (±${tol})`)
    }
  }
  for (const key of K.keys()) if (!A0.has(key) && !A1.has(key)) problems.push(`series not in node_exporter: ${key}`)
  return problems
}

/** kay's tick count, from its own histogram. */
const ticksOf = (text: string): number => Number(/^kay_collect_duration_seconds_count (\d+)$/m.exec(text)?.[1] ?? 0)

/**
 * node_exporter's reading, then kay's exposition from a tick that started after it, then node_exporter's again.
 */
async function sideBySide(ne: Child, kay: Child): Promise<[ParsedExposition, ParsedExposition, ParsedExposition]> {
  const before = ticksOf((await get(kay.port, '/metrics')).body)
  const a0 = parseExposition((await get(ne.port, '/metrics')).body)
  // The tick under way may have started before that reading: wait for the one after it.
  const text = await metricsWhen(kay.port, (t) => ticksOf(t) >= before + 2, 30_000)
  const a1 = parseExposition((await get(ne.port, '/metrics')).body)
  return [a0, parseExposition(text), a1]
}

describe('kay serve and node_exporter on the same machine', () => {
  it.each([
    ['a collection stream (the perl loop)', [] as string[], /mode="stream-perl"/],
    ['the exec fallback', ['--collect-mode', 'exec'], /mode="exec"/],
  ])(
    'report the same node_exporter series through %s',
    async (_what, flags, mode) => {
      const { args } = await sshdHosts(['real1'])
      const ne = await startNodeExporter(COMPARED_COLLECTORS)
      const kay = await serve([...args, '--interval', '1s', ...flags])
      // Every family in, from the collection mode under test (the first ticks are exec while the stream opens).
      await metricsWhen(
        kay.port,
        (t) =>
          /^node_filesystem_size_bytes\{instance="real1"/m.test(t) &&
          mode.test(t.match(/^kay_host_collect_mode.*$/m)?.[0] ?? ''),
        60_000,
      )
      const [a0, k, a1] = await sideBySide(ne, kay)
      expect(compare(a0, k, a1, 'real1')).toEqual([])
      // The comparison saw the families that matter to the node-mixin and the dashboards.
      const names = new Set(k.samples.map((s) => s.name))
      for (const f of [
        'node_cpu_seconds_total',
        'node_memory_MemAvailable_bytes',
        'node_filesystem_avail_bytes',
        'node_network_receive_bytes_total',
        'node_disk_io_time_seconds_total',
        'node_load1',
        'node_vmstat_pgmajfault',
        'node_uname_info',
        'node_os_info',
        'node_time_seconds',
        'node_time_zone_offset_seconds',
        'node_time_clocksource_current_info',
        'node_time_clocksource_available_info',
        'node_network_up',
        'node_network_info',
      ]) {
        expect(names, f).toContain(f)
      }
      kay.child.kill('SIGTERM')
      expect(await kay.exited).toBe(0)
    },
    120_000,
  )

  it('names the series that differ (the comparison can fail)', () => {
    const ne = parseExposition(
      '# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.5\n' +
        '# HELP node_forks_total Total number of forks.\n# TYPE node_forks_total counter\nnode_forks_total 100\n',
    )
    const ne1 = parseExposition(
      '# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.5\n' +
        '# HELP node_forks_total Total number of forks.\n# TYPE node_forks_total counter\nnode_forks_total 110\n',
    )
    const kay = parseExposition(
      '# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1{instance="h"} 3.5\n' +
        '# HELP node_forks_total Total number of forks.\n# TYPE node_forks_total counter\nnode_forks_total{instance="h"} 111\n',
    )
    expect(compare(ne, kay, ne1, 'h')).toEqual([
      'gauge node_load1{}: kay 3.5, node_exporter 0.5 then 0.5 (±1)',
      'counter node_forks_total{}: kay 111, node_exporter 100 then 110 (±1.1e-7)',
    ])
    expect(compare(ne, parseExposition(''), ne1, 'h')).toEqual([
      'family missing in kay: node_load1',
      'family missing in kay: node_forks_total',
    ])
  })
})
