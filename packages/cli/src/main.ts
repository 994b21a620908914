/**
 * `kay` entry point: parse, dispatch, exit with the documented code. Ctrl-C closes everything and exits 130.
 */
import { isKayError } from '@kay/core'
import { type ParsedCommand, parseArgs } from './args.js'
import { cmdCollect } from './commands/collect.js'
import { errorLine, type Io } from './commands/common.js'
import { demo } from './commands/demo.js'
import { cmdExec } from './commands/exec.js'
import { checkFiles, cmdFleet } from './commands/fleet.js'
import { cmdServe } from './commands/serve.js'
import { cmdTop } from './commands/top.js'
import { cmdTrust } from './commands/trust.js'
import { EXIT, type ExitCode, helpText } from './help.js'
import { resolveHosts } from './hosts.js'

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

export { resolveHosts }
