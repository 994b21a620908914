/**
 * exec across the thread boundary, against the simulator: streamed output batched per shard per short window, one
 * result per host after its output, a rolling stop, interrupts. (The batch limit is counted on real hosts in the CLI's
 * sshd tests.)
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalDialGate, loadIdentity, parsePrivateKey } from '@kay/core'
import { generateClientKey, type SimFleet, startSimFleet } from '@kay/core/sim'
import { until } from '@kay/core/testing'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { ShardMessage } from '../src/protocol.js'
import { Shard, type ShardPort } from '../src/shard.js'
import { type ExecEvent, Supervisor } from '../src/supervisor.js'

let dir: string
let key: ReturnType<typeof generateClientKey>
let fleet: SimFleet
const running: Supervisor[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-exec-stream-'))
  key = generateClientKey()
  fleet = await startSimFleet({ hosts: 24, authorizedKeys: [key.publicKey] })
})

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop({ timeoutMs: 3000 })))
})

afterAll(async () => {
  await fleet?.close()
  await rm(dir, { recursive: true, force: true })
})

const names = () => fleet.hosts.map((h) => h.name)

let pins = 0
async function supervise(): Promise<Supervisor> {
  const sup = await Supervisor.start({
    hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })),
    threads: 2,
    identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
    trust: { knownHostsPath: join(dir, `known_hosts.${++pins}`), policy: 'accept-new' },
    collectMode: 'exec',
  })
  running.push(sup)
  await until('every host ready', () => (sup.stats().byState.ready ?? 0) === fleet.hosts.length, 30_000)
  return sup
}

async function collect(events: AsyncIterable<ExecEvent>): Promise<ExecEvent[]> {
  const out: ExecEvent[] = []
  for await (const e of events) out.push(e)
  return out
}

const resultOf = (events: ExecEvent[], host: string) =>
  events.flatMap((e) => (e.type === 'result' && e.result.host === host ? [e.result] : []))

describe('Supervisor.execStream against the simulator', () => {
  it("streams each host's output before its one result, every byte of it", async () => {
    const sup = await supervise()
    const events = await collect(sup.execStream(names(), 'flood 300000', { stream: true }))
    for (const host of names()) {
      const mine = events.filter((e) => (e.type === 'output' ? e.host : e.result.host) === host)
      expect(mine.at(-1)?.type, host).toBe('result')
      expect(resultOf(events, host)).toHaveLength(1)
      expect(resultOf(events, host)[0]).toMatchObject({ result: { exitCode: 0, stdout: '' } })
      const bytes = mine.reduce((n, e) => n + (e.type === 'output' ? e.data.length : 0), 0)
      expect(bytes, host).toBe(300_000)
    }
  })

  it('stops a rolling run after N failures: hosts not started are KAY_SKIPPED and never run anything', async () => {
    const sup = await supervise()
    const before = fleet.stats().hosts.map((h) => h.commands)
    const results = []
    for await (const r of sup.exec(names(), 'exit 3', { batch: 2, stopAfterFailures: 1 })) results.push(r)
    expect(results.map((r) => r.host).sort()).toEqual([...names()].sort())
    const skipped = results.filter((r) => r.error?.code === 'KAY_SKIPPED')
    // Two started (the batch), the first failure stopped the run: the other 22 never started.
    expect(skipped).toHaveLength(22)
    expect(results.filter((r) => r.result?.exitCode === 3)).toHaveLength(2)
    const after = fleet.stats().hosts.map((h) => h.commands)
    for (const r of skipped) {
      const i = names().indexOf(r.host)
      expect(after[i], r.host).toBe(before[i])
      expect(r.error?.message).toMatch(/not run: the rolling run stopped after 1 failed host/)
    }
  })

  it('answers every host KAY_ABORTED on interrupt: running ones stopped, waiting ones never started', async () => {
    const sup = await supervise()
    const ac = new AbortController()
    const results: string[] = []
    const before = fleet.stats().totals.commands
    const done = (async () => {
      for await (const r of sup.exec(names(), 'sleep 30', { batch: 6, signal: ac.signal })) {
        results.push(`${r.host} ${r.error?.code ?? 'ok'} ${r.error?.message ?? ''}`)
      }
    })()
    await until('six commands running', () => fleet.stats().totals.commands - before === 6, 10_000)
    ac.abort()
    await done
    expect(results).toHaveLength(24)
    expect(results.every((r) => r.includes('KAY_ABORTED'))).toBe(true)
    expect(results.filter((r) => r.includes('before it started'))).toHaveLength(18)
    expect(fleet.stats().totals.commands - before).toBe(6)
  })

  it('without streaming, keeps what a host printed before it failed in `partial`', async () => {
    const sup = await supervise()
    const out = []
    for await (const r of sup.exec(names().slice(0, 3), 'flood 100000', { maxOutputBytes: 1000 })) out.push(r)
    expect(out).toHaveLength(3)
    for (const r of out) {
      expect(r.error?.code).toBe('KAY_OUTPUT_LIMIT')
      expect(r.partial?.stdout).toHaveLength(1000)
      expect(r.partial?.stdout.startsWith('kay flood')).toBe(true)
      expect(r.durationMs).toBeGreaterThanOrEqual(0)
    }
  })

  it('answers hosts it does not manage with KAY_UNKNOWN_HOST without counting them in flight', async () => {
    const sup = await supervise()
    const out = []
    for await (const r of sup.exec(['nope', names()[0]!], 'true', { batch: 1 })) out.push(r)
    expect(out.map((r) => [r.host, r.error?.code ?? r.result?.exitCode])).toEqual([
      ['nope', 'KAY_UNKNOWN_HOST'],
      [names()[0], 0],
    ])
  })
})

describe('the shard batches streamed output across the thread boundary', () => {
  it('sends far fewer messages than the SSH data packets it received, chunks before their host result', async () => {
    const messages: ShardMessage[] = []
    const port: ShardPort = { postMessage: (m) => messages.push(m) }
    const identity = await loadIdentity({ username: 'kay', identityFiles: [], defaultIdentityFiles: [] })
    identity.keys = [parsePrivateKey(key.privateKey, 'inline')]
    const shard = new Shard(
      port,
      {
        identity: { username: 'kay', keyFiles: [] },
        trust: { knownHostsPath: join(dir, 'kh-shard'), extraKnownHosts: [], policy: 'accept-new' },
        actor: {
          handshakeTimeoutMs: 10_000,
          keepaliveIntervalMs: 15_000,
          probeDeadlineMs: 5_000,
          maxChannels: 4,
          backoff: { baseMs: 50, capMs: 500, stableAfterMs: 10_000 },
        },
        collect: { mode: 'exec', dfEvery: 12 },
        eventWindowMs: 50,
        dialRatePerSec: 0,
        testHooks: false,
      },
      { gate: new LocalDialGate({ cap: 8 }), identity, verifier: { verify: async () => ({ kind: 'trusted' }) } },
    )
    try {
      shard.add(fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })))
      await until('all ready', () => messages.some((m) => m.type === 'events') && readyCount(messages) === 24, 30_000)
      messages.length = 0
      const bytes = 400_000
      await shard.exec({ type: 'exec', id: 7, hosts: names(), command: `flood ${bytes}`, opts: { stream: true } })
      const items = messages.filter((m): m is ShardMessage & { type: 'exec-items' } => m.type === 'exec-items')
      expect(items.at(-1)?.done).toBe(true)
      // ssh2 carries channel data in packets of at most 32 KiB: each host's flood alone is ≥ 13 of them.
      const packets = 24 * Math.ceil(bytes / 32_768)
      expect(items.length).toBeLessThan(packets / 4)
      let total = 0
      const finished = new Set<string>()
      for (const m of items) {
        for (const c of m.chunks ?? []) {
          expect(finished.has(c.host)).toBe(false)
          total += c.data.length
        }
        for (const it of m.items) finished.add(it.host)
      }
      expect(total).toBe(24 * bytes)
      expect(finished.size).toBe(24)
    } finally {
      await shard.stop(99)
    }
  })
})

function readyCount(messages: ShardMessage[]): number {
  const last = new Map<string, string>()
  for (const m of messages)
    if (m.type === 'events') for (const e of m.events) if (e.kind === 'state') last.set(e.status.id, e.status.state)
  return [...last.values()].filter((s) => s === 'ready').length
}
