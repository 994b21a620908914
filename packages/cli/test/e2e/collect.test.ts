/**
 * `kay collect --json` end to end: the CLI as a child process against 200 simulated hosts in this process,
 * some of them faulty. Checks the NDJSON contract (every host once, stable error codes, a summary) and the exit code.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type FleetFixture, killRunning, ndjson, runKay, startFixture } from './support/kay.js'

const HOSTS = 200
const REFUSED = [9, 49, 149]
const BINARY = 76
const PASSWORD_ONLY = 119

let fx: FleetFixture

beforeAll(async () => {
  const hostOverrides: Record<number, object> = {
    [BINARY]: { procFault: 'binary' },
    [PASSWORD_ONLY]: { passwordOnly: true },
  }
  for (const i of REFUSED) hostOverrides[i] = { refuse: true }
  fx = await startFixture(HOSTS, { hostOverrides })
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

const collect = () =>
  runKay(
    ['collect', '--json', '--all-config-hosts', ...fx.connArgs, '--connect-timeout', '10s', '--sample-gap', '200ms'],
    {
      timeoutMs: 40_000,
    },
  )

type HostObj = { host: string; ok: boolean; state: string; error?: { code: string; message: string }; metrics?: object }
type Summary = { summary: true; hosts: number; ok: number; failed: number; byCode: Record<string, number> }

function split(stdout: string): { hosts: HostObj[]; summary: Summary } {
  const objs = ndjson(stdout)
  const last = objs.at(-1) as Summary
  return { hosts: objs.slice(0, -1) as unknown as HostObj[], summary: last }
}

// Several CLI runs per test; the bound is for an overloaded machine, a normal run takes a few seconds.
describe('kay collect --json against 200 simulated hosts', { timeout: 120_000 }, () => {
  test('reports every host exactly once with a stable error code, a summary, and exit 4 when auth failed', async () => {
    const r = await collect()
    const { hosts, summary } = split(r.stdout)
    expect(hosts.map((h) => h.host).sort()).toEqual([...fx.names].sort())
    expect(summary).toMatchObject({ summary: true, hosts: HOSTS, ok: HOSTS - 5, failed: 5 })

    const byHost = new Map(hosts.map((h) => [h.host, h]))
    for (const i of REFUSED) {
      const h = byHost.get(fx.names[i]!)!
      expect(h.ok).toBe(false)
      expect(h.error?.code).toBe('KAY_CONNECT_FAILED')
    }
    expect(byHost.get(fx.names[BINARY]!)?.error?.code).toBe('KAY_PARSE_ERROR')
    expect(byHost.get(fx.names[PASSWORD_ONLY]!)?.error?.code).toBe('KAY_AUTH_FAILED')
    for (const h of hosts) {
      if (h.error) expect(h.error.code).toMatch(/^KAY_[A-Z_]+$/)
      else expect(h.metrics).toBeDefined()
    }
    expect(summary.byCode).toEqual({ KAY_CONNECT_FAILED: 3, KAY_PARSE_ERROR: 1, KAY_AUTH_FAILED: 1 })
    expect(r.code).toBe(4)
    // The simulator never saw a password attempt: kay offers public keys only.
    expect(fx.fleet.stats().totals.passwordAttempts).toBe(0)
  })

  test('exits 2 when hosts are unreachable but none failed auth, and 0 when every host answers', async () => {
    fx.fleet.setFault(PASSWORD_ONLY, { passwordOnly: false })
    const unreachable = await collect()
    expect(split(unreachable.stdout).summary).toMatchObject({ hosts: HOSTS, failed: 4 })
    expect(unreachable.code).toBe(2)

    for (const i of REFUSED) fx.fleet.setFault(i, { refuse: false })
    fx.fleet.setFault(BINARY, { procFault: 'none' })
    const fine = await collect()
    const { hosts, summary } = split(fine.stdout)
    expect(summary).toMatchObject({ hosts: HOSTS, ok: HOSTS, failed: 0, byCode: {} })
    expect(hosts.every((h) => h.ok && h.state === 'ready')).toBe(true)
    expect(fine.code).toBe(0)
  })
})
