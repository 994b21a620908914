/**
 * A fleet of real OpenSSH sshd instances (one per 127.77.x.y address) for the CLI's end-to-end tests, with the files
 * kay needs to reach them as `h1`…`hN` ssh_config aliases: a client key, an ssh_config and a pin file.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  type ClientKey,
  makeClientKey,
  type ProcessInfo,
  requireSshd,
  type SshdFleet,
  startSshdFleet,
} from '@kay/core/testing'

export interface SshdFixture {
  fleet: SshdFleet
  dir: string
  key: ClientKey
  sshConfig: string
  knownHosts: string
  /** `h1`…`hN`, in fleet order. */
  names: string[]
  /** The port every instance listens on (each on its own address). */
  port: number
  /** Flags that point kay at this fixture's key, config and pins. */
  connArgs: string[]
  /** A directory every host's commands (user kaytest) may write to: for probes the tests read back. */
  shared: string
  /** User commands still running on every host (sshd's own processes left out). */
  userProcesses(): Promise<ProcessInfo[]>
  close(): Promise<void>
}

/** sshd's own processes: the listener, the per-connection monitor (`sshd: kaytest [priv]`) and `sshd: kaytest@notty`. */
const SSHD_OWN = /^(?:sshd: |\/usr\/sbin\/sshd )/

export interface SshdFixtureOptions {
  /** The fleet's first two octets (default `127.77.`): a test file of its own keeps its addresses apart. */
  addressBase?: string
  /** More ssh_config text, appended, given the fleet's port (e.g. an alias for an address where nothing listens). */
  extraConfig?: (port: number) => string
}

export async function startSshdFixture(count: number, opts: SshdFixtureOptions = {}): Promise<SshdFixture> {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-cli-sshd-'))
  await chmod(dir, 0o711)
  const key = await makeClientKey(join(dir, 'client'))
  const fleet = await startSshdFleet({
    count,
    authorizedKeys: [key.publicKey],
    ...(opts.addressBase === undefined ? {} : { addressBase: opts.addressBase }),
  })
  const names = fleet.servers.map((_, i) => `h${i + 1}`)
  const sshConfig = join(dir, 'ssh_config')
  await writeFile(
    sshConfig,
    fleet.servers
      .map((s, i) => `Host ${names[i]}\n  HostName ${s.host}\n  Port ${s.port}\n  User ${s.user}\n`)
      .join('\n') + (opts.extraConfig === undefined ? '' : `\n${opts.extraConfig(fleet.servers[0]!.port)}`),
    { mode: 0o600 },
  )
  const shared = join(dir, 'shared')
  await mkdir(shared)
  await chmod(shared, 0o777)
  const knownHosts = join(dir, 'known_hosts')
  let closed = false
  return {
    fleet,
    dir,
    key,
    sshConfig,
    knownHosts,
    names,
    port: fleet.servers[0]!.port,
    connArgs: ['--ssh-config', sshConfig, '-i', key.privateKeyPath, '--known-hosts', knownHosts],
    shared,
    async userProcesses() {
      const all = await Promise.all(fleet.servers.map((s) => s.processes()))
      return all.flat().filter((p) => !SSHD_OWN.test(p.cmd))
    },
    async close() {
      if (closed) return
      closed = true
      await fleet.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
