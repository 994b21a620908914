/**
 * Faults against real OpenSSH sshd, through the Supervisor (the public API): a killed sshd, MaxStartups pushback
 * on a shared sshd, MaxSessions on one connection, a rotated host key. Each test starts its own sshd instances on
 * loopback; CI installs sshd (.ci/setup-sshd.sh), so these never skip.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostStatus, HostTarget } from '@kay/core'
import {
  type ClientKey,
  descendantsOf,
  makeClientKey,
  processTable,
  requireSshd,
  SSHD_LOG,
  type SshdServer,
  startSshd,
  until,
} from '@kay/core/testing'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type CollectTick, Supervisor, type SupervisorOptions } from '../../src/supervisor.js'

let dir: string
let key: ClientKey
let sup: Supervisor | undefined
const servers: SshdServer[] = []

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-faults-'))
  key = await makeClientKey(dir)
})

afterEach(async () => {
  await sup?.stop()
  sup = undefined
  await Promise.all(servers.splice(0).map((s) => s.stop()))
})

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function sshd(opts: Parameters<typeof startSshd>[0] = {}): Promise<SshdServer> {
  const s = await startSshd({ authorizedKeys: [key.publicKey], ...opts })
  servers.push(s)
  return s
}

function target(id: string, s: SshdServer): HostTarget {
  return { id, hostname: s.host, port: s.port, user: s.user }
}

async function supervise(hosts: HostTarget[], extra: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  sup = await Supervisor.start({
    hosts,
    threads: 2,
    identity: { username: 'kaytest', keyFiles: [key.privateKeyPath] },
    trust: { knownHostsPath: join(dir, `known_hosts-${Date.now()}`), policy: 'accept-new' },
    backoff: { baseMs: 50, capMs: 400 },
    ...extra,
  })
  return sup
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Waits on the shards' own stats (refreshed on every check), not on the parent's last copy. */
function settled(s: Supervisor, cond: () => boolean, ms: number, what: string): Promise<boolean> {
  return until(
    what,
    async () => {
      await s.refreshStats()
      return cond()
    },
    ms,
  )
}

function statusOf(s: Supervisor, id: string): HostStatus {
  const st = s.statuses().find((x) => x.id === id)
  if (!st) throw new Error(`no status for ${id}`)
  return st
}

/** Every host of the fleet exactly once per tick: metrics or a typed error, never both, never neither. */
function expectComplete(tick: CollectTick, ids: string[]): void {
  expect(tick.hosts.map((h) => h.host).sort()).toEqual([...ids].sort())
  for (const h of tick.hosts) {
    expect(h.metrics === undefined).toBe(h.error !== undefined)
    if (h.error) expect(h.error.code).toMatch(/^KAY_[A-Z_]+$/)
  }
}

/** SIGKILL an sshd listener and every process below it (its established connections), by pid. */
async function killSshd(s: SshdServer): Promise<void> {
  const tree = [s.pid, ...descendantsOf(await processTable(), s.pid).map((p) => p.pid)]
  for (const pid of tree) kill(pid)
}

/** SIGKILL by pid; a process that exited since the table was read is fine. */
function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

describe('Supervisor against real sshd faults', () => {
  it('keeps collecting the healthy hosts while one sshd is killed, and reconnects it with backoff after restart', async () => {
    const s = await Promise.all([sshd(), sshd(), sshd()])
    const ids = ['k0', 'k1', 'k2']
    const sv = await supervise(
      s.map((x, i) => target(ids[i]!, x)),
      { keepalive: { intervalMs: 500, probeDeadlineMs: 500 } },
    )
    await settled(sv, () => sv.stats().byState.ready === 3, 10_000, 'all 3 ready')
    const handshakes = ids.map((id) => statusOf(sv, id).handshakes)
    expect(handshakes).toEqual([1, 1, 1])

    await killSshd(s[1]!)
    // The outage: tick continuously; every tick reports every host, the down one with a typed error.
    let downTicks = 0
    const end = Date.now() + 10_000
    while (downTicks < 8) {
      if (Date.now() > end) throw new Error(`only ${downTicks} ticks saw k1 down`)
      const tick = await sv.collect({ timeoutMs: 2000 })
      expectComplete(tick, ids)
      for (const id of ['k0', 'k2']) expect(tick.hosts.find((h) => h.host === id)?.metrics).toBeDefined()
      const down = tick.hosts.find((h) => h.host === 'k1')!
      // Right after the kill the actor may not have seen the close yet: that tick fails with some typed error.
      // Once it has, the host is reported at once as not ready, with its state and next retry time.
      const state = down.error?.details?.state
      if (down.error?.code === 'KAY_NOT_READY' && (state === 'backoff' || state === 'dialing')) {
        downTicks++
        if (state === 'backoff') expect(down.error.details?.nextRetryAt).toBeTypeOf('number')
      }
      await sleep(50)
    }
    await sv.refreshStats()
    const out = statusOf(sv, 'k1')
    expect(out.state).not.toBe('ready')
    expect(out.lastError?.code).toMatch(/^KAY_(CONNECT_FAILED|CONNECTION_LOST)$/)
    // Redials happened, spaced by backoff (a tight loop would be hundreds of dials in this time).
    expect(out.attempts).toBeGreaterThanOrEqual(2)
    expect(out.handshakes).toBeLessThan(60)

    await s[1]!.restart()
    await settled(sv, () => sv.stats().byState.ready === 3, 10_000, 'k1 ready again')
    const tick = await sv.collect({ timeoutMs: 5000 })
    expectComplete(tick, ids)
    expect(tick.hosts.every((h) => h.metrics !== undefined)).toBe(true)
    // The healthy hosts were never redialed.
    expect(statusOf(sv, 'k0').handshakes).toBe(1)
    expect(statusOf(sv, 'k2').handshakes).toBe(1)
    expect(await s[0]!.count(SSHD_LOG.acceptedPublickey)).toBe(1)
    expect(await s[2]!.count(SSHD_LOG.acceptedPublickey)).toBe(1)
  })

  it('brings 12 hosts behind one MaxStartups 3 sshd all to ready: pushback slows dials, none is lost', async () => {
    const s = await sshd({ maxStartups: 3 })
    const ids = Array.from({ length: 12 }, (_, i) => `ms${i}`)
    const sv = await supervise(
      ids.map((id) => target(id, s)),
      { dialCap: 16, governor: true, backoff: { baseMs: 50, capMs: 1000 } },
    )
    await settled(sv, () => sv.stats().byState.ready === 12, 20_000, 'all 12 ready')
    const drops = await s.count(SSHD_LOG.maxStartupsDrop)
    const st = sv.stats()
    // sshd really pushed back (dropped dials past MaxStartups), and the gate saw it as pressure.
    expect(drops + st.pressureEvents).toBeGreaterThan(0)
    // A dial sshd dropped is seen as pushback by the governor, which then lowers the effective cap.
    if (drops > 0) expect(st.pressureEvents).toBeGreaterThan(0)
    expect(st.byState).toEqual({ ready: 12 })
    // Exactly one authenticated connection per host: nothing lost, nothing doubled.
    expect(await s.count(SSHD_LOG.acceptedPublickey)).toBe(12)
    const tick = await sv.collect({ timeoutMs: 5000 })
    expectComplete(tick, ids)
    expect(tick.hosts.filter((h) => h.metrics)).toHaveLength(12)
  })

  it('runs 10 commands at once on one host behind MaxSessions 2: all queue and succeed on one connection', async () => {
    const s = await sshd({ maxSessions: 2 })
    const sv = await supervise([target('sess', s)], { threads: 1, collectMode: 'exec' })
    await settled(sv, () => sv.stats().byState.ready === 1, 10_000, 'ready')
    const rs = await Promise.all(
      Array.from({ length: 10 }, (_, i) => sv.run('sess', `echo s${i}`, { timeoutMs: 10_000 })),
    )
    expect(rs.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 10 }, (_, i) => `s${i}`))
    expect(rs.every((r) => r.exitCode === 0)).toBe(true)
    await s.waitForCount(SSHD_LOG.startingSession, 10)
    expect(await s.count(SSHD_LOG.acceptedPublickey)).toBe(1)
    await sv.refreshStats()
    expect(statusOf(sv, 'sess').handshakes).toBe(1)
  })

  it('quarantines only the host whose key rotated on restart, with both fingerprints, and never rewrites the pins', async () => {
    const s = await Promise.all([sshd(), sshd(), sshd()])
    const ids = ['h0', 'h1', 'h2']
    const knownHostsPath = join(dir, 'rotation_known_hosts')
    const sv = await supervise(
      s.map((x, i) => target(ids[i]!, x)),
      { trust: { knownHostsPath, policy: 'accept-new' } },
    )
    await settled(sv, () => sv.stats().byState.ready === 3, 10_000, 'all 3 ready')
    const pins = await readFile(knownHostsPath)
    const oldFp = s[1]!.fingerprint

    await s[1]!.restart({ newHostKey: true })
    await settled(sv, () => statusOf(sv, 'h1').state === 'quarantined', 10_000, 'h1 quarantined')
    const err = statusOf(sv, 'h1').lastError!
    expect(err.code).toBe('KAY_HOST_KEY_MISMATCH')
    expect(err.details).toMatchObject({ expected: [oldFp], offered: s[1]!.fingerprint })
    expect(oldFp).not.toBe(s[1]!.fingerprint)
    expect(Buffer.compare(await readFile(knownHostsPath), pins)).toBe(0)

    const tick = await sv.collect({ timeoutMs: 5000 })
    expectComplete(tick, ids)
    expect(tick.hosts.find((h) => h.host === 'h1')?.error?.details?.state).toBe('quarantined')
    for (const id of ['h0', 'h2']) {
      expect(tick.hosts.find((h) => h.host === id)?.metrics).toBeDefined()
      expect(statusOf(sv, id)).toMatchObject({ state: 'ready', handshakes: 1 })
    }
    // Quarantine is terminal: no redial loop against the changed key.
    const dials = statusOf(sv, 'h1').handshakes
    await sleep(600)
    await sv.refreshStats()
    expect(statusOf(sv, 'h1')).toMatchObject({ state: 'quarantined', handshakes: dials })
  })
})
