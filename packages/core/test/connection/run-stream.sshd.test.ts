/**
 * HostActor.run against real OpenSSH sshd: output streamed as it arrives, output kept up to a deadline or the cap, and
 * a stopped command leaves nothing running on the host (TERM to its process group, KILL after the grace).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor, STOP_GRACE_MS } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { makeClientKey, requireSshd, type SshdServer, startSshd, until } from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

let dir: string
let server: SshdServer
let actor: HostActor

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-run-stream-'))
  const { chmod } = await import('node:fs/promises')
  await chmod(dir, 0o777)
  const key = await makeClientKey(join(dir, 'key'))
  server = await startSshd({ authorizedKeys: [key.publicKey] })
  const identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
  actor = new HostActor({
    target: { id: 'h1', hostname: server.host, port: server.port, user: server.user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
  })
  actor.start()
  await waitForState(actor, 'ready')
})

afterAll(async () => {
  await actor?.close()
  await server?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** The user's commands still running under this sshd (its own processes left out). */
async function userProcesses(marker: string): Promise<string[]> {
  return (await server.processes()).map((p) => p.cmd).filter((c) => c.includes(marker))
}

describe('HostActor.run output and stopping against real sshd', () => {
  it('delivers a line as soon as it is printed, before the command ends', async () => {
    const gate = join(dir, 'go-1')
    const seen: string[] = []
    let settled = false
    const run = actor
      .run(`echo first; while [ ! -e ${gate} ]; do sleep 0.02; done; echo second`, {
        timeoutMs: 20_000,
        onOutput: (stream, chunk) => seen.push(`${stream}:${chunk.toString()}`),
      })
      .finally(() => {
        settled = true
      })
    // The command cannot end before the gate file exists: the first line arrived while it was still running.
    await until('the first line', () => seen.join('').includes('first'), 10_000)
    expect(settled).toBe(false)
    await writeFile(gate, '')
    const r = await run
    expect(seen.join('')).toBe('stdout:first\nstdout:second\n')
    // Streamed output is not kept twice: the result carries the status only.
    expect(r).toMatchObject({ exitCode: 0, stdout: '', stderr: '' })
  })

  it('keeps what a command printed before its deadline, and leaves nothing running', async () => {
    const seen: Buffer[] = []
    await expect(
      actor.run('echo partial; echo oops >&2; sleep 31', { timeoutMs: 1500, onOutput: (_s, c) => seen.push(c) }),
    ).rejects.toMatchObject({ code: 'KAY_TIMEOUT' })
    expect(Buffer.concat(seen).toString()).toMatch(/partial\n/)
    await until('the timed-out command gone', async () => (await userProcesses('sleep 31')).length === 0, 10_000)
  })

  it('delivers output up to the cap exactly, then stops the command', async () => {
    const seen: Buffer[] = []
    await expect(
      actor.run('head -c 200000 /dev/zero; sleep 32', { maxOutputBytes: 1000, onOutput: (_s, c) => seen.push(c) }),
    ).rejects.toMatchObject({ code: 'KAY_OUTPUT_LIMIT' })
    expect(Buffer.concat(seen).length).toBe(1000)
    await until('the capped command gone', async () => (await userProcesses('sleep 32')).length === 0, 10_000)
  })

  it('stops a compound command with TERM to its whole process group when aborted', async () => {
    const ac = new AbortController()
    const run = actor.run('for i in 1 2 3; do sleep 33; done', { signal: ac.signal, timeoutMs: 60_000 })
    await until('the loop running', async () => (await userProcesses('sleep 33')).length > 0, 10_000)
    ac.abort()
    await expect(run).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    // Well within the grace: TERM did it, not KILL.
    const t0 = Date.now()
    await until('shell and sleep gone', async () => (await userProcesses('sleep 33')).length === 0, 10_000)
    expect(Date.now() - t0).toBeLessThan(STOP_GRACE_MS)
    await actor.stopped()
  })

  it('KILLs a command that ignores TERM once the grace is over, or at once when told to', async () => {
    for (const now of [false, true]) {
      const ac = new AbortController()
      const marker = now ? 'sleep 35' : 'sleep 34'
      const run = actor.run(`trap '' TERM; ${marker} & wait; ${marker}`, { signal: ac.signal, timeoutMs: 60_000 })
      await until('the command running', async () => (await userProcesses(marker)).length > 0, 10_000)
      ac.abort()
      await expect(run).rejects.toMatchObject({ code: 'KAY_ABORTED' })
      if (now) actor.killStopping()
      // TERM is ignored: it is still there right after the abort, and gone once KILL was sent.
      else expect((await userProcesses(marker)).length).toBeGreaterThan(0)
      await actor.stopped()
      await until('the TERM-proof command gone', async () => (await userProcesses(marker)).length === 0, 10_000)
    }
    // The connection survived all of it.
    expect((await actor.run('echo still')).stdout).toBe('still\n')
    expect(actor.status().handshakes).toBe(1)
  })

  it('closing the actor with a command running leaves nothing behind', async () => {
    const key = await makeClientKey(join(dir, 'key2'))
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      const a = new HostActor({
        target: { id: 'h2', hostname: s.host, port: s.port, user: s.user },
        identity: await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' }),
        verifier: memoryVerifier(),
        dialGate: new LocalDialGate(),
      })
      a.start()
      await waitForState(a, 'ready')
      const run = a.run("trap '' TERM; sleep 36", { timeoutMs: 60_000 })
      const rejected = expect(run).rejects.toMatchObject({ code: 'KAY_CLOSED' })
      await until('running', async () => (await s.processes()).some((p) => p.cmd.includes('sleep 36')), 10_000)
      await a.close()
      await rejected
      await until('gone', async () => !(await s.processes()).some((p) => p.cmd.includes('sleep 36')), 10_000)
    } finally {
      await s.stop()
    }
  })
})
