/**
 * Cold start and session budget through the CLI against real OpenSSH sshd hosts on loopback, co-located with kay
 * (DESIGN.md invariant 10, issue #19, docs/adr/0008-cold-start-converges.md):
 * - `kay fleet --json --interval 1s` over 100 hosts reaches stream mode on every host and then reports every host ok
 *   every tick, with no host ever left out of a tick and one session per host (the stream);
 * - a host whose login takes 1.5 s (longer than the tick) still reaches stream mode;
 * - `kay collect` against MaxSessions 1 and 2 succeeds 20 runs out of 20, and `kay top` drills in while the stream
 *   is up on both.
 * These assert convergence and that nothing is lost, not timings: the timings are bench/load/fleet-cold-start.ts's.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  type ClientKey,
  makeClientKey,
  requireSshd,
  SSHD_LOG,
  type SshdFleet,
  type SshdServer,
  startSshd,
  startSshdFleet,
} from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConvergenceTracker, spawnKayFleet } from './support/fleet-run.js'
import { killRunning, runKay } from './support/kay.js'

let dir: string
let key: ClientKey

beforeAll(async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-cold-'))
  key = await makeClientKey(dir)
  await writeFile(join(dir, 'ssh_config'), '')
})

afterAll(async () => {
  killRunning()
  await rm(dir, { recursive: true, force: true })
})

/** Flags that point kay at `servers` with the test key and a pin file of its own. */
async function conn(name: string, servers: readonly SshdServer[]): Promise<string[]> {
  const hostfile = join(dir, `${name}.hosts`)
  await writeFile(hostfile, `${servers.map((s) => `${s.user}@${s.host}:${s.port}`).join('\n')}\n`)
  return [
    '--hostfile',
    hostfile,
    '--ssh-config',
    join(dir, 'ssh_config'),
    '-i',
    key.privateKeyPath,
    '--known-hosts',
    join(dir, `${name}.known_hosts`),
  ]
}

async function sessions(servers: readonly SshdServer[]): Promise<number> {
  let n = 0
  for (const s of servers) n += await s.count(SSHD_LOG.startingSession)
  return n
}

/** `kay fleet --json` until it exits; every tick folded into a tracker. */
async function fleetRun(hosts: number, args: string[], maxMs: number): Promise<ConvergenceTracker> {
  const tracker = new ConvergenceTracker(hosts)
  const run = spawnKayFleet(args, (o) => tracker.add(o))
  const guard = setTimeout(() => run.child.kill('SIGKILL'), maxMs)
  try {
    const code = await run.exited
    if (typeof code !== 'number') throw new Error(`kay fleet was killed (${code}): ${run.stderr()}`)
    return tracker
  } finally {
    clearTimeout(guard)
  }
}

describe('cold start over real sshd hosts', { timeout: 180_000 }, () => {
  it('100 hosts at --interval 1s: every host reaches its stream, then every host is ok every tick', async () => {
    let fleet: SshdFleet | undefined
    try {
      fleet = await startSshdFleet({ count: 100, authorizedKeys: [key.publicKey] })
      const args = [...(await conn('hundred', fleet.servers)), '--interval', '1s', '--ticks', '25']
      const t = await fleetRun(100, args, 120_000)
      expect(t.ticks.length).toBe(25)
      // Nothing lost: every host is in every tick, as metrics or a typed error.
      expect(t.lost).toBe(0)
      expect(t.converged).toBeDefined()
      expect(t.ticksAfter).toBeGreaterThanOrEqual(5)
      expect(t.failedAfter).toBe(0)
      // No session was killed and restarted: the stream is (about) the only session each host opened.
      expect(await sessions(fleet.servers)).toBeLessThanOrEqual(110)
    } finally {
      await fleet?.stop()
    }
  })

  it('a host whose login takes 1.5 s, longer than the 1 s tick, still reaches its stream and stays there', async () => {
    let fleet: SshdFleet | undefined
    try {
      fleet = await startSshdFleet({ count: 3, authorizedKeys: [key.publicKey], slowLogin: { sleepMs: 1500 } })
      const args = [...(await conn('slow', fleet.servers)), '--interval', '1s', '--ticks', '8']
      const t = await fleetRun(3, args, 60_000)
      expect(t.lost).toBe(0)
      expect(t.converged).toBeDefined()
      expect(t.ticksAfter).toBeGreaterThanOrEqual(3)
      expect(t.failedAfter).toBe(0)
      // One session per host: the stream, never an exec started and killed per tick.
      expect(await sessions(fleet.servers)).toBe(3)
    } finally {
      await fleet?.stop()
    }
  })
})

describe('the session budget: MaxSessions 1 and 2', { timeout: 180_000 }, () => {
  let one: SshdServer
  let two: SshdServer

  beforeAll(async () => {
    one = await startSshd({ authorizedKeys: [key.publicKey], maxSessions: 1 })
    two = await startSshd({ authorizedKeys: [key.publicKey], maxSessions: 2 })
  })

  afterAll(async () => {
    await one?.stop()
    await two?.stop()
  })

  it('kay collect succeeds 20 runs out of 20 on each (the stream never takes the session a tick needs)', async () => {
    const runs = async (s: SshdServer, name: string) => {
      // A short gap: the second sample comes while a probe started after the first would still be opening.
      const args = ['collect', '--json', ...(await conn(name, [s])), '--sample-gap', '20ms']
      const codes: Array<number | null> = []
      for (let i = 0; i < 20; i++) {
        const r = await runKay(args, { timeoutMs: 30_000 })
        if (r.code !== 0) throw new Error(`${name} run ${i + 1}: exit ${r.code}\n${r.stdout}\n${r.stderr}`)
        codes.push(r.code)
      }
      return codes
    }
    const [a, b] = await Promise.all([runs(one, 'max1'), runs(two, 'max2')])
    expect(a).toEqual(Array(20).fill(0))
    expect(b).toEqual(Array(20).fill(0))
  })

  it.each([
    ['1', () => one],
    ['2', () => two],
  ])('kay top drills in while the stream is up (MaxSessions %s)', async (max, server) => {
    const s = server()
    const before = await sessions([s])
    const r = await runKay(['top', `${s.user}@${s.host}:${s.port}`, ...(await conn(`top${max}`, [s])).slice(2)], {
      timeoutMs: 30_000,
    })
    expect(r.stderr).not.toMatch(/KAY_/)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('PROCESSES')
    // The stream opened first (kay top waits for it), then the two drill-ins, each on a session of its own.
    const opened = (await sessions([s])) - before
    if (max === '2') expect(opened).toBe(3)
    else expect(opened).toBeGreaterThanOrEqual(3)
  })
})
