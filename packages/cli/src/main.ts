/**
 * `kay` entry point: parse, dispatch, exit with the documented code. Ctrl-C closes everything and exits 130.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isKayError } from '@kay/core'
import { generateClientKey, spawnSimFleet } from '@kay/core/sim'
import { cmdCollect, cmdExec, cmdFleet, cmdServe, cmdTop, cmdTrust, errorLine, type Io } from './app.js'
import { type ConnectionOptions, DEFAULTS, type ParsedCommand, parseArgs } from './args.js'
import { EXIT, type ExitCode, helpText } from './help.js'
import { resolveHosts } from './hosts.js'
import { fileLimit } from './rlimit.js'

const VERSION = '0.1.0'

export async function main(argv: string[], io: Omit<Io, 'signal'> = { out: process.stdout, err: process.stderr }) {
  const ac = new AbortController()
  let interrupted = false
  const onSigint = () => {
    if (interrupted) process.exit(EXIT.interrupted)
    interrupted = true
    ac.abort()
  }
  process.on('SIGINT', onSigint)
  process.on('SIGTERM', onSigint)
  const full: Io = { ...io, signal: ac.signal }
  try {
    const cmd = parseArgs(argv)
    if ('warnings' in cmd) for (const w of cmd.warnings) io.err.write(`kay: warning: ${w}\n`)
    return await dispatch(cmd, full)
  } catch (err) {
    if (isKayError(err)) {
      io.err.write(`${err.host ? errorLine(err.host, err) : `kay: ${err.code}: ${err.message}`}\n`)
      return err.code === 'KAY_CONFIG' || err.code === 'KAY_EXPANSION_LIMIT' ? EXIT.usage : EXIT.unreachable
    }
    io.err.write(`kay: ${(err as Error).stack ?? err}\n`)
    return EXIT.usage
  } finally {
    process.off('SIGINT', onSigint)
    process.off('SIGTERM', onSigint)
  }
}

async function dispatch(cmd: ParsedCommand, io: Io): Promise<ExitCode> {
  switch (cmd.command) {
    case 'help':
      ;(cmd.exitCode === 0 ? io.out : io.err).write(`${helpText(cmd.topic)}\n`)
      return cmd.exitCode
    case 'version':
      io.out.write(`kay ${VERSION}\n`)
      return EXIT.ok
    case 'collect':
      return cmdCollect(cmd, io)
    case 'fleet': {
      const hosts = await resolveHosts(cmd.hosts, cmd.connection)
      checkFiles(hosts.length, io)
      return cmdFleet(cmd, cmd.connection, io, hosts)
    }
    case 'top':
      return cmdTop(cmd, io)
    case 'exec':
      return cmdExec(cmd, io)
    case 'trust':
      return cmdTrust(cmd, io)
    case 'demo':
      return demo(cmd, io)
    case 'serve':
      return cmdServe(cmd, io)
  }
}

function checkFiles(hosts: number, io: Io): void {
  const r = fileLimit()
  if (r.limit < hosts + 64) {
    io.err.write(
      `kay: warning: the open-file limit is ${r.limit} but ${hosts} hosts need about ${hosts + 64} descriptors; ` +
        'hosts past the limit will fail to connect (raise it with ulimit -n)\n',
    )
  }
}

/**
 * The built-in simulated fleet (a separate process) with a temporary key and pin store, then `kay fleet` on it.
 */
async function demo(cmd: ParsedCommand & { command: 'demo' }, io: Io): Promise<ExitCode> {
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

export { resolveHosts }
