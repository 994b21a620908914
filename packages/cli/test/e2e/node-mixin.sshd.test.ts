/**
 * A real Prometheus (Debian's) scrapes `kay serve` over real sshd hosts with the README's scrape configuration and
 * evaluates the node-mixin's recording rules and alerts (fixtures/node-mixin-1.5.0.yml, rendered from
 * prometheus/node_exporter v1.5.0): every recording rule yields series for every host, every rule evaluates
 * without error, and every selector of every alert finds every host's series when kay exports its family.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { until } from '@kay/core/testing'
import { afterAll, afterEach, expect, it } from 'vitest'
import { REPO_ROOT } from './support/kay.js'
import {
  expectPromtoolClean,
  get,
  metricsWhen,
  serve,
  sshdHosts,
  startPrometheus,
  stopChildren,
  stopSshdHosts,
} from './support/serve.js'

const RULES = join(REPO_ROOT, 'packages/cli/test/e2e/fixtures/node-mixin-1.5.0.yml')
const HOSTS = ['web1', 'web2']
/** Families the mixin's alerts read that kay does not export (README: timex, conntrack, textfile, mdadm). */
const NOT_EXPORTED = /^node_(timex|nf_conntrack|textfile|md)_/

const dirs: string[] = []
afterEach(() => stopChildren())
afterAll(async () => {
  await stopSshdHosts()
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })))
})

/** The README's `kay serve` command line and the scrape configuration after it. */
async function readmeExample(): Promise<{ command: string; yaml: string }> {
  const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## kay serve'))
  const command = /```sh\n((?:pnpm )?kay serve [^\n]*)\n```/.exec(section)?.[1]
  const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1]
  if (command === undefined || yaml === undefined) throw new Error('README: no kay serve example')
  return { command, yaml }
}

interface Rule {
  type: 'recording' | 'alerting'
  name: string
  query: string
  health: string
  lastError?: string
}

it('evaluates the node-mixin over kay serve with the README scrape config: every recording rule, every host', async () => {
  const { command, yaml } = await readmeExample()
  // The README's example is self-consistent: kay listens where Prometheus scrapes, and Prometheus keeps the labels.
  const listen = /--listen (\S+)/.exec(command)?.[1]
  expect(listen).toBe('127.0.0.1:9717')
  expect(yaml).toContain(`targets: ['${listen}']`)
  expect(yaml).toContain('job_name: node')
  expect(yaml).toContain('honor_labels: true')

  const { args } = await sshdHosts(HOSTS)
  const kay = await serve([...args, '--interval', '1s'])
  await metricsWhen(
    kay.port,
    (t) => HOSTS.every((h) => t.includes(`node_filesystem_size_bytes{instance="${h}"`)),
    60_000,
  )

  const dir = await mkdtemp(join(tmpdir(), 'kay-mixin-'))
  dirs.push(dir)
  // The README's configuration as written, but for the port (a free one, not 9717, which another run may hold) and
  // the interval (1 s rather than 15 s, so that rate() has samples within seconds); plus the mixin's rule file.
  const config =
    `global: { evaluation_interval: 1s }\nrule_files: ['${RULES}']\n` +
    yaml.replace(`'${listen}'`, `'127.0.0.1:${kay.port}'`).replace('scrape_interval: 15s', 'scrape_interval: 1s')
  const prom = await startPrometheus(dir, config)
  expectPromtoolClean((await get(kay.port, '/metrics')).body)

  const rules = async (): Promise<Rule[]> => {
    const r = await prom.api<{ data: { groups: Array<{ rules: Rule[] }> } }>('/api/v1/rules')
    return r.data.groups.flatMap((g) => g.rules)
  }
  const instancesOf = async (q: string): Promise<string[]> => {
    const r = await prom.query(`count by (instance) (${q})`)
    if (r.status !== 'success') throw new Error(`${q}: ${r.error}`)
    return r.data!.result.map((x) => x.metric.instance!).sort()
  }
  const recording = await until(
    'every recording rule to have series for every host',
    async () => {
      try {
        const all = (await rules()).filter((r) => r.type === 'recording')
        if (all.length === 0) return undefined
        for (const r of all) if ((await instancesOf(r.name)).join() !== HOSTS.join()) return undefined
        return all
      } catch {
        return undefined
      }
    },
    { timeoutMs: 90_000, everyMs: 50 },
  )
  expect(recording.map((r) => r.name)).toEqual([
    'instance:node_num_cpu:sum',
    'instance:node_cpu_utilisation:rate5m',
    'instance:node_load1_per_cpu:ratio',
    'instance:node_memory_utilisation:ratio',
    'instance:node_vmstat_pgmajfault:rate5m',
    'instance_device:node_disk_io_time_seconds:rate5m',
    'instance_device:node_disk_io_time_weighted_seconds:rate5m',
    'instance:node_network_receive_bytes_excluding_lo:rate5m',
    'instance:node_network_transmit_bytes_excluding_lo:rate5m',
    'instance:node_network_receive_drop_excluding_lo:rate5m',
    'instance:node_network_transmit_drop_excluding_lo:rate5m',
  ])
  // Prometheus scraped kay in OpenMetrics (it asks for it first) without an error, every sample accepted.
  const targets = await prom.api<{
    data: { activeTargets: Array<{ health: string; lastError: string; scrapeUrl: string }> }
  }>('/api/v1/targets')
  expect(targets.data.activeTargets.map((t) => [t.health, t.lastError])).toEqual([['up', '']])
  const om = await get(kay.port, '/metrics', {
    accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5',
  })
  expect(om.type).toMatch(/^application\/openmetrics-text; version=1\.0\.0/)
  expect(om.body.endsWith('# EOF\n')).toBe(true)
  // The host-level rules give exactly one series per host (the per-device ones one per host and disk).
  for (const r of recording.filter((x) => x.name.startsWith('instance:'))) {
    const res = await prom.query(r.name)
    expect(res.data!.result.map((x) => x.metric.instance).sort(), r.name).toEqual(HOSTS)
  }
  const cpu = await prom.query('instance:node_cpu_utilisation:rate5m')
  for (const x of cpu.data!.result) expect(Number(x.value[1])).toBeGreaterThanOrEqual(0)

  // Every rule, recording and alerting, evaluated without error.
  const all = await until(
    'every rule evaluated',
    async () => {
      const rs = await rules()
      return rs.length === 29 && rs.every((r) => r.health === 'ok') ? rs : undefined
    },
    { timeoutMs: 30_000, everyMs: 50 },
  )
  expect(all.filter((r) => r.health !== 'ok' || r.lastError)).toEqual([])
  // Every selector of every alert: every host's series when kay exports the family, none when it does not.
  const alerts = all.filter((r) => r.type === 'alerting')
  expect(alerts.length).toBe(18)
  const selectors = new Set(
    alerts.flatMap((a) => [...a.query.matchAll(/\b(node_[A-Za-z0-9_]+)\{[^}]*\}/g)].map((m) => m[0])),
  )
  for (const sel of selectors) {
    const family = /^node_[A-Za-z0-9_]+/.exec(sel)![0]
    expect(await instancesOf(sel), sel).toEqual(NOT_EXPORTED.test(family) ? [] : HOSTS)
  }
  kay.child.kill('SIGTERM')
  expect(await kay.exited).toBe(0)
}, 180_000)
