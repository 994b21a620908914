/**
 * DNS never holds a dial slot (DESIGN.md invariant 10), against real sshd: a fleet where 999 names fail to resolve,
 * slowly, and three good hosts come last in the list. The names are made up and resolved only by the injected
 * lookup (tests never query a real DNS server); the good ones resolve to the sshd instances on loopback.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostTarget, LookupFn } from '@kay/core'
import { type ClientKey, makeClientKey, requireSshd, type SshdServer, startSshd, until } from '@kay/core/testing'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { Supervisor } from '../src/supervisor.js'

const BAD = 999
const GOOD = 3
/** How long a bad name takes to fail: a resolver timing out. */
const SLOW_FAIL_MS = 4000

let dir: string
let key: ClientKey
const good: SshdServer[] = []
let sup: Supervisor | undefined

beforeAll(async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-dns-'))
  key = await makeClientKey(dir)
  for (let i = 0; i < GOOD; i++) good.push(await startSshd({ authorizedKeys: [key.publicKey] }))
})

afterAll(async () => {
  await sup?.stop()
  await Promise.all(good.map((s) => s.stop()))
  if (dir) await rm(dir, { recursive: true, force: true })
})

it('good hosts behind 999 slowly failing names are ready before any of those lookups ends; the bad names report KAY_RESOLVE_FAILED every tick, from the cache', async () => {
  const address = new Map(good.map((s, i) => [`good-${i}.kay.test`, s.host]))
  let failed = 0
  let badLookups = 0
  const lookup: LookupFn = (hostname, signal) => {
    const ip = address.get(hostname)
    if (ip !== undefined) return Promise.resolve({ address: ip, family: 4 })
    badLookups++
    return new Promise((_, reject) => {
      const t = setTimeout(() => {
        failed++
        reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }))
      }, SLOW_FAIL_MS)
      signal.addEventListener('abort', () => {
        clearTimeout(t)
        reject(new Error('aborted'))
      })
    })
  }
  const target = (id: string, hostname: string, port: number): HostTarget => ({ id, hostname, port, user: 'kaytest' })
  // The worst order: every bad name first, the good hosts last.
  const hosts = [
    ...Array.from({ length: BAD }, (_, i) => target(`bad-${i}`, `bad-${i}.kay.test`, 22)),
    ...good.map((s, i) => target(`good-${i}`, `good-${i}.kay.test`, s.port)),
  ]
  sup = await Supervisor.start({
    hosts,
    identity: { username: 'kaytest', keyFiles: [key.privateKeyPath] },
    trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    dns: { lookup, timeoutMs: 10_000 },
  })
  const goodIds = good.map((_, i) => `good-${i}`)
  const state = (id: string) => sup!.statuses().find((s) => s.id === id)
  await until('the good hosts ready', () => goodIds.every((id) => state(id)?.state === 'ready'), 30_000)
  // They did not wait behind a single slow failure.
  expect(failed).toBe(0)

  await until('every bad name failed', () => failed === BAD, 30_000)
  for (let tick = 0; tick < 2; tick++) {
    const t = await sup.collect({ timeoutMs: 5000 })
    expect(t.hosts).toHaveLength(BAD + GOOD)
    for (const h of t.hosts) {
      if (goodIds.includes(h.host)) expect(h.metrics?.cpus, h.host).toBeGreaterThan(0)
      else expect(h.status.lastError?.code, h.host).toBe('KAY_RESOLVE_FAILED')
    }
  }
  // Redials of the bad hosts were answered from the negative cache: one lookup per name.
  expect(badLookups).toBe(BAD)
  expect(sup.stats().dialsInFlight).toBe(0)
})
