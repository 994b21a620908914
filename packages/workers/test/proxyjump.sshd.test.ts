import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startSimFleet } from '@kay/core/sim'
import { makeClientKey, requireSshd, SSHD_LOG, startSshd } from '@kay/core/testing'
import { expect, it } from 'vitest'
import { Supervisor } from '../src/supervisor.js'

it('reaches simulator hosts through a real sshd jump host over one shared jump connection', async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-jump-'))
  const key = await makeClientKey(dir)
  const jump = await startSshd({ authorizedKeys: [key.publicKey] })
  const fleet = await startSimFleet({ hosts: 5, authorizedKeys: [key.publicKey] })
  let sup: Supervisor | undefined
  try {
    const hop = { id: 'jump', hostname: jump.host, port: jump.port, user: jump.user }
    sup = await Supervisor.start({
      hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay', jump: [hop] })),
      threads: 1,
      identity: { username: 'kay', keyFiles: [key.privateKeyPath] },
      trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    })
    const end = Date.now() + 20_000
    while ((sup.stats().byState.ready ?? 0) < 5 && Date.now() < end) await new Promise((r) => setTimeout(r, 25))
    const tick = await sup.collect()
    expect(tick.hosts.filter((h) => h.metrics)).toHaveLength(5)
    // One authenticated connection to the jump host carries all five hosts (direct-tcpip channels).
    expect(await jump.count(SSHD_LOG.acceptedPublickey)).toBe(1)
    expect(fleet.stats().totals.handshakesCompleted).toBe(5)
  } finally {
    await sup?.stop()
    await fleet.close()
    await jump.stop()
    await rm(dir, { recursive: true, force: true })
  }
})

it('reaches simulator hosts through a ProxyCommand (`ssh -W` via a real sshd), one command per host', async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-proxycmd-'))
  const key = await makeClientKey(dir)
  const bastion = await startSshd({ authorizedKeys: [key.publicKey] })
  const fleet = await startSimFleet({ hosts: 3, authorizedKeys: [key.publicKey] })
  let sup: Supervisor | undefined
  try {
    const proxyCommand =
      `ssh -F /dev/null -i ${key.privateKeyPath} -o BatchMode=yes -o StrictHostKeyChecking=no ` +
      `-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p ${bastion.port} -W %h:%p ${bastion.user}@${bastion.host}`
    sup = await Supervisor.start({
      hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay', proxyCommand })),
      threads: 1,
      identity: { username: 'kay', keyFiles: [key.privateKeyPath] },
      trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    })
    const end = Date.now() + 20_000
    while ((sup.stats().byState.ready ?? 0) < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 25))
    const tick = await sup.collect()
    expect(tick.hosts.filter((h) => h.metrics)).toHaveLength(3)
    // Unlike ProxyJump's shared hop, each host's ProxyCommand is its own `ssh -W` login to the bastion.
    expect(await bastion.count(SSHD_LOG.acceptedPublickey)).toBe(3)
    expect(fleet.stats().totals.handshakesCompleted).toBe(3)
  } finally {
    await sup?.stop()
    await fleet.close()
    await bastion.stop()
    await rm(dir, { recursive: true, force: true })
  }
})
