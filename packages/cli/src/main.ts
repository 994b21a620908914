/**
 * `kay` entry point: parse, dispatch, exit with the documented code (help.ts). Interrupts and a closed stdout end
 * every command the same way (see {@link main}).
 */
import { isKayError } from '@kay/core'
import { type ParsedCommand, parseArgs } from './args.js'
import { cmdCollect } from './commands/collect.js'
import { errorLine, type Io, READER_GONE, readerGone as readerGoneOf } from './commands/common.js'
import { cmdCopy } from './commands/copy.js'
import { demo } from './commands/demo.js'
import { cmdExec } from './commands/exec.js'
import { checkFiles, cmdFleet } from './commands/fleet.js'
import { cmdServe } from './commands/serve.js'
import { cmdTop } from './commands/top.js'
import { cmdTrust } from './commands/trust.js'
import { EXIT, type ExitCode, helpText } from './help.js'
import { resolveHosts } from './hosts.js'

const VERSION = '0.1.0'

/** Error codes thrown before any host was contacted that mean "fix your command line or files": exit 1. */
const LOCAL_CONFIG_CODES = new Set([
  'KAY_CONFIG',
  'KAY_EXPANSION_LIMIT',
  'KAY_KEY_ENCRYPTED',
  'KAY_KEY_INVALID',
  'KAY_KEY_PERMISSIONS',
])

/**
 * Run kay. Interrupts: the first Ctrl-C (or SIGTERM) stops at once — running remote commands get TERM, what is done
 * is printed, exit 130; a second one KILLs the commands still exiting and exits within 2 s; a third exits now. A
 * closed stdout (`kay … | head -1`) ends kay the same way, quietly, with exit 0 as for a reader that had enough.
 */
export async function main(
  argv: string[],
  io: Omit<Io, 'signal' | 'hurry'> = { out: process.stdout, err: process.stderr },
) {
  const ac = new AbortController()
  const hurry = new AbortController()
  let interrupts = 0
  const onSignal = () => {
    interrupts++
    if (interrupts === 1) ac.abort()
    else if (interrupts === 2) {
      hurry.abort()
      setTimeout(() => process.exit(EXIT.interrupted), 2000).unref()
    } else process.exit(EXIT.interrupted)
  }
  let readerGone = false
  const onOutError = (err: NodeJS.ErrnoException) => {
    // EPIPE: the reader went away; a later write to the destroyed stream reports ERR_STREAM_DESTROYED.
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') {
      readerGone = true
      ac.abort(READER_GONE)
    }
  }
  const onErrError = () => {} // a closed stderr must not crash kay either
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  io.out.on('error', onOutError)
  io.err.on('error', onErrError)
  const full: Io = { ...io, signal: ac.signal, hurry: hurry.signal }
  try {
    const code = await run(argv, full)
    return readerGone ? EXIT.ok : code
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    // The error listeners stay: a write's EPIPE can be reported after the command returned (kay trust list | head).
  }
}

async function run(argv: string[], io: Io): Promise<ExitCode> {
  try {
    const cmd = parseArgs(argv)
    if ('warnings' in cmd) for (const w of cmd.warnings) io.err.write(`kay: warning: ${w}\n`)
    return await dispatch(cmd, io)
  } catch (err) {
    if (!readerGoneOf(io)) io.err.write(`${failureLine(err)}\n`)
    return isKayError(err) && !LOCAL_CONFIG_CODES.has(err.code) ? EXIT.unreachable : EXIT.usage
  }
}

/**
 * The one line an error that ended kay prints: the code and the cause with its fix; a file-system error names the
 * file; anything else is a bug, said as such (its stack with KAY_DEBUG=1), never a stack trace by default.
 */
function failureLine(err: unknown): string {
  if (isKayError(err)) return err.host ? errorLine(err.host, err) : `kay: ${err.code}: ${err.message}`
  const e = err as NodeJS.ErrnoException
  if (typeof e?.code === 'string' && typeof e.syscall === 'string') {
    const path = e.path === undefined ? '' : ` '${e.path}'`
    return `kay: KAY_CONFIG: cannot ${e.syscall}${path}: ${e.code} (check the path and its permissions)`
  }
  if (process.env.KAY_DEBUG) return `kay: KAY_INTERNAL: ${e?.stack ?? String(err)}`
  const message = (e?.message ?? String(err)).split('\n')[0]
  return `kay: KAY_INTERNAL: ${message} (a bug in kay; KAY_DEBUG=1 shows where)`
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
    case 'cp':
    case 'rcopy':
      return cmdCopy(cmd, io)
    case 'trust':
      return cmdTrust(cmd, io)
    case 'demo':
      return demo(cmd, io)
    case 'serve':
      return cmdServe(cmd, io)
  }
}
