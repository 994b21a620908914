/**
 * `kay fleet` for scripts, end to end against simulated hosts: `--ticks N` exits with the worst code seen over the
 * run (not the last tick's), and the fleet's progress is in the NDJSON summary and on the text table's summary line.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { spawnKayFleet } from './support/fleet-run.js'
import { type FleetFixture, killRunning, runKay, startFixture } from './support/kay.js'

const HOSTS = 12
const FLAKY = 5

let fx: FleetFixture

beforeAll(async () => {
  fx = await startFixture(HOSTS)
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

describe('kay fleet', { timeout: 90_000 }, () => {
  test('--ticks N exits with the worst code of the run: a host that failed at tick 1 and recovered still counts', async () => {
    // Host FLAKY answers garbage until the first tick is out, then recovers for good.
    fx.fleet.setFault(FLAKY, { procFault: 'binary' })
    const summaries: Array<Record<string, unknown>> = []
    const run = spawnKayFleet(['--all-config-hosts', ...fx.connArgs, '--ticks', '4', '--interval', '300ms'], (o) => {
      if (o.summary !== true) return
      summaries.push(o)
      if (summaries.length === 1) fx.fleet.setFault(FLAKY, { procFault: 'none' })
    })
    const guard = setTimeout(() => run.child.kill('SIGKILL'), 60_000)
    try {
      const code = await run.exited
      expect(summaries.length).toBe(4)
      expect(summaries[0]).toMatchObject({ hosts: HOSTS, failed: 1, byCode: { KAY_PARSE_ERROR: 1 } })
      expect(summaries.at(-1)).toMatchObject({ hosts: HOSTS, ok: HOSTS, failed: 0 })
      // The last tick alone would say 0.
      expect(code).toBe(2)
      // Where every host stands, after each tick: all streaming by the end.
      expect(summaries.at(-1)!.progress).toMatchObject({
        hosts: HOSTS,
        streaming: HOSTS,
        connecting: 0,
        starting: 0,
        probing: 0,
        settled: true,
      })
    } finally {
      clearTimeout(guard)
      fx.fleet.setFault(FLAKY, { procFault: 'none' })
    }
  })

  test('--ticks N exits 0 when every tick of the run was clean', async () => {
    const r = await runKay([
      'fleet',
      '--json',
      '--all-config-hosts',
      ...fx.connArgs,
      '--ticks',
      '2',
      '--interval',
      '300ms',
    ])
    expect(r.code).toBe(0)
  })

  test('the text table says how the ready hosts collect on its summary line', async () => {
    const r = await runKay(['fleet', '--all-config-hosts', ...fx.connArgs, '--ticks', '1'], { timeoutMs: 30_000 })
    expect(r.code).toBe(0)
    expect(r.stdout.split('\n')[0]).toMatch(new RegExp(`^${HOSTS} ready \\(${HOSTS} streaming\\) · 0 connecting`))
  })
})
