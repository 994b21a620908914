/**
 * `kay exec` end to end against 200 simulated hosts: NDJSON per host, exit codes, `--prefix` and `--collate`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type FleetFixture, killRunning, ndjson, runKay, startFixture } from './support/kay.js'

const HOSTS = 200
const REFUSED = [4, 104]

let fx: FleetFixture

beforeAll(async () => {
  fx = await startFixture(HOSTS)
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

/** `kay exec` on every host, or on the hosts named by `hosts` (a pdsh-style expression). */
const exec = (flags: string[], command: string[], hosts?: string) =>
  runKay(
    [
      'exec',
      ...(hosts === undefined ? ['--all-config-hosts'] : [hosts]),
      ...fx.connArgs,
      // Generous: healthy hosts connect in milliseconds and refused ones fail at once, so this only matters when
      // the machine is overloaded (it bounds the wait, it does not add to it).
      '--connect-timeout',
      '10s',
      ...flags,
      '--',
      ...command,
    ],
    { timeoutMs: 40_000 },
  )

type ExecObj = { host: string; ok: boolean; exitCode: number | null; stdout: string; error?: { code: string } }

// Several CLI runs per test; the bound is for an overloaded machine, a normal run takes a few seconds.
describe('kay exec against 200 simulated hosts', { timeout: 120_000 }, () => {
  test('exec --json -- hostname prints one object per host whose stdout is its name, and exits 0', async () => {
    const r = await exec(['--json'], ['hostname'])
    const objs = ndjson(r.stdout) as unknown as ExecObj[]
    expect(objs.map((o) => o.host).sort()).toEqual([...fx.names].sort())
    for (const o of objs) {
      expect(o).toMatchObject({ ok: true, exitCode: 0, stdout: `${o.host}\n` })
    }
    expect(r.code).toBe(0)
  })

  test('hosts that refuse connections get an error object and exit 2; a failing command wins with exit 5', async () => {
    for (const i of REFUSED) fx.fleet.setFault(i, { refuse: true })
    try {
      const r = await exec(['--json'], ['hostname'])
      const objs = ndjson(r.stdout) as unknown as ExecObj[]
      expect(objs).toHaveLength(HOSTS)
      const failed = objs.filter((o) => !o.ok)
      expect(failed.map((o) => o.host).sort()).toEqual(REFUSED.map((i) => fx.names[i]!).sort())
      for (const o of failed) expect(o.error?.code).toBe('KAY_CONNECT_FAILED')
      expect(r.code).toBe(2)

      // Exit status 5 (remote command failed) outranks 2 (unreachable).
      const f = await exec(['--json'], ['false'])
      const fo = ndjson(f.stdout) as unknown as ExecObj[]
      expect(fo.filter((o) => o.exitCode === 1)).toHaveLength(HOSTS - REFUSED.length)
      expect(f.code).toBe(5)
    } finally {
      for (const i of REFUSED) fx.fleet.setFault(i, { refuse: false })
    }
  })

  test('exec -- false exits 5 when every host is reachable', async () => {
    const r = await exec(['--json'], ['false'], 'sim[0001-0020]')
    const objs = ndjson(r.stdout)
    expect(objs).toHaveLength(20)
    expect(objs.every((o) => o.exitCode === 1 && o.ok === false)).toBe(true)
    expect(r.code).toBe(5)
  })

  test('--prefix prints host: line for every line, each host in one uninterrupted block', async () => {
    const r = await exec(['--prefix'], ['cat', '/proc/meminfo'])
    expect(r.code).toBe(0)
    const lines = r.stdout.split('\n').filter((l) => l !== '')
    const names = new Set(fx.names)
    const order: string[] = []
    const seen = new Set<string>()
    for (const line of lines) {
      const m = /^(sim\d{4}): (.*)$/.exec(line)
      expect(m, line).not.toBeNull()
      const host = m![1]!
      expect(names.has(host)).toBe(true)
      if (order.at(-1) !== host) {
        // A host's block starts once: no other host's line lands in the middle of it.
        expect(seen.has(host), `${host} output interleaved`).toBe(false)
        seen.add(host)
        order.push(host)
      }
    }
    expect(order.sort()).toEqual([...fx.names].sort())
    for (const host of fx.names) {
      const own = lines.filter((l) => l.startsWith(`${host}: `))
      expect(own[0]).toMatch(new RegExp(`^${host}: MemTotal: +\\d+ kB$`))
      expect(own.length).toBeGreaterThan(5)
    }
  })

  test('--collate groups hosts with identical output under one folded host list', async () => {
    const r = await exec(['--collate'], ['echo', 'same', 'everywhere'], 'sim[0001-0040,0051-0060]')
    expect(r.code).toBe(0)
    expect(r.stdout).toBe(
      '----------------\nsim[0001-0040,0051-0060] (50 hosts) exit 0\n----------------\nsame everywhere\n',
    )
  })
})
