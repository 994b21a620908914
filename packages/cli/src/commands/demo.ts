import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateClientKey, spawnSimFleet } from '@kay/core/sim'
import { type ConnectionOptions, DEFAULTS, type ParsedCommand } from '../args.js'
import type { ExitCode } from '../help.js'
import type { Io } from './common.js'
import { checkFiles, cmdFleet } from './fleet.js'

/**
 * The built-in simulated fleet (a separate process) with a temporary key and pin store, then `kay fleet` on it.
 */
export async function demo(cmd: ParsedCommand & { command: 'demo' }, io: Io): Promise<ExitCode> {
  const dir = await mkdtemp(join(tmpdir(), 'kay-demo-'))
  const key = generateClientKey('kay-demo')
  const keyFile = join(dir, 'id_ed25519')
  await writeFile(keyFile, key.privateKey, { mode: 0o600 })
  io.err.write(`kay: starting a simulated fleet of ${cmd.hostCount} hosts on 127.0.0.1...\n`)
  const fleet = await spawnSimFleet({ hosts: cmd.hostCount, authorizedKeys: [key.publicKey] })
  try {
    const conn: ConnectionOptions = {
      identityFiles: [keyFile],
      knownHosts: join(dir, 'known_hosts'),
      user: 'demo',
      fanout: cmd.fanout,
      connectTimeoutMs: DEFAULTS.connectTimeoutMs,
      ...(cmd.threads === undefined ? {} : { threads: cmd.threads }),
      strictHostKeyChecking: 'accept-new',
      collectMode: 'stream',
    }
    const hosts = fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'demo' }))
    checkFiles(hosts.length, io)
    return await cmdFleet(cmd, conn, io, hosts, { identity: { username: 'demo', keyFiles: [keyFile] } })
  } finally {
    await fleet.close()
    await rm(dir, { recursive: true, force: true })
  }
}
