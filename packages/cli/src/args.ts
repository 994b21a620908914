/**
 * The command line, parsed into a {@link ParsedCommand} without touching the network or the file system.
 *
 * The flag table ({@link FLAGS}, {@link COMMANDS}) is the single source of truth: the parser validates against
 * it and `help.ts` prints it, so a flag cannot exist without being documented.
 *
 * Grammar: `kay <command> [flags] [positionals] [-- remote command]`. Flags may come before or after
 * positionals and before the command; long flags take `--name value` or `--name=value`, short ones `-w value` or
 * `-wvalue`. Everything after the first `--` is the remote command (exec only). Unknown flags, flags that do not
 * belong to the command, and repeats of single-valued flags are errors (ConfigError, code KAY_CONFIG).
 */
import type { StrictHostKeyChecking } from '@kay/core'
import { ConfigError } from '@kay/core'
import { parseShardSpec } from '@kay/workers'
import { parseBytes, parseDuration } from './duration.js'

export type CommandName = 'fleet' | 'top' | 'collect' | 'exec' | 'demo' | 'trust' | 'serve'

/** How hosts are chosen. Specs and lists are returned unexpanded (pdsh-style expansion happens later). */
export interface HostSelection {
  /** Positional host specs and `-w` items, in order, split on top-level commas (`web[1,2],db` → 2 items). */
  include: string[]
  /** `-x` items: hosts (or expressions) to remove from the selection. */
  exclude: string[]
  /** `--hostfile` paths, one host spec per line. */
  hostfiles: string[]
  /** `--all-config-hosts`: every concrete `Host` alias in ssh_config (no wildcards). */
  allConfigHosts: boolean
  /** `--shard i/N` (1-based on the command line): keep hosts whose rendezvous hash picks collector i of N. `index` is 0-based. */
  shard?: { index: number; count: number }
}

/** How connections are made. Units are in the names. */
export interface ConnectionOptions {
  sshConfig?: string
  knownHosts?: string
  /** `-i` key files, in the order given. Tried before ssh_config IdentityFile entries. */
  identityFiles: string[]
  user?: string
  /** Global cap on dials (TCP connect + handshake + auth) in flight. */
  fanout: number
  /** Fleet-wide dial attempts per second (0 = unlimited); absent = the supervisor's default (20 × fanout). */
  dialRate?: number
  /**
   * `--connect-timeout`, only when given: it then wins over every host's ConnectTimeout from ssh_config, as a
   * command-line `-o ConnectTimeout=` does for ssh. Absent: each host's ConnectTimeout, else DEFAULTS.connectTimeoutMs.
   */
  connectTimeoutMs?: number
  /** Worker threads to shard hosts over; absent = the supervisor's default (one per 1,000 hosts, ≤ one per core). */
  threads?: number
  strictHostKeyChecking: StrictHostKeyChecking
  collectMode: 'stream' | 'exec'
}

export type ExecOutputMode = 'collate' | 'prefix' | 'json'
export type TrustAction = 'list' | 'repin' | 'forget'

interface WithWarnings {
  /** Messages the caller must print to stderr before running (e.g. the insecure host-key warning). */
  warnings: string[]
}

export type ParsedCommand =
  | { command: 'help'; topic?: CommandName; exitCode: 0 | 1 }
  | { command: 'version' }
  | ({
      command: 'fleet'
      hosts: HostSelection
      connection: ConnectionOptions
      intervalMs: number
      json: boolean
      ticks?: number
    } & WithWarnings)
  | ({ command: 'top'; host: string; connection: ConnectionOptions; intervalMs: number } & WithWarnings)
  | ({
      command: 'collect'
      hosts: HostSelection
      connection: ConnectionOptions
      json: boolean
      sampleGapMs: number
    } & WithWarnings)
  | ({
      command: 'exec'
      hosts: HostSelection
      connection: ConnectionOptions
      /** The words after `--`. */
      commandArgv: string[]
      /** The words joined with spaces, as `ssh host cmd args…` sends them (no extra quoting). */
      remoteCommand: string
      output: ExecOutputMode
      timeoutMs: number
      maxOutputBytes: number
    } & WithWarnings)
  | ({
      command: 'demo'
      hostCount: number
      intervalMs: number
      json: boolean
      ticks?: number
      fanout: number
      /** Absent: the supervisor's default. */
      threads?: number
    } & WithWarnings)
  | ({ command: 'trust'; action: TrustAction; hosts: string[]; connection: ConnectionOptions } & WithWarnings)
  | ({
      command: 'serve'
      hosts: HostSelection
      connection: ConnectionOptions
      listen: { host: string; port: number }
      allowNonLoopback: boolean
      intervalMs: number
    } & WithWarnings)

/** Defaults, with units in the names. `threads` has none here: the supervisor sizes it to the fleet. */
export const DEFAULTS = {
  fanout: 16,
  connectTimeoutMs: 10_000,
  strictHostKeyChecking: 'accept-new' as StrictHostKeyChecking,
  collectMode: 'stream' as const,
  intervalMs: 5_000,
  sampleGapMs: 1_000,
  execTimeoutMs: 30_000,
  maxOutputBytes: 1024 * 1024,
  execOutput: 'prefix' as ExecOutputMode,
  listen: '127.0.0.1:9717',
  demoHosts: 200,
}

/** Upper bounds for numeric flags: typos such as `--fanout 16000` fail loudly instead of hammering a fleet. */
export const LIMITS = { fanout: 1024, threads: 256, demoHosts: 100_000, ticks: 1_000_000_000 }

type FlagKind = 'bool' | 'value' | 'list'

/** One flag, as parsed and as documented. */
export interface FlagSpec {
  long: string
  short?: string
  kind: FlagKind
  /** Placeholder for the value in help (DURATION, N, FILE, …). */
  metavar?: string
  help: string
  /** The default, as shown in help. */
  default?: string
}

const f = (spec: FlagSpec): FlagSpec => spec

/** Every flag kay knows. Per-command help text can override `help` (see {@link CommandSpec.overrides}). */
export const FLAGS = {
  w: f({
    long: 'include',
    short: 'w',
    kind: 'list',
    metavar: 'LIST',
    help: 'hosts to include: comma-separated host specs, pdsh-style ranges allowed (web[01-20],db1); repeatable',
  }),
  x: f({
    long: 'exclude',
    short: 'x',
    kind: 'list',
    metavar: 'LIST',
    help: 'hosts to exclude (same syntax as -w); repeatable',
  }),
  hostfile: f({
    long: 'hostfile',
    kind: 'list',
    metavar: 'FILE',
    help: 'read host specs from FILE, one per line; repeatable',
  }),
  allConfigHosts: f({
    long: 'all-config-hosts',
    kind: 'bool',
    help: 'include every concrete Host alias from ssh_config (wildcard patterns are skipped)',
  }),
  shard: f({
    long: 'shard',
    kind: 'value',
    metavar: 'i/N',
    help: 'collector i of N (1-based: 1/4 .. 4/4): keep only the hosts a rendezvous hash assigns to it, to split a fleet over N collectors',
  }),
  sshConfig: f({
    long: 'ssh-config',
    kind: 'value',
    metavar: 'FILE',
    help: 'ssh_config file to read',
    default: '~/.ssh/config',
  }),
  knownHosts: f({
    long: 'known-hosts',
    kind: 'value',
    metavar: 'FILE',
    help: 'known_hosts file for pins (OpenSSH format; created 0600)',
    default: '~/.ssh/known_hosts',
  }),
  identity: f({
    long: 'identity',
    short: 'i',
    kind: 'list',
    metavar: 'KEY',
    help: 'private key file for public-key auth; repeatable; tried before ssh_config keys and the agent',
  }),
  user: f({
    long: 'login',
    short: 'l',
    kind: 'value',
    metavar: 'USER',
    help: 'remote user',
    default: 'ssh_config User, else $USER',
  }),
  fanout: f({
    long: 'fanout',
    kind: 'value',
    metavar: 'N',
    help: 'at most N dials (TCP connect + handshake + auth) in flight at once, across all threads',
    default: String(DEFAULTS.fanout),
  }),
  dialRate: f({
    long: 'dial-rate',
    kind: 'value',
    metavar: 'N',
    help: 'at most N dial attempts per second, fleet-wide (spreads redials after an outage); 0 = no limit',
    default: '20 x fanout',
  }),
  connectTimeout: f({
    long: 'connect-timeout',
    kind: 'value',
    metavar: 'DURATION',
    help: 'deadline for TCP connect + handshake + auth of one dial (wins over ssh_config ConnectTimeout)',
    default: 'ConnectTimeout, else 10s',
  }),
  threads: f({
    long: 'threads',
    kind: 'value',
    metavar: 'N',
    help: 'worker threads to shard hosts over',
    default: 'one per 1,000 hosts, at most one per CPU',
  }),
  strict: f({
    long: 'strict-host-keys',
    kind: 'bool',
    help: 'refuse hosts without a pinned key (StrictHostKeyChecking yes)',
  }),
  acceptNew: f({
    long: 'accept-new',
    kind: 'bool',
    help: 'pin unknown host keys on first use, refuse changed ones (StrictHostKeyChecking accept-new)',
    default: 'on',
  }),
  insecure: f({
    long: 'insecure-accept-any-host-key',
    kind: 'bool',
    help: 'accept any host key without checking or pinning (StrictHostKeyChecking no); prints a warning',
  }),
  collectMode: f({
    long: 'collect-mode',
    kind: 'value',
    metavar: 'stream|exec',
    help: 'stream: one long-lived collection channel per host; exec: a new channel per tick',
    default: 'stream',
  }),
  interval: f({ long: 'interval', kind: 'value', metavar: 'DURATION', help: 'time between ticks', default: '5s' }),
  json: f({ long: 'json', kind: 'bool', help: 'print NDJSON instead of the table' }),
  ticks: f({
    long: 'ticks',
    kind: 'value',
    metavar: 'N',
    help: 'stop after N ticks',
    default: 'run until Ctrl-C or q',
  }),
  sampleGap: f({
    long: 'sample-gap',
    kind: 'value',
    metavar: 'DURATION',
    help: 'time between the two samples that CPU % and network rates are computed from',
    default: '1s',
  }),
  collate: f({
    long: 'collate',
    kind: 'bool',
    help: 'group hosts with identical output and exit code (dshbak -c style), printed at the end',
  }),
  prefix: f({
    long: 'prefix',
    kind: 'bool',
    help: "print 'host: line' for every output line as it arrives",
    default: 'on',
  }),
  timeout: f({
    long: 'timeout',
    kind: 'value',
    metavar: 'DURATION',
    help: 'deadline per host for the remote command',
    default: '30s',
  }),
  maxOutput: f({
    long: 'max-output',
    kind: 'value',
    metavar: 'BYTES',
    help: 'cap on stdout+stderr per host (bytes, or with a unit: 64KiB, 1MiB, 10MB); past it the command is stopped',
    default: '1MiB',
  }),
  listen: f({
    long: 'listen',
    kind: 'value',
    metavar: 'ADDR:PORT',
    help: 'address for the Prometheus /metrics endpoint ([::1]:PORT for IPv6)',
    default: DEFAULTS.listen,
  }),
  allowNonLoopback: f({
    long: 'allow-non-loopback',
    kind: 'bool',
    help: 'allow --listen on a non-loopback address (the endpoint has no authentication)',
  }),
  demoHosts: f({
    long: 'hosts',
    kind: 'value',
    metavar: 'N',
    help: 'number of simulated hosts (on 127.0.0.0/8)',
    default: String(DEFAULTS.demoHosts),
  }),
  help: f({ long: 'help', short: 'h', kind: 'bool', help: 'show help' }),
  version: f({ long: 'version', kind: 'bool', help: 'print the version' }),
} satisfies Record<string, FlagSpec>

export type FlagKey = keyof typeof FLAGS

/** A command: its usage line, summary, positionals and the flags it accepts (by group, for help). */
export interface CommandSpec {
  usage: string
  summary: string
  /** Flag groups shown in help, in order. */
  groups: Array<{ title: string; flags: FlagKey[] }>
  /** Per-command help text for a flag. */
  overrides?: Partial<Record<FlagKey, string>>
}

const SELECT: FlagKey[] = ['w', 'x', 'hostfile', 'allConfigHosts', 'shard']
const CONNECT: FlagKey[] = [
  'sshConfig',
  'knownHosts',
  'identity',
  'user',
  'fanout',
  'dialRate',
  'connectTimeout',
  'threads',
  'strict',
  'acceptNew',
  'insecure',
  'collectMode',
]

export const COMMANDS: Record<CommandName, CommandSpec> = {
  fleet: {
    usage: 'kay fleet [HOST…] [-w LIST] [flags]',
    summary: 'live table of CPU, memory, load and uptime for every host, refreshed every tick',
    groups: [
      { title: 'Hosts', flags: SELECT },
      { title: 'Display', flags: ['interval', 'json', 'ticks'] },
      { title: 'Connection', flags: CONNECT },
    ],
    overrides: { json: 'print one NDJSON line per host and a summary line per tick instead of the table' },
  },
  top: {
    usage: 'kay top HOST [flags]',
    summary: 'live detail of one host: per-core CPU, top processes, filesystems, interfaces',
    groups: [
      { title: 'Display', flags: ['interval'] },
      { title: 'Connection', flags: CONNECT },
    ],
  },
  collect: {
    usage: 'kay collect [HOST…] [-w LIST] [flags]',
    summary: 'collect metrics once (two samples, --sample-gap apart) and print them',
    groups: [
      { title: 'Hosts', flags: SELECT },
      { title: 'Output', flags: ['json', 'sampleGap'] },
      { title: 'Connection', flags: CONNECT },
    ],
    overrides: { json: 'print one NDJSON line per host and a summary line instead of the table' },
  },
  exec: {
    usage: 'kay exec [HOST…] [-w LIST] [flags] -- COMMAND [ARG…]',
    summary: 'run COMMAND on every host over its pooled connection (pdsh style)',
    groups: [
      { title: 'Hosts', flags: SELECT },
      { title: 'Output (one of)', flags: ['prefix', 'collate', 'json'] },
      { title: 'Limits', flags: ['timeout', 'maxOutput'] },
      { title: 'Connection', flags: CONNECT },
    ],
    overrides: {
      json: 'print one NDJSON line per host: {host, ok, exitCode, stdout, stderr, durationMs, error?}',
    },
  },
  demo: {
    usage: 'kay demo [--hosts N] [flags]',
    summary: 'start a simulated fleet on loopback and show the live table for it',
    groups: [
      { title: 'Simulator', flags: ['demoHosts'] },
      { title: 'Display', flags: ['interval', 'json', 'ticks'] },
      { title: 'Connection', flags: ['fanout', 'dialRate', 'threads'] },
    ],
  },
  trust: {
    usage: 'kay trust list [HOST…] | kay trust repin HOST… | kay trust forget HOST… [flags]',
    summary: 'list, re-pin (after a deliberate key change) or forget pinned host keys',
    groups: [{ title: 'Connection (repin dials the host)', flags: CONNECT }],
  },
  serve: {
    usage: 'kay serve [HOST…] [-w LIST] [flags]',
    summary: 'collect every tick and expose Prometheus metrics on --listen',
    groups: [
      { title: 'Hosts', flags: SELECT },
      { title: 'Endpoint', flags: ['listen', 'allowNonLoopback', 'interval'] },
      { title: 'Connection', flags: CONNECT },
    ],
  },
}

export const COMMAND_NAMES = Object.keys(COMMANDS) as CommandName[]

/** Flags a command accepts (its groups plus --help). */
export function flagsOf(command: CommandName): Set<FlagKey> {
  const set = new Set<FlagKey>(['help'])
  for (const g of COMMANDS[command].groups) for (const k of g.flags) set.add(k)
  return set
}

const BY_LONG = new Map<string, FlagKey>()
const BY_SHORT = new Map<string, FlagKey>()
for (const [key, spec] of Object.entries(FLAGS) as Array<[FlagKey, FlagSpec]>) {
  BY_LONG.set(spec.long, key)
  if (spec.short !== undefined) BY_SHORT.set(spec.short, key)
}

/** How a flag is written on the command line, for messages: `-w`, `--fanout`. */
export function flagName(key: FlagKey): string {
  const spec: FlagSpec = FLAGS[key]
  return spec.short !== undefined ? `-${spec.short}` : `--${spec.long}`
}

interface Scanned {
  positionals: string[]
  flags: Map<FlagKey, string[]>
  /** Words after `--`, or undefined when there was no `--`. */
  rest: string[] | undefined
}

/**
 * Parse `argv` (without the node and script paths).
 * @throws ConfigError (KAY_CONFIG) with a one-line message that names the offending flag or word.
 */
export function parseArgs(argv: readonly string[]): ParsedCommand {
  const dashDash = argv.indexOf('--')
  const before = dashDash === -1 ? argv : argv.slice(0, dashDash)
  // Help and version win over every other error, so `kay exec --help` works without a valid command line.
  if (before.some((a) => a === '-h' || a === '--help')) {
    const topic = before.find((a): a is CommandName => (COMMAND_NAMES as string[]).includes(a))
    return topic === undefined ? { command: 'help', exitCode: 0 } : { command: 'help', topic, exitCode: 0 }
  }
  if (before.includes('--version')) return { command: 'version' }
  if (argv.length === 0) return { command: 'help', exitCode: 1 }

  const scanned = scan(argv)
  const [name, ...positionals] = scanned.positionals
  if (name === undefined)
    throw new ConfigError(`no command given (commands: ${COMMAND_NAMES.join(', ')}; see kay --help)`)
  if (!(COMMAND_NAMES as string[]).includes(name)) {
    throw new ConfigError(`unknown command '${name}' (commands: ${COMMAND_NAMES.join(', ')}; see kay --help)`)
  }
  const command = name as CommandName
  const allowed = flagsOf(command)
  for (const key of scanned.flags.keys()) {
    if (!allowed.has(key)) {
      throw new ConfigError(`${flagName(key)} is not an option of 'kay ${command}' (see kay ${command} --help)`)
    }
  }
  if (scanned.rest !== undefined && command !== 'exec') {
    throw new ConfigError(`'--' is only used by 'kay exec' to start the remote command`)
  }
  const v = new Values(scanned.flags)
  const warnings: string[] = []
  switch (command) {
    case 'fleet': {
      const ticks = v.int('ticks', 1, LIMITS.ticks)
      return {
        command,
        hosts: hostSelection(v, positionals),
        connection: connection(v, warnings),
        intervalMs: v.duration('interval', DEFAULTS.intervalMs),
        json: v.bool('json'),
        ...(ticks === undefined ? {} : { ticks }),
        warnings,
      }
    }
    case 'top': {
      if (positionals.length !== 1) {
        throw new ConfigError(`'kay top' takes exactly one HOST (got ${positionals.length}); see kay top --help`)
      }
      return {
        command,
        host: positionals[0]!,
        connection: connection(v, warnings),
        intervalMs: v.duration('interval', DEFAULTS.intervalMs),
        warnings,
      }
    }
    case 'collect':
      return {
        command,
        hosts: hostSelection(v, positionals),
        connection: connection(v, warnings),
        json: v.bool('json'),
        sampleGapMs: v.duration('sampleGap', DEFAULTS.sampleGapMs),
        warnings,
      }
    case 'exec': {
      const rest = scanned.rest
      if (rest === undefined) {
        throw new ConfigError(`'kay exec' needs the remote command after '--' (e.g. kay exec -w web[1-3] -- uptime)`)
      }
      if (rest.length === 0 || rest.every((w) => w.trim() === '')) {
        throw new ConfigError(`'kay exec': the remote command after '--' is empty`)
      }
      const modes = (['collate', 'prefix', 'json'] as const).filter((m) => v.bool(m))
      if (modes.length > 1) {
        throw new ConfigError(`${modes.map((m) => `--${m}`).join(' and ')} cannot be combined: choose one output mode`)
      }
      return {
        command,
        hosts: hostSelection(v, positionals),
        connection: connection(v, warnings),
        commandArgv: rest,
        remoteCommand: rest.join(' '),
        output: modes[0] ?? DEFAULTS.execOutput,
        timeoutMs: v.duration('timeout', DEFAULTS.execTimeoutMs),
        maxOutputBytes: v.bytes('maxOutput', DEFAULTS.maxOutputBytes),
        warnings,
      }
    }
    case 'demo': {
      if (positionals.length > 0)
        throw new ConfigError(`'kay demo' takes no hosts (got '${positionals[0]}'); use --hosts N`)
      const ticks = v.int('ticks', 1, LIMITS.ticks)
      const threads = v.int('threads', 1, LIMITS.threads)
      return {
        command,
        hostCount: v.int('demoHosts', 1, LIMITS.demoHosts) ?? DEFAULTS.demoHosts,
        intervalMs: v.duration('interval', DEFAULTS.intervalMs),
        json: v.bool('json'),
        ...(ticks === undefined ? {} : { ticks }),
        fanout: v.int('fanout', 1, LIMITS.fanout) ?? DEFAULTS.fanout,
        ...(threads === undefined ? {} : { threads }),
        warnings,
      }
    }
    case 'trust': {
      const [action, ...hosts] = positionals
      if (action !== 'list' && action !== 'repin' && action !== 'forget') {
        throw new ConfigError(
          action === undefined
            ? `'kay trust' needs an action: list, repin HOST… or forget HOST…`
            : `unknown trust action '${action}' (use list, repin HOST… or forget HOST…)`,
        )
      }
      if (action !== 'list' && hosts.length === 0)
        throw new ConfigError(`'kay trust ${action}' needs at least one HOST`)
      return { command, action, hosts: hosts.flatMap(splitList), connection: connection(v, warnings), warnings }
    }
    case 'serve': {
      const listen = parseListen(v.str('listen') ?? DEFAULTS.listen)
      const allowNonLoopback = v.bool('allowNonLoopback')
      if (!isLoopback(listen.host)) {
        if (!allowNonLoopback) {
          throw new ConfigError(
            `--listen ${listen.host}:${listen.port} is not a loopback address; the endpoint has no authentication, ` +
              'add --allow-non-loopback to expose it anyway',
          )
        }
        warnings.push(`warning: serving unauthenticated metrics on non-loopback address ${listen.host}:${listen.port}`)
      }
      return {
        command,
        hosts: hostSelection(v, positionals),
        connection: connection(v, warnings),
        listen,
        allowNonLoopback,
        intervalMs: v.duration('interval', DEFAULTS.intervalMs),
        warnings,
      }
    }
  }
}

function scan(argv: readonly string[]): Scanned {
  const positionals: string[] = []
  const flags = new Map<FlagKey, string[]>()
  const add = (key: FlagKey, value: string): void => {
    const spec: FlagSpec = FLAGS[key]
    const prev = flags.get(key)
    if (prev !== undefined && spec.kind !== 'list') throw new ConfigError(`${flagName(key)} given more than once`)
    if (prev === undefined) flags.set(key, [value])
    else prev.push(value)
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') return { positionals, flags, rest: argv.slice(i + 1) }
    let key: FlagKey | undefined
    let inline: string | undefined
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const long = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
      inline = eq === -1 ? undefined : arg.slice(eq + 1)
      key = BY_LONG.get(long)
      if (key === undefined) throw new ConfigError(`unknown option --${long}${suggest(long)}`)
    } else if (arg.startsWith('-') && arg.length > 1) {
      key = BY_SHORT.get(arg[1]!)
      if (key === undefined) throw new ConfigError(`unknown option -${arg[1]}`)
      inline = arg.length > 2 ? arg.slice(2) : undefined
    } else {
      positionals.push(arg)
      continue
    }
    const spec: FlagSpec = FLAGS[key]
    const name = flagName(key)
    if (spec.kind === 'bool') {
      if (inline !== undefined) throw new ConfigError(`${name} takes no value (got '${inline}')`)
      add(key, '')
      continue
    }
    let value = inline
    if (value === undefined) {
      const next = argv[i + 1]
      if (next === undefined || next === '--' || (next.startsWith('-') && next.length > 1)) {
        throw new ConfigError(`${name} needs a value (${spec.metavar ?? 'VALUE'})`)
      }
      value = next
      i++
    }
    if (value === '') throw new ConfigError(`${name} needs a non-empty value (${spec.metavar ?? 'VALUE'})`)
    add(key, value)
  }
  return { positionals, flags, rest: undefined }
}

function suggest(long: string): string {
  let best: string | undefined
  let bestD = 3
  for (const name of BY_LONG.keys()) {
    const d = editDistance(long, name)
    if (d < bestD) {
      bestD = d
      best = name
    }
  }
  return best === undefined ? '' : ` (did you mean --${best}?)`
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return 99
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length]!
}

/** Typed access to scanned flag values; every conversion error names the flag. */
class Values {
  constructor(private readonly flags: Map<FlagKey, string[]>) {}

  bool(key: FlagKey): boolean {
    return this.flags.has(key)
  }

  str(key: FlagKey): string | undefined {
    return this.flags.get(key)?.[0]
  }

  list(key: FlagKey): string[] {
    return this.flags.get(key) ?? []
  }

  int(key: FlagKey, min: number, max: number): number | undefined {
    const s = this.str(key)
    if (s === undefined) return undefined
    if (!/^\d+$/.test(s)) throw new ConfigError(`${flagName(key)}: '${s}' is not a whole number`)
    const n = Number(s)
    if (n < min || n > max) throw new ConfigError(`${flagName(key)}: ${s} is out of range (${min}..${max})`)
    return n
  }

  duration(key: FlagKey, fallback: number): number {
    return this.optionalDuration(key) ?? fallback
  }

  /** The flag's duration, or undefined when it was not given (a default would hide that). */
  optionalDuration(key: FlagKey): number | undefined {
    const s = this.str(key)
    if (s === undefined) return undefined
    const ms = parseDuration(s, flagName(key))
    if (ms <= 0) throw new ConfigError(`${flagName(key)}: must be more than 0 (got '${s}')`)
    return ms
  }

  bytes(key: FlagKey, fallback: number): number {
    const s = this.str(key)
    if (s === undefined) return fallback
    const n = parseBytes(s, flagName(key))
    if (n <= 0) throw new ConfigError(`${flagName(key)}: must be more than 0 bytes (got '${s}')`)
    return n
  }
}

function hostSelection(v: Values, positionals: string[]): HostSelection {
  const include = [...positionals, ...v.list('w')].flatMap(splitList)
  const exclude = v.list('x').flatMap(splitList)
  const hostfiles = v.list('hostfile')
  const allConfigHosts = v.bool('allConfigHosts')
  if (include.length === 0 && hostfiles.length === 0 && !allConfigHosts) {
    throw new ConfigError('no hosts given: name hosts, or use -w LIST, --hostfile FILE or --all-config-hosts')
  }
  const sel: HostSelection = { include, exclude, hostfiles, allConfigHosts }
  const shard = v.str('shard')
  if (shard !== undefined) sel.shard = parseShardSpec(shard)
  return sel
}

/** Split a host list on commas that are not inside `[...]`: `web[1,3],db` → [`web[1,3]`, `db`]. Empty items dropped. */
export function splitList(text: string): string[] {
  const out: string[] = []
  let depth = 0
  let start = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '[') depth++
    else if (c === ']') depth = Math.max(0, depth - 1)
    else if (c === ',' && depth === 0) {
      out.push(text.slice(start, i))
      start = i + 1
    }
  }
  out.push(text.slice(start))
  return out.map((s) => s.trim()).filter((s) => s !== '')
}

function connection(v: Values, warnings: string[]): ConnectionOptions {
  const modes = (['strict', 'acceptNew', 'insecure'] as const).filter((k) => v.bool(k))
  if (modes.length > 1) {
    throw new ConfigError(`${modes.map(flagName).join(' and ')} cannot be combined: choose one host-key policy`)
  }
  const policy: Record<(typeof modes)[number], StrictHostKeyChecking> = {
    strict: 'yes',
    acceptNew: 'accept-new',
    insecure: 'no',
  }
  const strictHostKeyChecking = modes[0] === undefined ? DEFAULTS.strictHostKeyChecking : policy[modes[0]]
  if (strictHostKeyChecking === 'no') {
    warnings.push(
      'warning: --insecure-accept-any-host-key: host keys are NOT verified; anyone on the network path can ' +
        'impersonate your hosts',
    )
  }
  const collectMode = v.str('collectMode') ?? DEFAULTS.collectMode
  if (collectMode !== 'stream' && collectMode !== 'exec') {
    throw new ConfigError(`--collect-mode: '${collectMode}' is not stream or exec`)
  }
  const out: ConnectionOptions = {
    identityFiles: v.list('identity'),
    fanout: v.int('fanout', 1, LIMITS.fanout) ?? DEFAULTS.fanout,
    strictHostKeyChecking,
    collectMode,
  }
  const connectTimeoutMs = v.optionalDuration('connectTimeout')
  if (connectTimeoutMs !== undefined) out.connectTimeoutMs = connectTimeoutMs
  const threads = v.int('threads', 1, LIMITS.threads)
  if (threads !== undefined) out.threads = threads
  const dialRate = v.int('dialRate', 0, 1_000_000)
  if (dialRate !== undefined) out.dialRate = dialRate
  const sshConfig = v.str('sshConfig')
  const knownHosts = v.str('knownHosts')
  const user = v.str('user')
  if (sshConfig !== undefined) out.sshConfig = sshConfig
  if (knownHosts !== undefined) out.knownHosts = knownHosts
  if (user !== undefined) out.user = user
  return out
}

/** Parse `ADDR:PORT`, `[IPv6]:PORT` or `:PORT` (loopback). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim())
  const port = Number(m?.[3])
  if (m === null || port > 65_535) throw new ConfigError(`--listen: '${text}' is not ADDR:PORT (e.g. 127.0.0.1:9717)`)
  const host = m[1] ?? (m[2] === '' || m[2] === undefined ? '127.0.0.1' : m[2])
  return { host, port }
}

/** Whether an address only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase()
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || /^::ffff:127(\.\d{1,3}){3}$/.test(h)
}
