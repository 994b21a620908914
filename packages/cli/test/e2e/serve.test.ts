import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { until } from '@kay/core/testing'
import { inShard } from '@kay/workers'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { type FleetFixture, startFixture } from './support/kay.js'
import { expectPromtoolClean, get, metricsWhen, serve, startPrometheus, stopChildren } from './support/serve.js'

const fixtures: FleetFixture[] = []
const dirs: string[] = []

afterEach(() => stopChildren())
afterAll(async () => {
  await Promise.all(fixtures.splice(0).map((f) => f.close()))
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })))
})

function upHosts(text: string): string[] {
  return [...text.matchAll(/^kay_host_up\{instance="([^"]+)"\} 1$/gm)].map((m) => m[1]!)
}

describe('kay serve', () => {
  it('exposes 500 hosts in valid exposition format (promtool), health endpoints, and scrapes do no SSH work', async () => {
    const fx = await startFixture(500)
    fixtures.push(fx)
    const s = await serve(['sim[0001-0500]', ...fx.connArgs, '--interval', '2s'])
    await until(
      'healthz',
      async () => (await get(s.port, '/healthz').catch(() => undefined))?.status === 200 || undefined,
      { timeoutMs: 30_000, everyMs: 50 },
    )
    const text = await metricsWhen(s.port, (t) => upHosts(t).length === 500, 60_000)
    expect((await get(s.port, '/readyz')).status).toBe(200)
    expectPromtoolClean(text)
    expect(new Set(upHosts(text)).size).toBe(500)
    for (const name of [
      'node_cpu_seconds_total',
      'kay_host_memory_used_bytes',
      'kay_dial_cap',
      'kay_handshakes_total',
    ]) {
      expect(text).toContain(`# TYPE ${name}`)
    }
    // Scrapes read the cached snapshot: no channels are opened by them (once every host has its stream, a tick
    // opens none either).
    await metricsWhen(
      s.port,
      (t) => (t.match(/^kay_host_collect_mode\{[^}]*mode="stream-/gm) ?? []).length === 500,
      60_000,
    )
    const before = fx.fleet.stats().totals.channelsOpened
    for (let i = 0; i < 5; i++) await get(s.port, '/metrics')
    expect(fx.fleet.stats().totals.channelsOpened).toBe(before)
    s.child.kill('SIGTERM')
    expect(await s.exited).toBe(0)
  }, 120_000)

  it('reloads the host list on SIGHUP without redialing the hosts it keeps', async () => {
    const fx = await startFixture(6)
    fixtures.push(fx)
    const hostfile = join(fx.dir, 'hosts')
    await writeFile(hostfile, 'sim0001\nsim0002\nsim0003\nsim0004\n')
    const s = await serve(['--hostfile', hostfile, ...fx.connArgs, '--interval', '500ms'])
    await metricsWhen(s.port, (t) => upHosts(t).length === 4)
    await writeFile(hostfile, 'sim0002\nsim0003\nsim0004\nsim0005\nsim0006\n')
    s.child.kill('SIGHUP')
    const text = await metricsWhen(s.port, (t) => upHosts(t).length === 5 && !upHosts(t).includes('sim0001'))
    expect(upHosts(text).sort()).toEqual(['sim0002', 'sim0003', 'sim0004', 'sim0005', 'sim0006'])
    const st = fx.fleet.stats().hosts
    for (const h of st.slice(1, 6)) expect(h.handshakesStarted).toBe(1)
    await until('sim0001 dropped', () => fx.fleet.stats().hosts[0]!.currentConnections === 0 || undefined, {
      timeoutMs: 30_000,
      everyMs: 50,
    })
    s.child.kill('SIGTERM')
    expect(await s.exited).toBe(0)
  }, 60_000)

  it('splits a fleet over two collectors that a real Prometheus scrapes: every host exactly once', async () => {
    const fx = await startFixture(40)
    fixtures.push(fx)
    const a = await serve(['sim[0001-0040]', ...fx.connArgs, '--interval', '500ms', '--shard', '1/2'])
    const b = await serve(['sim[0001-0040]', ...fx.connArgs, '--interval', '500ms', '--shard', '2/2'])
    const expectA = fx.names.filter((n) => inShard(n, 0, 2))
    await metricsWhen(a.port, (t) => upHosts(t).length === expectA.length)
    await metricsWhen(b.port, (t) => upHosts(t).length === 40 - expectA.length)

    const dir = await mkdtemp(join(tmpdir(), 'kay-prom-'))
    dirs.push(dir)
    const prom = await startPrometheus(
      dir,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: kay',
        '    honor_labels: true',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${a.port}', '127.0.0.1:${b.port}']`,
        '',
      ].join('\n'),
    )
    const query = prom.query
    const result = await until(
      'prometheus to scrape both collectors',
      async () => {
        try {
          const r = await query('count by (instance) (kay_host_up == 1)')
          return r.data?.result.length === 40 ? r.data.result : undefined
        } catch {
          return undefined
        }
      },
      { timeoutMs: 45_000, everyMs: 50 },
    )
    expect(result.map((x) => x.metric.instance).sort()).toEqual([...fx.names].sort())
    expect(result.every((x) => x.value[1] === '1')).toBe(true)
    prom.child.kill('SIGTERM')
    a.child.kill('SIGTERM')
    b.child.kill('SIGTERM')
    expect(await a.exited).toBe(0)
    expect(await b.exited).toBe(0)
  }, 120_000)
})
