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

export type CommandName = 'fleet' | 'top' | 'collect' | 'exec' | 'cp' | 'rcopy' | 'demo' | 'trust' | 'serve'

/** How hosts are chosen. Specs and lists are returned unexpanded (pdsh-style expansion happens later). */
export interface HostSelection {
  /**
   * Positional host specs and `-w` items, in order, split on top-level commas (`web[1,2],db` → 2 items); `@NAME`
   * (and `-g NAME`) names a group of the groups file.
   */
  include: string[]
  /** `-x` items: hosts (or expressions, or `@NAME` groups) to remove from the selection. */
  exclude: string[]
  /** `--hostfile` paths and `-w ^FILE` (pdsh), one host spec per line. */
  hostfiles: string[]
  /** `-x ^FILE`: hosts listed in these files are removed. */
  excludeFiles?: string[]
  /** `--groups FILE`: the groups file for `@NAME` and `-g` (absent: the default search, see hosts.ts). */
  groupsFile?: string
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

export type ExecOutputMode = 'collate' | 'prefix' | 'json' | 'diff'
type TrustAction = 'list' | 'repin' | 'forget'

/** `--batch N` with `--batch-fail N|P%`: a rolling run. */
interface Rolling {
  batch?: number
  /** Stop starting hosts after this many failures, or this percentage of the hosts (at least one). */
  batchFail?: { count: number } | { percent: number }
}

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
      /** `-N`: print lines without the `host: ` prefix (prefix mode). */
      noPrefix: boolean
      timeoutMs: number
      maxOutputBytes: number
      /** `-I`: read stdin to its end and send it to the command on every host. */
      stdin: boolean
      /** `--outdir`: also write each host's stdout and stderr to files there. */
      outdir?: string
    } & Rolling &
      WithWarnings)
  | ({
      command: 'cp' | 'rcopy'
      hosts: HostSelection
      connection: ConnectionOptions
      /** cp: local files; rcopy: remote paths. */
      sources: string[]
      /** cp: the remote destination; rcopy: the local directory. */
      dest: string
      recursive: boolean
      timeoutMs: number
    } & Rolling &
      WithWarnings)
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
  | ({
      command: 'trust'
      action: TrustAction
      hosts: string[]
      connection: ConnectionOptions
      /** repin: no confirmation asked. */
      yes: boolean
    } & WithWarnings)
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
  /** `-I`: the most stdin kay reads and forwards (bigger input belongs in `kay cp`). */
  stdinMaxBytes: 16 * 1024 * 1024,
  listen: '127.0.0.1:9717',
  demoHosts: 200,
}

/** Upper bounds for numeric flags: typos such as `--fanout 16000` fail loudly instead of hammering a fleet. */
const LIMITS = { fanout: 1024, threads: 256, demoHosts: 100_000, ticks: 1_000_000_000, batch: 100_000 }

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
    help:
      'hosts to include: comma-separated host specs, pdsh-style ranges allowed (web[01-20],db1), @GROUP, or ^FILE ' +
      '(a host file); repeatable',
  }),
  x: f({
    long: 'exclude',
    short: 'x',
    kind: 'list',
    metavar: 'LIST',
    help: 'hosts to exclude (same syntax as -w, including @GROUP and ^FILE); repeatable',
  }),
  hostfile: f({
    long: 'hostfile',
    kind: 'list',
    metavar: 'FILE',
    help: 'read host specs from FILE, one per line; repeatable',
  }),
  group: f({
    long: 'group',
    short: 'g',
    kind: 'list',
    metavar: 'NAME',
    help: 'the hosts of group NAME in the groups file (same as -w @NAME; -x @NAME excludes one); repeatable',
  }),
  groupsFile: f({
    long: 'groups',
    kind: 'value',
    metavar: 'FILE',
    help: "groups file, ClusterShell's flat format: one 'NAME: host list' per line (lists may name @other groups)",
    default: '~/.config/kay/groups, else /etc/clustershell/groups.d/local.cfg, else /etc/clustershell/groups',
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
    help: 'known_hosts file kay pins host keys in (OpenSSH format; created 0600); ~/.ssh/known_hosts is honoured too',
    default: '~/.config/kay/known_hosts',
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
    help: "print 'host: line' for every output line as it arrives (a failed host ends with a line on stderr)",
    default: 'on',
  }),
  noPrefix: f({
    long: 'no-prefix',
    short: 'N',
    kind: 'bool',
    help: "with --prefix: print the output lines without the 'host: ' label (pdsh -N)",
  }),
  diff: f({
    long: 'diff',
    kind: 'bool',
    help: 'show how each output differs from the most common one (unified diff, clush --diff), printed at the end',
  }),
  batch: f({
    long: 'batch',
    kind: 'value',
    metavar: 'N',
    help: 'run on at most N hosts at once, fleet-wide, starting the next host as one finishes (a rolling run)',
    default: 'every host at once',
  }),
  batchFail: f({
    long: 'batch-fail',
    kind: 'value',
    metavar: 'N|P%',
    help: 'with --batch: start no further host once N hosts (or P% of the hosts, at least one) have failed; the rest are reported KAY_SKIPPED',
  }),
  stdin: f({
    long: 'stdin',
    short: 'I',
    kind: 'bool',
    help: "read kay's standard input to its end (at most 16MiB) and send it to the command on every host (pssh -I); without it the command reads nothing",
  }),
  outdir: f({
    long: 'outdir',
    kind: 'value',
    metavar: 'DIR',
    help: "also write each host's output to DIR/HOST.out and DIR/HOST.err (files 0600; DIR is created 0700)",
  }),
  recursive: f({
    long: 'recursive',
    short: 'r',
    kind: 'bool',
    help: 'copy directories with their contents',
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
  yes: f({
    long: 'yes',
    short: 'y',
    kind: 'bool',
    help: 'repin without asking (scripts); without it, repin asks on a terminal and refuses without one',
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

const SELECT: FlagKey[] = ['w', 'x', 'group', 'hostfile', 'groupsFile', 'allConfigHosts', 'shard']
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

/** What cp and rcopy share: hosts only from flags (their positionals are paths), the copy flags, the connection. */
const COPY_SPEC: Pick<CommandSpec, 'groups' | 'overrides'> = {
  groups: [
    { title: 'Hosts (-w, -g or a host file: positionals are the files)', flags: SELECT },
    { title: 'Copy', flags: ['recursive', 'timeout', 'batch', 'batchFail'] },
    { title: 'Connection', flags: CONNECT },
  ],
  overrides: { timeout: 'deadline per host for the whole copy' },
}

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
      { title: 'Output (one of)', flags: ['prefix', 'collate', 'json', 'diff'] },
      { title: 'Output, also', flags: ['noPrefix', 'outdir'] },
      { title: 'Input', flags: ['stdin'] },
      { title: 'Limits', flags: ['timeout', 'maxOutput', 'batch', 'batchFail'] },
      { title: 'Connection', flags: CONNECT },
    ],
    overrides: {
      json: 'print one NDJSON line per host: {host, ok, exitCode, signal, stdout, stderr, durationMs, error?}',
    },
  },
  cp: {
    usage: 'kay cp -w LIST [flags] SOURCE… DEST',
    summary: 'copy local files to DEST on every host over SFTP on the pooled connections (pdcp, clush --copy)',
    ...COPY_SPEC,
  },
  rcopy: {
    usage: 'kay rcopy -w LIST [flags] REMOTE… LOCALDIR',
    summary: 'copy files from every host into LOCALDIR as NAME.HOST (rpdcp, clush --rcopy)',
    ...COPY_SPEC,
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
    usage: 'kay trust list [HOST…] | kay trust repin HOST… [--yes] | kay trust forget HOST… [flags]',
    summary:
      'show why hosts are trusted (pin, known_hosts entry or CA), re-pin after a deliberate key change, forget pins',
    groups: [
      { title: 'Repin', flags: ['yes'] },
      { title: 'Connection (repin dials the host)', flags: CONNECT },
    ],
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
function flagName(key: FlagKey): string {
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
      const modes = (['collate', 'prefix', 'json', 'diff'] as const).filter((m) => v.bool(m))
      if (modes.length > 1) {
        throw new ConfigError(`${modes.map((m) => `--${m}`).join(' and ')} cannot be combined: choose one output mode`)
      }
      const output = modes[0] ?? DEFAULTS.execOutput
      const noPrefix = v.bool('noPrefix')
      if (noPrefix && output !== 'prefix') {
        throw new ConfigError(`-N (no prefix) applies to --prefix output only, not --${output}`)
      }
      const outdir = v.str('outdir')
      return {
        command,
        hosts: hostSelection(v, positionals),
        connection: connection(v, warnings),
        commandArgv: rest,
        remoteCommand: rest.join(' '),
        output,
        noPrefix,
        timeoutMs: v.duration('timeout', DEFAULTS.execTimeoutMs),
        maxOutputBytes: v.bytes('maxOutput', DEFAULTS.maxOutputBytes),
        stdin: v.bool('stdin'),
        ...(outdir === undefined ? {} : { outdir }),
        ...rolling(v),
        warnings,
      }
    }
    case 'cp':
    case 'rcopy': {
      if (positionals.length < 2) {
        const what = command === 'cp' ? 'SOURCE… DEST' : 'REMOTE… LOCALDIR'
        throw new ConfigError(
          `'kay ${command}' needs ${what} (got ${positionals.length} path${positionals.length === 1 ? '' : 's'}); ` +
            'hosts come from -w, -g or --hostfile',
        )
      }
      return {
        command,
        hosts: hostSelection(v, []),
        connection: connection(v, warnings),
        sources: positionals.slice(0, -1),
        dest: positionals.at(-1)!,
        recursive: v.bool('recursive'),
        timeoutMs: v.duration('timeout', DEFAULTS.execTimeoutMs),
        ...rolling(v),
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
      return {
        command,
        action,
        hosts: hosts.flatMap(splitList),
        connection: connection(v, warnings),
        yes: v.bool('yes'),
        warnings,
      }
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
        warnings.push(`serving unauthenticated metrics on non-loopback address ${listen.host}:${listen.port}`)
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
  // pdsh: `-w ^FILE` reads hosts from FILE, `-x ^FILE` excludes the hosts listed in it.
  const fromFile = (item: string) => item.startsWith('^')
  const fileOf = (item: string) => {
    const path = item.slice(1)
    if (path === '') throw new ConfigError(`'^' needs a file name after it (e.g. -w ^hosts.txt)`)
    return path
  }
  const groups = v.list('group').map((g) => {
    const name = g.replace(/^@/, '')
    if (!/^[A-Za-z0-9_.:-]+$/.test(name)) throw new ConfigError(`-g: '${g}' is not a group name`)
    return `@${name}`
  })
  const items = [...positionals, ...v.list('w')].flatMap(splitList)
  const include = [...items.filter((i) => !fromFile(i)), ...groups]
  const xItems = v.list('x').flatMap(splitList)
  const exclude = xItems.filter((i) => !fromFile(i))
  const hostfiles = [...v.list('hostfile'), ...items.filter(fromFile).map(fileOf)]
  const excludeFiles = xItems.filter(fromFile).map(fileOf)
  const allConfigHosts = v.bool('allConfigHosts')
  if (include.length === 0 && hostfiles.length === 0 && !allConfigHosts) {
    throw new ConfigError('no hosts given: name hosts, or use -w LIST, -g GROUP, --hostfile FILE or --all-config-hosts')
  }
  const sel: HostSelection = { include, exclude, hostfiles, allConfigHosts }
  if (excludeFiles.length > 0) sel.excludeFiles = excludeFiles
  const groupsFile = v.str('groupsFile')
  if (groupsFile !== undefined) sel.groupsFile = groupsFile
  const shard = v.str('shard')
  if (shard !== undefined) sel.shard = parseShardSpec(shard)
  return sel
}

/** `--batch N` and `--batch-fail N|P%`. */
function rolling(v: Values): Rolling {
  const batch = v.int('batch', 1, LIMITS.batch)
  const failText = v.str('batchFail')
  if (failText === undefined) return batch === undefined ? {} : { batch }
  if (batch === undefined) {
    throw new ConfigError(
      '--batch-fail needs --batch N: without it every host starts at once and nothing is left to stop',
    )
  }
  const m = /^(\d+)(%?)$/.exec(failText)
  const n = Number(m?.[1])
  if (m === null || n < 1 || (m[2] === '%' && n > 100)) {
    throw new ConfigError(`--batch-fail: '${failText}' is not N (hosts, 1 or more) or P% (1% to 100%)`)
  }
  return { batch, batchFail: m[2] === '%' ? { percent: n } : { count: n } }
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
      '--insecure-accept-any-host-key: host keys are NOT verified; anyone on the network path can ' +
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
function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim())
  const port = Number(m?.[3])
  if (m === null || port > 65_535) throw new ConfigError(`--listen: '${text}' is not ADDR:PORT (e.g. 127.0.0.1:9717)`)
  const host = m[1] ?? (m[2] === '' || m[2] === undefined ? '127.0.0.1' : m[2])
  return { host, port }
}

/** Whether an address only accepts connections from this machine. */
function isLoopback(host: string): boolean {
  const h = host.toLowerCase()
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || /^::ffff:127(\.\d{1,3}){3}$/.test(h)
}
