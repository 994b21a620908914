import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostTarget } from '@kay/core'
import { generateClientKey, type SimFleet, startSimFleet } from '@kay/core/sim'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type FleetProgress, SettleTimeoutError, Supervisor, type SupervisorOptions } from '../src/index.js'

// The embedding contract: waitUntilSettled (deadline, progress, typed timeout), and what run() / exec() answer for
// a host that is not ready (the host's last cause travels with the refusal).

let dir: string
let key: ReturnType<typeof generateClientKey>
const running: Supervisor[] = []
const fleets: SimFleet[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-settle-'))
  key = generateClientKey()
})

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop({ timeoutMs: 2000 })))
  await Promise.all(fleets.splice(0).map((f) => f.close()))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function fleetOf(n: number): Promise<SimFleet> {
  const f = await startSimFleet({ hosts: n, authorizedKeys: [key.publicKey] })
  fleets.push(f)
  return f
}

const targets = (f: SimFleet): HostTarget[] =>
  f.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' }))

let pins = 0
async function supervise(hosts: HostTarget[], opts: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  const sup = await Supervisor.start({
    hosts,
    threads: 2,
    identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
    trust: { knownHostsPath: join(dir, `known_hosts.${++pins}`), policy: 'accept-new' },
    // A failed host backs off for a long time: the tests see its first failure, not a redial.
    backoff: { baseMs: 60_000, capMs: 60_000, stableAfterMs: 10_000 },
    ...opts,
  })
  running.push(sup)
  return sup
}

describe('Supervisor.waitUntilSettled', () => {
  it('resolves once every host collects or has failed, reporting progress on the way', async () => {
    const f = await fleetOf(6)
    f.setFault(5, { refuse: true })
    const seen: FleetProgress[] = []
    const sup = await supervise(targets(f))
    const p = await sup.waitUntilSettled({ timeoutMs: 30_000, onProgress: (q) => seen.push(q) })
    expect(p).toMatchObject({ hosts: 6, settled: true, connecting: 0, starting: 0, probing: 0, backoff: 1 })
    expect(p.streaming + p.exec).toBe(5)
    // The first report is where the fleet stood at the call; the last is the settled one returned.
    expect(seen.length).toBeGreaterThanOrEqual(1)
    expect(seen.at(-1)).toEqual(p)
    // Settled: a collect now has metrics for every host that connected, and the refused host's cause.
    const tick = await sup.collect({ timeoutMs: 5000 })
    expect(tick.hosts.filter((h) => h.metrics !== undefined)).toHaveLength(5)
    const down = tick.hosts.find((h) => h.host === f.hosts[5]!.name)!
    expect(down.error).toMatchObject({ code: 'KAY_NOT_READY', details: { lastError: { code: 'KAY_CONNECT_FAILED' } } })
    // Already settled: resolves at once with the same counts.
    await expect(sup.waitUntilSettled({ timeoutMs: 0 })).resolves.toMatchObject({ settled: true, backoff: 1 })
  })

  it('rejects past its deadline with a typed KAY_TIMEOUT that carries the progress and the pending hosts', async () => {
    const f = await fleetOf(3)
    f.setFault(0, { stallHandshake: true })
    const sup = await supervise(targets(f), { handshakeTimeoutMs: 60_000 })
    const err = await sup.waitUntilSettled({ timeoutMs: 1500 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(SettleTimeoutError)
    const e = err as SettleTimeoutError
    expect(e.code).toBe('KAY_TIMEOUT')
    expect(e.pending).toEqual([f.hosts[0]!.name])
    expect(e.progress).toMatchObject({ hosts: 3, connecting: 1, settled: false })
    expect(e.message).toContain(f.hosts[0]!.name)
    expect(e.toJSON().details).toMatchObject({ pending: [f.hosts[0]!.name], progress: { connecting: 1 } })
  })

  it('rejects KAY_ABORTED on its signal and KAY_CLOSED when the supervisor stops, leaving the fleet as it was', async () => {
    const f = await fleetOf(2)
    f.setFault(0, { stallHandshake: true })
    const sup = await supervise(targets(f), { handshakeTimeoutMs: 60_000 })
    const ac = new AbortController()
    const aborted = sup.waitUntilSettled({ timeoutMs: 60_000, signal: ac.signal })
    ac.abort()
    await expect(aborted).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    await expect(sup.waitUntilSettled({ timeoutMs: 60_000, signal: ac.signal })).rejects.toMatchObject({
      code: 'KAY_ABORTED',
    })
    const closed = sup.waitUntilSettled({ timeoutMs: 60_000 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    await sup.stop({ timeoutMs: 2000 })
    expect(await closed).toMatchObject({ code: 'KAY_CLOSED' })
    await expect(sup.waitUntilSettled({ timeoutMs: 1000 })).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    await expect(sup.waitUntilSettled({ timeoutMs: -1 })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })
})

describe('run() and exec() on a host that is not ready', () => {
  it('run() rejects KAY_NOT_READY at once, with the last cause as details.lastError, in the message and as cause', async () => {
    const f = await fleetOf(2)
    f.setFault(1, { refuse: true })
    const sup = await supervise(targets(f))
    await sup.waitUntilSettled({ timeoutMs: 30_000 })
    const down = f.hosts[1]!.name
    const err = await sup.run(down, 'true').then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({
      code: 'KAY_NOT_READY',
      host: down,
      details: { state: 'backoff', lastError: { code: 'KAY_CONNECT_FAILED' } },
      cause: { code: 'KAY_CONNECT_FAILED', host: down },
    })
    expect((err as Error).message).toMatch(
      new RegExp(`^${down}: not ready \\(backoff\\); last error KAY_CONNECT_FAILED: `),
    )
    // A ready host runs; exec answers every host exactly once, the down one with the same refusal.
    await expect(sup.run(f.hosts[0]!.name, 'echo hi')).resolves.toMatchObject({ exitCode: 0 })
    const results = []
    for await (const r of sup.exec([f.hosts[0]!.name, down], 'echo hi')) results.push(r)
    expect(results).toHaveLength(2)
    expect(results.find((r) => r.host === down)?.error).toMatchObject({
      code: 'KAY_NOT_READY',
      details: { lastError: { code: 'KAY_CONNECT_FAILED' } },
    })
    expect(results.find((r) => r.host === f.hosts[0]!.name)?.result).toMatchObject({ exitCode: 0 })
    await expect(sup.run('nope', 'true')).rejects.toMatchObject({ code: 'KAY_UNKNOWN_HOST' })
  })
})
