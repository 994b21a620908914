/** What every command shares: its I/O, the Supervisor options built from the connection flags, the waits. */
import { userInfo } from 'node:os'
import { defaultPinFile, defaultUserKnownHostsFiles, type HostTarget } from '@kay/core'
import { Supervisor, type SupervisorOptions } from '@kay/workers'
import { type ConnectionOptions, DEFAULTS } from '../args.js'
import { fixHint } from '../ui/collate.js'

export interface Io {
  out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number; rows?: number }
  err: NodeJS.WritableStream
  /** Set by the first Ctrl-C / SIGTERM, or a closed stdout: commands stop at once (remote commands get TERM). */
  signal: AbortSignal
  /** Set by a second Ctrl-C: remote commands still exiting get KILL now. */
  hurry: AbortSignal
}

/** The abort reason when stdout's reader went away (EPIPE): kay ends quietly, printing nothing more. */
export const READER_GONE = 'the reader of stdout went away'

/** Whether kay is ending because nobody reads its output any more. */
export function readerGone(io: Pick<Io, 'signal'>): boolean {
  return io.signal.aborted && io.signal.reason === READER_GONE
}

/** Options a command passes to the supervisor, derived from the connection flags. */
export function supervisorOptions(
  conn: ConnectionOptions,
  hosts: HostTarget[],
  extra: Partial<SupervisorOptions> = {},
): SupervisorOptions {
  const agent = process.env.SSH_AUTH_SOCK
  return {
    hosts,
    ...(conn.threads === undefined ? {} : { threads: conn.threads }),
    dialCap: conn.fanout,
    ...(conn.dialRate === undefined ? {} : { dialRate: conn.dialRate }),
    // Only an explicit --connect-timeout overrides the hosts' own ConnectTimeout (ssh_config).
    ...(conn.connectTimeoutMs === undefined ? {} : { handshakeTimeoutMs: conn.connectTimeoutMs }),
    collectMode: conn.collectMode,
    identity: {
      username: conn.user ?? userInfo().username,
      keyFiles: conn.identityFiles,
      ...(agent ? { agent } : {}),
    },
    trust: {
      knownHostsPath: conn.knownHosts ?? defaultPinFile(),
      // ssh's default UserKnownHostsFile (a host's own UserKnownHostsFile replaces it).
      extraKnownHosts: defaultUserKnownHostsFiles(),
      policy: conn.strictHostKeyChecking,
    },
    ...extra,
  }
}

/** --connect-timeout, else the default: the deadline of a tick that has no interval to fit in. */
export function connectTimeoutOf(conn: ConnectionOptions): number {
  return conn.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
}

/**
 * How long the slowest of `hosts` may take to dial: per host, --connect-timeout if given, else its ConnectTimeout
 * (ssh_config), else the default — summed over its ProxyJump hops, which dial first. Waiting this long before the
 * first tick lets a host that hangs report its own error (KAY_HANDSHAKE_TIMEOUT), not KAY_NOT_READY.
 */
export function dialDeadlineMs(conn: ConnectionOptions, hosts: readonly HostTarget[]): number {
  const one = (t: HostTarget) => conn.connectTimeoutMs ?? t.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
  let max = 0
  for (const h of hosts)
    max = Math.max(
      max,
      [...(h.jump ?? []), h].reduce((sum, t) => sum + one(t), 0),
    )
  return max || connectTimeoutOf(conn)
}

/**
 * How long a command waits for every host's first dial to settle: the longest dial chain's deadline, plus a second
 * for the dial to start (name lookup, a dial slot) after the wait did, so a host that hangs in its handshake reports
 * its KAY_HANDSHAKE_TIMEOUT on the first tick rather than `connecting`.
 */
export function settleDeadlineMs(conn: ConnectionOptions, hosts: readonly HostTarget[]): number {
  return dialDeadlineMs(conn, hosts) + 1000
}

/**
 * Wait until every host collects or has failed at least once (bounded by {@link settleDeadlineMs}, or until
 * `signal`): the supervisor's own wait. Past the deadline the command goes on, and each host not settled reports its
 * own state.
 */
export async function waitSettled(
  sup: Supervisor,
  conn: ConnectionOptions,
  hosts: readonly HostTarget[],
  signal: AbortSignal,
): Promise<void> {
  await sup.waitUntilSettled({ timeoutMs: settleDeadlineMs(conn, hosts), signal }).catch(() => {})
}

/**
 * Where a command's diagnostics go (host keys pinned, a fatal supervisor error): stderr, one line each, unless a view
 * that owns the terminal (the live table) captures them for its status line while it runs.
 */
export class Notices {
  readonly #err: NodeJS.WritableStream
  readonly #quiet: () => boolean
  #sink: ((line: string) => void) | undefined

  constructor(err: NodeJS.WritableStream, quiet: () => boolean = () => false) {
    this.#err = err
    this.#quiet = quiet
  }

  /** One diagnostic, without the `kay: ` prefix. */
  say(line: string): void {
    if (this.#quiet()) return
    if (this.#sink) this.#sink(line)
    else this.#err.write(`kay: ${line}\n`)
  }

  /** Send diagnostics to `sink` until the returned function is called. */
  capture(sink: (line: string) => void): () => void {
    this.#sink = sink
    return () => {
      if (this.#sink === sink) this.#sink = undefined
    }
  }
}

export async function withSupervisor<T>(
  opts: SupervisorOptions,
  io: Io,
  fn: (sup: Supervisor, notices: Notices) => Promise<T>,
): Promise<T> {
  const sup = await Supervisor.start(opts)
  const notices = new Notices(io.err, () => readerGone(io))
  sup.on('fatal', (err: Error) => notices.say(err.message))
  sup.on('pinned', (p) => notices.say(`pinned host key of ${p.host} (${p.fingerprint})`))
  // A second Ctrl-C: commands still exiting after TERM get KILL now.
  const onHurry = () => sup.hurry()
  io.hurry.addEventListener('abort', onHurry, { once: true })
  try {
    return await fn(sup, notices)
  } finally {
    await sup.stop({ timeoutMs: 3000 })
    io.hurry.removeEventListener('abort', onHurry)
  }
}

/** `--batch-fail` as a host count: N, or P% of `hosts` rounded up (at least one). */
export function stopAfterFailures(
  fail: { count: number } | { percent: number } | undefined,
  hosts: number,
): number | undefined {
  if (fail === undefined) return undefined
  if ('count' in fail) return fail.count
  return Math.max(1, Math.ceil((fail.percent * hosts) / 100))
}

export function errorLine(host: string, err: { code: string; message: string }): string {
  return `kay: ${host}: ${err.code}: ${err.message.replace(`${host}: `, '')}${fixHint(host, err)}`
}
