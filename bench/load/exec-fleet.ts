/**
 * A real-sshd fleet for timing one-shot fan-out commands side by side (kay exec, pdsh, clush) with farm-bench: starts
 * N sshd instances on 127.81.x.y, writes an ssh_config naming them h1…hN, a client key and a known_hosts with every
 * host key (so no tool pins or prompts), prints the paths as shell variables, and keeps the fleet up until SIGTERM or
 * SIGINT (then stops every instance).
 *
 *   node --conditions=kay-source --import tsx bench/load/exec-fleet.ts --hosts 100 > /tmp/fleet.env &
 *   . /tmp/fleet.env   # KAY_FLEET_CONFIG, KAY_FLEET_KEY, KAY_FLEET_KNOWN_HOSTS, KAY_FLEET_HOSTS, KAY_FLEET_PID
 *
 * The commands and figures are in bench/RESULTS.md ("kay exec against pdsh and clush").
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeClientKey, startSshdFleet } from '@kay/core/testing'
import { flags, runMain } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const hosts = Number(f.get('hosts') ?? '100')
  if (!Number.isInteger(hosts) || hosts < 1 || hosts > 1000) throw new Error('--hosts must be 1..1000')
  const dir = await mkdtemp(join(tmpdir(), 'kay-exec-fleet-'))
  const key = await makeClientKey(join(dir, 'key'))
  const fleet = await startSshdFleet({ count: hosts, authorizedKeys: [key.publicKey], addressBase: '127.81.' })
  const config = join(dir, 'ssh_config')
  const knownHosts = join(dir, 'known_hosts')
  const names = fleet.servers.map((_, i) => `h${i + 1}`)
  await writeFile(
    config,
    fleet.servers
      .map((s, i) => `Host ${names[i]}\n  HostName ${s.host}\n  Port ${s.port}\n  User ${s.user}\n`)
      .join(''),
  )
  await writeFile(knownHosts, fleet.servers.map((s) => `[${s.host}]:${s.port} ${s.hostKeyPublic}\n`).join(''), {
    mode: 0o600,
  })
  process.stdout.write(
    `KAY_FLEET_CONFIG=${config}\nKAY_FLEET_KEY=${key.privateKeyPath}\nKAY_FLEET_KNOWN_HOSTS=${knownHosts}\n` +
      `KAY_FLEET_HOSTS='h[1-${hosts}]'\nKAY_FLEET_PID=${process.pid}\n`,
  )
  // The sshd children are unref'd: a timer keeps the process (and so the fleet) alive until a signal.
  const keepAlive = setInterval(() => {}, 60_000)
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  clearInterval(keepAlive)
  await fleet.stop()
  await rm(dir, { recursive: true, force: true })
  return 0
}

runMain(import.meta.url, main)
