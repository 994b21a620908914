/**
 * The client key is removed from a real sshd's authorized_keys while the actor is connected, then the connection
 * drops: the actor must report a typed KAY_AUTH_FAILED and retry slowly (never hammer the server).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import {
  type ClientKey,
  descendantsOf,
  makeClientKey,
  processTable,
  requireSshd,
  SSHD_LOG,
  startSshd,
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import type { Identity } from '../../src/types.js'
import { memoryVerifier, waitForState, waitForStatus } from '../support/fixtures.js'
import { ManualClock } from '../support/manual-clock.js'

const CAP_MS = 2000
const WINDOW_MS = 3000

let dir: string
let key: ClientKey
let identity: Identity

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-authrevoked-'))
  key = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
})

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('auth keys removed from a real sshd', () => {
  it('reports KAY_AUTH_FAILED and retries at most a handful of times in a window (slow backoff)', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    // Backoff runs on a manual clock: the window below is simulated time; only the dials are real I/O.
    const clock = new ManualClock()
    const a = new HostActor({
      target: { id: 'revoked', hostname: s.host, port: s.port, user: s.user },
      identity,
      verifier: memoryVerifier(),
      dialGate: new LocalDialGate(),
      backoff: { baseMs: 20, capMs: CAP_MS },
      keepaliveIntervalMs: 0,
      clock,
      random: () => 0.5,
    })
    /** Move simulated time on; a redial that falls due runs against the real sshd, and is awaited. */
    const advance = async (ms: number) => {
      clock.advance(ms)
      if (a.state === 'dialing') await waitForStatus(a, (st) => st.state !== 'dialing', 5000, 'the dial to end')
    }
    try {
      a.start()
      await waitForState(a, 'ready')
      await s.setAuthorizedKeys([])

      const authFailed = waitForStatus(a, (st) => st.lastError?.code === 'KAY_AUTH_FAILED', 5000, 'KAY_AUTH_FAILED')
      // Drop the established connection from the server side: kill its sshd processes, not the listener.
      const conn = descendantsOf(await processTable(), s.pid)
      expect(conn.length).toBeGreaterThan(0)
      for (const p of conn) {
        try {
          process.kill(p.pid, 'SIGKILL')
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err // exited since the table was read
        }
      }
      // The loss puts the actor in backoff; its redial (simulated time) meets the removed key.
      await waitForState(a, 'backoff')
      await advance(CAP_MS)

      const status = await authFailed
      const at = clock.now()
      expect(status.state).toBe('backoff')
      expect(status.lastError?.message).toMatch(/auth/i)
      // The redial after an auth failure waits at least half the cap: the key will not come back in a second.
      expect(status.nextRetryAt! - at).toBeGreaterThanOrEqual(CAP_MS / 2 - 50)

      const before = await s.count(SSHD_LOG.connection)
      let polls = 0
      // Bounded observation window in simulated time; every request meanwhile fails fast with a typed error.
      for (let t = 0; t < WINDOW_MS; t += 100) {
        await expect(a.run('true')).rejects.toMatchObject({ code: 'KAY_NOT_READY' })
        expect(a.state).not.toBe('ready')
        polls++
        await advance(100)
      }
      expect(polls).toBeGreaterThan(10)
      const attempts = (await s.count(SSHD_LOG.connection)) - before
      // Each retry is at least CAP_MS / 2 after the previous failure: at most WINDOW_MS / (CAP_MS / 2) + 1.
      expect(attempts).toBeGreaterThanOrEqual(1)
      expect(attempts).toBeLessThanOrEqual(Math.floor(WINDOW_MS / (CAP_MS / 2)) + 1)
      expect(await s.count(SSHD_LOG.failedAuth)).toBeLessThanOrEqual(attempts + 1)
      expect(a.status().lastError?.code).toBe('KAY_AUTH_FAILED')
      expect(await s.count(SSHD_LOG.acceptedPublickey)).toBe(1)
    } finally {
      await a.close()
      await s.stop()
    }
  })
})
