/**
 * ProxyCommand against real OpenSSH: `ssh -W %h:%p` through a real sshd bastion (here the target's own sshd), the
 * command's lifetime tied to the connection's, and a failing command reported with its status and stderr.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkProxyCommand } from '../../src/config/ssh-config.js'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { expandProxyCommand } from '../../src/connection/proxy-command.js'
import {
  type ClientKey,
  descendantsOf,
  makeClientKey,
  processTable,
  SSHD_LOG,
  type SshdServer,
  startSshd,
  until,
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import type { HostTarget, Identity } from '../../src/types.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

let dir: string
let key: ClientKey
let identity: Identity
let sshd: SshdServer

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-proxycmd-'))
  key = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
  sshd = await startSshd({ authorizedKeys: [key.publicKey] })
})

afterAll(async () => {
  await sshd?.stop()
  await rm(dir, { recursive: true, force: true })
})

function actorVia(proxyCommand: string, id = 'via-proxy'): HostActor {
  return new HostActor({
    target: { id, hostname: sshd.host, port: sshd.port, user: sshd.user, proxyCommand },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
    backoff: { baseMs: 60_000, capMs: 60_000 },
  })
}

describe('ProxyCommand tokens', () => {
  const t: HostTarget = { id: 'web01', hostname: '10.1.2.3', port: 2222, user: 'ops' }
  it('expands %h %p %r %n %k and %%, and refuses others', () => {
    expect(expandProxyCommand('ssh -W %h:%p -l %r jump # %n %k 100%%', t)).toBe(
      'ssh -W 10.1.2.3:2222 -l ops jump # web01 web01 100%',
    )
    // %n is the host as named before HostName (not the whole spec); %k is HostKeyAlias when there is one.
    const named: HostTarget = { ...t, id: 'ops@web01:2222', originalHost: 'Web01', hostKeyAlias: 'cluster' }
    expect(expandProxyCommand('nc %n %k', named)).toBe('nc Web01 cluster')
    expect(() => checkProxyCommand('nc %h %C')).toThrow(/unknown token '%C'/)
    expect(() => expandProxyCommand('nc %h %', t)).toThrow(/lone %/)
  })
})

describe('ProxyCommand against real sshd', () => {
  it('connects through `ssh -W %h:%p` and the command ends when the connection closes', async () => {
    const mark = randomBytes(6).toString('hex')
    const accepted0 = await sshd.count(SSHD_LOG.acceptedPublickey)
    // The bastion is the target's own sshd: one login for `ssh -W`, one for kay through the tunnel.
    const a = actorVia(
      `ssh -F /dev/null -i ${key.privateKeyPath} -o BatchMode=yes -o StrictHostKeyChecking=no ` +
        `-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o SetEnv=KAYMARK=${mark} -p %p -W %h:%p %r@%h`,
    )
    try {
      a.start()
      await waitForState(a, 'ready', 10_000)
      expect((await a.run('echo through')).stdout).toBe('through\n')
      expect(await sshd.waitForCount(SSHD_LOG.acceptedPublickey, accepted0 + 2)).toBe(accepted0 + 2)
      expect((await processTable()).some((p) => p.cmd.includes(mark))).toBe(true)
    } finally {
      await a.close()
    }
    await until('ssh -W exited', async () => !(await processTable()).some((p) => p.cmd.includes(mark)), 5000)
  })

  it('reports a failing command with its exit status and stderr, and leaves no process behind', async () => {
    const mark = randomBytes(6).toString('hex')
    const a = actorVia(`sh -c 'echo bastion says no >&2; exit 3; : ${mark}'`, 'refused-by-bastion')
    try {
      a.start()
      await waitForState(a, 'backoff', 10_000)
      const err = a.status().lastError!
      expect(err.code).toBe('KAY_CONNECT_FAILED')
      expect(err.message).toMatch(/ProxyCommand exited with status 3: bastion says no/)
      expect((await processTable()).some((p) => p.cmd.includes(mark))).toBe(false)
    } finally {
      await a.close()
    }
  })

  it('ends a command that never connects, and what it started, when the actor is closed mid-dial', async () => {
    const mark = randomBytes(6).toString('hex')
    const a = actorVia(`sh -c 'sleep 30; echo ${mark}'`, 'stalled-bastion')
    a.start()
    await until('command running', async () => (await processTable()).some((p) => p.cmd.includes(mark)), 5000)
    const table = await processTable()
    const sh = table.find((p) => p.cmd.includes(mark))!
    const tree = [sh.pid, ...descendantsOf(table, sh.pid).map((p) => p.pid)]
    expect(tree.length).toBeGreaterThanOrEqual(2) // sh and its sleep
    await a.close()
    await until(
      'command and its children ended',
      async () => {
        const alive = new Set((await processTable()).map((p) => p.pid))
        return tree.every((pid) => !alive.has(pid))
      },
      5000,
    )
  })
})
