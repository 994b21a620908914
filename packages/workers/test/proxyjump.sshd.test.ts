import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostTarget } from '@kay/core'
import { startSimFleet } from '@kay/core/sim'
import { type ClientKey, makeClientKey, requireSshd, SSHD_LOG, type SshdServer, startSshd } from '@kay/core/testing'
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
    const end = Date.now() + 20_000
    while ((sup.stats().byState.ready ?? 0) < n && Date.now() < end) await new Promise((r) => setTimeout(r, 25))
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
