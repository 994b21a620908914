/**
 * Half-open paths against real OpenSSH sshd running in a network namespace this test creates (and deletes):
 * the path is cut without closing any socket, and the idle-only keepalive probe must notice within
 * interval + deadline; a slow but alive host must not be declared dead. Needs root (CI runs as root).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor, type HostActorOptions } from '../../src/actor.js'
import { LocalDialGate } from '../../src/dial-gate.js'
import {
  type ClientKey,
  createNetns,
  descendantsOf,
  makeClientKey,
  type NetNamespace,
  type NetnsSshd,
  netnsAvailable,
  processTable,
  requireSshd,
  SSHD_LOG,
  startSshdInNetns,
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import type { HostStatus, Identity } from '../../src/types.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

const INTERVAL_MS = 400
const DEADLINE_MS = 300
/** Scheduling slack: the `ip` call that cuts the link, timer lateness, the state event. */
const MARGIN_MS = 400

let dir: string
let key: ClientKey
let identity: Identity
let ns: NetNamespace | undefined
let srv: NetnsSshd | undefined
const actors: HostActor[] = []

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  if (!netnsAvailable()) throw new Error('half-open tests need root and iproute2 (ip netns); CI runs them as root')
  dir = await mkdtemp(join(tmpdir(), 'kay-halfopen-'))
  key = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
  ns = await createNetns()
  srv = await startSshdInNetns(ns, { authorizedKeys: [key.publicKey] })
})

afterAll(async () => {
  await Promise.all(actors.splice(0).map((a) => a.close()))
  await srv?.stop().catch(() => undefined)
  await ns?.destroy()
  if (dir) await rm(dir, { recursive: true, force: true })
})

function actorFor(extra: Partial<HostActorOptions>): HostActor {
  const a = new HostActor({
    target: { id: 'netns-host', hostname: srv!.host, port: srv!.port, user: srv!.user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
    backoff: { baseMs: 50, capMs: 300 },
    handshakeTimeoutMs: 1000,
    ...extra,
  })
  actors.push(a)
  return a
}

/** Resolves with the time of the first state event whose last error has `code`; rejects after `ms`. */
function waitForErrorCode(a: HostActor, code: string, ms: number): Promise<{ at: number; status: HostStatus }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      a.off('state', on)
      reject(new Error(`${a.id}: no ${code} within ${ms} ms (state ${a.state})`))
    }, ms)
    const on = (s: HostStatus) => {
      if (s.lastError?.code !== code) return
      clearTimeout(t)
      a.off('state', on)
      resolve({ at: Date.now(), status: s })
    }
    a.on('state', on)
  })
}

/** Polls `cond` every few ms until true; bounded by `ms`. */
async function poll(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('half-open path to a real sshd in a network namespace', () => {
  it('detects a silently dropped path within interval + deadline, then redials once the path heals', async () => {
    const a = actorFor({ keepaliveIntervalMs: INTERVAL_MS, probeDeadlineMs: DEADLINE_MS })
    a.start()
    await waitForState(a, 'ready', 5000)
    // At least one probe answered over the veth: the keepalive loop is running before the cut.
    await poll(() => a.status().rttMs !== undefined, 3 * INTERVAL_MS, 'a first probe reply')

    const lost = waitForErrorCode(a, 'KAY_KEEPALIVE_TIMEOUT', 4 * (INTERVAL_MS + DEADLINE_MS))
    await ns!.cut()
    const cutAt = Date.now()
    const { at, status } = await lost
    const elapsed = at - cutAt
    // The probe waits its whole deadline; it is sent at most one idle interval after the cut.
    expect(elapsed).toBeGreaterThanOrEqual(DEADLINE_MS - 20)
    expect(elapsed).toBeLessThanOrEqual(INTERVAL_MS + DEADLINE_MS + MARGIN_MS)
    expect(status.state).toBe('backoff')
    // Fail fast while down: no waiting for a dial that cannot succeed.
    await expect(a.run('true')).rejects.toMatchObject({ code: 'KAY_NOT_READY' })

    // While cut, redials time out at the SYN (never reach sshd): still exactly one accepted connection.
    await waitForErrorCode(a, 'KAY_HANDSHAKE_TIMEOUT', 5000)
    expect(await srv!.count(SSHD_LOG.acceptedPublickey)).toBe(1)

    await ns!.heal()
    await waitForState(a, 'ready', 8000)
    expect((await a.run('echo healed')).stdout).toBe('healed\n')
    expect(await srv!.count(SSHD_LOG.acceptedPublickey)).toBe(2)
    expect(a.status().handshakes).toBeGreaterThanOrEqual(2)
    await a.close()
  })

  it('keeps a slow but alive host ready when replies come late but within the probe deadline', async () => {
    const interval = 400
    const deadline = 1000
    const a = actorFor({ keepaliveIntervalMs: interval, probeDeadlineMs: deadline })
    const states: string[] = []
    a.on('state', (s) => states.push(s.state))
    a.start()
    await waitForState(a, 'ready', 5000)
    await poll(() => a.status().rttMs !== undefined, 3 * interval, 'a first probe reply')
    states.length = 0
    let maxRtt = 0
    const track = () => {
      maxRtt = Math.max(maxRtt, a.status().rttMs ?? 0)
    }

    const netem = await ns!.netemAvailable()
    if (netem) {
      // Real path delay: 300 ms one way on the root side of the veth.
      await ns!.setDelay(300)
      try {
        const end = Date.now() + 6 * interval
        while (Date.now() < end) {
          track()
          await new Promise((r) => setTimeout(r, 20))
        }
      } finally {
        await ns!.clearDelay()
      }
    } else {
      // No sch_netem on this kernel: make the host slow instead. Freeze the connection's sshd processes for
      // 700 ms at a time (the kernel still acks TCP, the bytes wait in the socket): any probe sent in a window
      // (each window is longer than the idle interval, so one is) is answered up to 700 ms late, < deadline.
      const conn = descendantsOf(await processTable(), srv!.pid).map((p) => p.pid)
      expect(conn.length).toBeGreaterThan(0)
      for (let cycle = 0; cycle < 3; cycle++) {
        for (const pid of conn) process.kill(pid, 'SIGSTOP')
        try {
          const end = Date.now() + 700
          while (Date.now() < end) {
            track()
            await new Promise((r) => setTimeout(r, 20))
          }
        } finally {
          for (const pid of conn) process.kill(pid, 'SIGCONT')
        }
        const end = Date.now() + 150
        while (Date.now() < end) {
          track()
          await new Promise((r) => setTimeout(r, 20))
        }
      }
    }
    track()
    // Probes really were slow (so the test exercised the deadline), and nobody declared the host dead.
    expect(maxRtt).toBeGreaterThanOrEqual(netem ? 250 : 150)
    expect(maxRtt).toBeLessThan(deadline)
    expect(states).toEqual([])
    expect(a.state).toBe('ready')
    expect(a.status().handshakes).toBe(1)
    expect((await a.run('echo alive')).stdout).toBe('alive\n')
    await a.close()
  })
})
