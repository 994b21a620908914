/**
 * kay's own commands (the one-shot collect and detail, every stream loop's start) against real OpenSSH sshd, with
 * each login shell sshd may run them under: dash, bash, zsh, fish, tcsh, csh and busybox sh (one test user per
 * shell, made by .ci/setup-sshd.sh). And a host whose account runs a ForceCommand instead of kay's command.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostCollector } from '../../src/collection/collector.js'
import { STREAM_FLAVOURS } from '../../src/collection/index.js'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import {
  type ClientKey,
  makeClientKey,
  requireSshd,
  SSHD_SHELL_USERS,
  type SshdServer,
  startSshd,
  until,
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import { memoryVerifier } from '../support/fixtures.js'

const TICKS = 4
const users = Object.values(SSHD_SHELL_USERS)

let dir: string
let key: ClientKey
let sshd: SshdServer
let forced: SshdServer
const open: Array<{ actor: HostActor; collector?: HostCollector }> = []

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the test users: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-login-shells-'))
  key = await makeClientKey(dir)
  sshd = await startSshd({ authorizedKeys: [key.publicKey], extraConfig: [`AllowUsers ${users.join(' ')}`] })
  forced = await startSshd({
    authorizedKeys: [key.publicKey],
    extraConfig: [
      `AllowUsers ${SSHD_SHELL_USERS.bash}`,
      `Match User ${SSHD_SHELL_USERS.dash}`,
      '  ForceCommand /bin/echo this account runs backups only',
      `Match User ${SSHD_SHELL_USERS.bash}`,
      '  ForceCommand /bin/false',
    ],
  })
})

afterAll(async () => {
  for (const { actor, collector } of open.splice(0)) {
    collector?.close()
    await actor.close()
  }
  await sshd?.stop()
  await forced?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function connect(server: SshdServer, user: string): Promise<HostActor> {
  const identity = await loadIdentity({ username: user, identityFiles: [key.privateKeyPath], agent: 'none' })
  const actor = new HostActor({
    target: { id: `${user}@${server.host}`, hostname: server.host, port: server.port, user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
    keepaliveIntervalMs: 0,
  })
  open.push({ actor })
  actor.start()
  await until(`${user} connected`, () => actor.state === 'ready' || actor.status().lastError, 10_000)
  expect(actor.status().lastError).toBeUndefined()
  return actor
}

function collectorOf(actor: HostActor, opts: ConstructorParameters<typeof HostCollector>[1]): HostCollector {
  const collector = new HostCollector(actor, opts)
  open.find((o) => o.actor === actor)!.collector = collector
  return collector
}

describe.each(Object.entries(SSHD_SHELL_USERS))('with %s as the login shell (user %s)', (_shell, user) => {
  it('collects over exec every tick, and the drill-in detail', async () => {
    const actor = await connect(sshd, user)
    const c = collectorOf(actor, { mode: 'exec' })
    // CPU % needs the host's jiffy counters to move between two samples: on a loaded machine two exec ticks can
    // read the same counters, so one tick of the run may lack it, but not all of them.
    let withCpu = 0
    for (let i = 0; i < TICKS; i++) {
      const m = await c.collect(10_000)
      expect(c.mode).toBe('exec')
      expect(m.cpus).toBeGreaterThan(0)
      expect(m.memTotalBytes).toBeGreaterThan(0)
      expect(m.rootFsUsedPct).toBeGreaterThanOrEqual(0)
      if (m.cpuPct !== undefined) {
        expect(m.cpuPct).toBeGreaterThanOrEqual(0)
        expect(m.cpuPct).toBeLessThanOrEqual(100)
        withCpu++
      }
    }
    expect(withCpu).toBeGreaterThanOrEqual(1)
    const d = await c.detail(10_000)
    expect(d.processes.length).toBeGreaterThan(0)
    expect(d.filesystems.some((f) => f.mount === '/')).toBe(true)
  })

  it.each(STREAM_FLAVOURS)('starts the %s stream loop and collects on it every tick', async (flavour) => {
    const actor = await connect(sshd, user)
    const c = collectorOf(actor, { flavours: [flavour] })
    // The stream is probed as soon as the connection is ready; the first tick waits for its first frame.
    await until(
      `stream-${flavour} up`,
      async () => {
        await c.collect(10_000)
        return c.mode === `stream-${flavour}`
      },
      15_000,
    )
    for (let i = 0; i < TICKS; i++) {
      const m = await c.collect(10_000)
      expect(c.mode).toBe(`stream-${flavour}`)
      expect(m.cpus).toBeGreaterThan(0)
      expect(m.memTotalBytes).toBeGreaterThan(0)
    }
  })
})

describe('a host whose account runs a ForceCommand', () => {
  it('answers every tick, over exec or stream, and the detail with KAY_UNEXPECTED_OUTPUT naming what it printed', async () => {
    const actor = await connect(forced, SSHD_SHELL_USERS.dash)
    for (const mode of ['exec', 'stream'] as const) {
      const c = collectorOf(actor, { mode, streamTimeoutMs: 500 })
      for (let i = 0; i < TICKS; i++) {
        const err = await c.collect(10_000).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(err).toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT', host: actor.id })
        expect((err as Error).message).toContain('printed: this account runs backups only')
        expect((err as Error).message).toContain('ForceCommand')
      }
      c.close()
    }
    const c = collectorOf(actor, { mode: 'exec' })
    await expect(c.detail(10_000)).rejects.toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT' })
    expect(actor.state).toBe('ready') // the connection is fine; only the command was not kay's
  })

  it('names the exit status when the forced command fails and prints nothing', async () => {
    const actor = await connect(forced, SSHD_SHELL_USERS.bash)
    const c = collectorOf(actor, { mode: 'exec' })
    const err = await c.collect(10_000).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ code: 'KAY_UNEXPECTED_OUTPUT', details: { exitCode: 1 } })
    expect((err as Error).message).toContain("kay's command failed on the host (exit 1)")
  })
})
