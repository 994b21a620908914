import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostTarget } from '@kay/core'
import { startSimFleet } from '@kay/core/sim'
import {
  type ClientKey,
  makeClientKey,
  requireSshd,
  SSHD_LOG,
  type SshdServer,
  startSshd,
  startSshdFleet,
  until,
} from '@kay/core/testing'
import { expect, it } from 'vitest'
import { Supervisor } from '../src/supervisor.js'

/**
 * Starts a real sshd as the proxy host and `n` simulator hosts behind it, reached the way `route` says; waits for
 * them, collects once. Returns the hosts that answered with metrics, the proxy's logins and the simulator's
 * handshakes.
 */
async function collectThroughProxy(
  n: number,
  route: (proxy: SshdServer, key: ClientKey) => Pick<HostTarget, 'jump' | 'proxyCommand'>,
): Promise<{ withMetrics: number; proxyLogins: number; handshakes: number }> {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-proxy-'))
  const key = await makeClientKey(dir)
  const proxy = await startSshd({ authorizedKeys: [key.publicKey] })
  const fleet = await startSimFleet({ hosts: n, authorizedKeys: [key.publicKey] })
  let sup: Supervisor | undefined
  try {
    const via = route(proxy, key)
    sup = await Supervisor.start({
      hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay', ...via })),
      threads: 1,
      identity: { username: 'kay', keyFiles: [key.privateKeyPath] },
      trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    })
    await until(`${n} hosts ready`, () => (sup!.stats().byState.ready ?? 0) >= n, 20_000)
    const tick = await sup.collect()
    return {
      withMetrics: tick.hosts.filter((h) => h.metrics).length,
      proxyLogins: await proxy.count(SSHD_LOG.acceptedPublickey),
      handshakes: fleet.stats().totals.handshakesCompleted,
    }
  } finally {
    await sup?.stop()
    await fleet.close()
    await proxy.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

it('reaches simulator hosts through a real sshd jump host over one shared jump connection', async () => {
  const r = await collectThroughProxy(5, (jump) => ({
    jump: [{ id: 'jump', hostname: jump.host, port: jump.port, user: jump.user }],
  }))
  expect(r.withMetrics).toBe(5)
  // One authenticated connection to the jump host carries all five hosts (direct-tcpip channels).
  expect(r.proxyLogins).toBe(1)
  expect(r.handshakes).toBe(5)
})

it('reaches simulator hosts through a ProxyCommand (`ssh -W` via a real sshd), one command per host', async () => {
  const r = await collectThroughProxy(3, (bastion, key) => ({
    proxyCommand:
      `ssh -F /dev/null -i ${key.privateKeyPath} -o BatchMode=yes -o StrictHostKeyChecking=no ` +
      `-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p ${bastion.port} -W %h:%p ${bastion.user}@${bastion.host}`,
  }))
  expect(r.withMetrics).toBe(3)
  // Unlike ProxyJump's shared hop, each host's ProxyCommand is its own `ssh -W` login to the bastion.
  expect(r.proxyLogins).toBe(3)
  expect(r.handshakes).toBe(3)
})

it('retries the hosts behind a ProxyJump as soon as the hop is back, not at the end of their backoff', async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-hop-'))
  const key = await makeClientKey(dir)
  const jump = await startSshd({ authorizedKeys: [key.publicKey] })
  const hosts = await startSshdFleet({ count: 3, authorizedKeys: [key.publicKey] })
  let sup: Supervisor | undefined
  try {
    const via: HostTarget = { id: 'jump', hostname: jump.host, port: jump.port, user: jump.user }
    sup = await Supervisor.start({
      hosts: hosts.servers.map((s) => ({ id: s.host, hostname: s.host, port: s.port, user: s.user, jump: [via] })),
      threads: 1,
      identity: { username: 'kaytest', keyFiles: [key.privateKeyPath] },
      trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
      // Long backoff windows: a host that waited for its own would come back up to 10 s after its hop.
      backoff: { baseMs: 10_000, capMs: 10_000, stableAfterMs: 60_000 },
    })
    const s = sup
    const ready = async () => ((await s.refreshStats()).byState.ready ?? 0) === 3
    // At start the hosts' first dials fail (their hop is not up yet): they are retried when it is.
    await until('every host ready through the hop', ready, 30_000)

    await jump.halt()
    await until('every host down with its hop', async () => ((await s.refreshStats()).byState.ready ?? 0) === 0)
    const logins = await jump.count(SSHD_LOG.acceptedPublickey)
    await jump.restart()
    // The hop redials on its own backoff; its login in the jump host's log is the moment it is back.
    await until('the hop logged in again', async () => (await jump.count(SSHD_LOG.acceptedPublickey)) > logins, {
      timeoutMs: 30_000,
      everyMs: 5,
    })
    // Within one tick (2 s here) of the hop's return, every host behind it is back: it did not wait out its backoff.
    await until('every host back within a tick of its hop', ready, 2000)
    const tick = await s.collect({ timeoutMs: 5000 })
    expect(tick.hosts.filter((h) => h.metrics).length).toBe(3)
  } finally {
    await sup?.stop()
    await hosts.stop()
    await jump.stop()
    await rm(dir, { recursive: true, force: true })
  }
}, 90_000)
