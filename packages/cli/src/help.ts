/**
 * Help texts and exit codes. The help is generated from the flag table in `args.ts`, so every flag a command
 * accepts is documented with its value, unit and default.
 */
import type { ErrorCode } from '@kay/core'
import { COMMAND_NAMES, COMMANDS, type CommandName, FLAGS, type FlagSpec } from './args.js'

/** Process exit codes. When several apply, the highest wins (Ctrl-C's 130 overrides everything). */
export const EXIT = {
  /** Every host succeeded. */
  ok: 0,
  /** Usage or configuration error, nothing was run: bad flags, no host selected, a local key that cannot be used. */
  usage: 1,
  /** Some hosts were unreachable or timed out. */
  unreachable: 2,
  /**
   * A host offered a key that does not match its pin (or a revoked / unpinned key under --strict-host-keys), or a
   * certificate from a trusted CA that is expired, names other hosts, is otherwise invalid, or whose CA is revoked.
   */
  hostKey: 3,
  /** Public-key authentication failed on some host. */
  auth: 4,
  /** The remote command exited non-zero, was killed by a signal or hit --max-output (exec), or a copy failed (cp). */
  remoteFailed: 5,
  /** Interrupted with Ctrl-C or SIGTERM. */
  interrupted: 130,
} as const

export type ExitCode = (typeof EXIT)[keyof typeof EXIT]

/** One host's outcome, as far as the exit code cares. */
export interface HostOutcome {
  ok: boolean
  /** The KayError code when the host failed (connection, trust, auth, timeout…). */
  errorCode?: ErrorCode | string | undefined
  /** The remote command's exit status (exec); null or undefined when it did not exit normally. */
  exitCode?: number | null | undefined
}

/**
 * The process exit code for a run: the highest code among the hosts' outcomes (see {@link EXIT}).
 * A host-key refusal (3) outranks an unreachable host (2); auth failure (4) outranks both; a non-zero remote
 * exit (5) outranks everything. No hosts at all is 0.
 */
export function exitCodeFor(results: Iterable<HostOutcome>): ExitCode {
  let code: ExitCode = EXIT.ok
  for (const r of results) {
    const c = outcomeCode(r)
    if (c > code) code = c
  }
  return code
}

function outcomeCode(r: HostOutcome): ExitCode {
  switch (r.errorCode) {
    case undefined:
      break
    case 'KAY_HOST_KEY_MISMATCH':
    case 'KAY_HOST_KEY_UNKNOWN':
    case 'KAY_HOST_KEY_REVOKED':
    case 'KAY_HOST_CERT_EXPIRED':
    case 'KAY_HOST_CERT_PRINCIPAL':
    case 'KAY_HOST_CERT_INVALID':
    case 'KAY_HOST_CA_REVOKED':
      return EXIT.hostKey
    case 'KAY_AUTH_FAILED':
    case 'KAY_KEY_PERMISSIONS':
    case 'KAY_KEY_ENCRYPTED':
    case 'KAY_KEY_INVALID':
      return EXIT.auth
    case 'KAY_OUTPUT_LIMIT':
    case 'KAY_COPY_FAILED':
      return EXIT.remoteFailed
    case 'KAY_SKIPPED':
      // Not run because a rolling run stopped: the failures that stopped it carry the code.
      return EXIT.ok
    case 'KAY_CONFIG':
    case 'KAY_EXPANSION_LIMIT':
      return EXIT.usage
    case 'KAY_ABORTED':
      return EXIT.interrupted
    default:
      return EXIT.unreachable
  }
  if (r.exitCode !== undefined && r.exitCode !== null && r.exitCode !== 0) return EXIT.remoteFailed
  return r.ok ? EXIT.ok : EXIT.unreachable
}

const EXIT_CODES_TEXT = `Exit codes (when several apply, the highest wins; kay fleet --ticks N: the highest over all N ticks):
  0    all hosts succeeded (also when the reader of stdout went away: kay … | head)
  1    usage or config error: bad flags or files, no host selected, a local key that cannot be used
  2    some hosts unreachable or timed out
  3    host-key or host-certificate refusal on any host
  4    auth failure on any host
  5    remote command exited non-zero or was killed on some host (exec), or a copy failed (cp, rcopy)
  130  interrupted (Ctrl-C or SIGTERM)`

const UNITS_TEXT = `Units:
  DURATION  a number with a unit: 500ms, 5s, 1.5s, 2m, 1h, 1m30s (a bare number is rejected)
  BYTES     bytes, or with a unit: 64KiB, 1MiB, 1GiB (binary), 10KB, 10MB (decimal)`

const HOSTS_TEXT = `Host specs: alias from ssh_config, [user@]host[:port], or pdsh-style ranges (web[01-20,25], rack[1-4]-n[1-8]).`

function flagLine(spec: FlagSpec, help: string): string[] {
  const names = spec.short === undefined ? `    --${spec.long}` : `-${spec.short}, --${spec.long}`
  const left = `  ${names}${spec.metavar === undefined ? '' : ` ${spec.metavar}`}`
  const text = spec.default === undefined ? help : `${help} (default: ${spec.default})`
  const body = wrap(text, HELP_WIDTH - 34)
  const first = left.length < 34 ? [`${left.padEnd(34)}${body[0]}`] : [left, `${' '.repeat(34)}${body[0]}`]
  return [...first, ...body.slice(1).map((l) => `${' '.repeat(34)}${l}`)]
}

/** Help lines stay within this many columns. */
export const HELP_WIDTH = 120

function wrap(text: string, width: number): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else line = line === '' ? word : `${line} ${word}`
  }
  lines.push(line)
  return lines
}

/** `kay <command> --help`. */
function commandHelp(command: CommandName): string {
  const spec = COMMANDS[command]
  const out = [`Usage: ${spec.usage}`, '', spec.summary, '']
  if (command !== 'demo' && command !== 'top') out.push(HOSTS_TEXT, '')
  for (const group of spec.groups) {
    out.push(`${group.title}:`)
    for (const key of group.flags) {
      const flag: FlagSpec = FLAGS[key]
      out.push(...flagLine(flag, spec.overrides?.[key] ?? flag.help))
    }
    out.push('')
  }
  out.push(...flagLine(FLAGS.help, FLAGS.help.help), '', UNITS_TEXT, '', EXIT_CODES_TEXT, '')
  return out.join('\n')
}

/** `kay --help`, or `kay <command> --help` when a command is given. */
export function helpText(command?: CommandName): string {
  if (command !== undefined) return commandHelp(command)
  const out = [
    'Usage: kay <command> [flags]',
    '',
    'kay: an agentless fleet collector over SSH (one long-lived connection per host).',
    '',
    'Commands:',
  ]
  for (const name of COMMAND_NAMES) out.push(`  ${name.padEnd(9)}${COMMANDS[name].summary}`)
  out.push(
    '',
    ...flagLine(FLAGS.help, 'show help (also after a command: kay exec --help)'),
    ...flagLine(FLAGS.version, FLAGS.version.help),
    '',
    'Keys in the live table: ↑/↓ PgUp/PgDn Home/End move, s sort, r reverse, p only problems, / filter, Enter detail,',
    'Esc back, q quit.',
    '',
    HOSTS_TEXT,
    '',
    UNITS_TEXT,
    '',
    EXIT_CODES_TEXT,
    '',
  )
  return out.join('\n')
}
