/** What every command shares: its I/O, the Supervisor options built from the connection flags, the waits. */
import { homedir, userInfo } from 'node:os'
import { join } from 'node:path'
import { defaultPinFile, type HostStatus, type HostTarget } from '@kay/core'
import { Supervisor, type SupervisorOptions } from '@kay/workers'
import type { ConnectionOptions } from '../args.js'

export interface Io {
  out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number; rows?: number }
  err: NodeJS.WritableStream
  /** Set by the SIGINT handler: commands stop at the next opportunity. */
  signal: AbortSignal
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
    handshakeTimeoutMs: conn.connectTimeoutMs,
    collectMode: conn.collectMode,
    identity: {
      username: conn.user ?? userInfo().username,
      keyFiles: conn.identityFiles,
      ...(agent ? { agent } : {}),
    },
    trust: {
      knownHostsPath: conn.knownHosts ?? defaultPinFile(),
      extraKnownHosts: [join(homedir(), '.ssh', 'known_hosts')],
      policy: conn.strictHostKeyChecking,
    },
    ...extra,
  }
}

/**
 * Wait until every host is ready with its collection stream probed (or collecting over exec), or has failed at least
 * once (bounded by `ms`).
 */
export async function waitSettled(sup: Supervisor, ms: number, signal: AbortSignal): Promise<void> {
  const end = Date.now() + ms
  const settled = (s: HostStatus) =>
    (s.state === 'ready' && s.collectPhase !== 'starting' && s.collectPhase !== 'probing') ||
    s.state === 'quarantined' ||
    (s.state === 'backoff' && s.attempts > 0)
  while (!signal.aborted && Date.now() < end) {
    if (sup.statuses().every(settled)) return
    await new Promise((r) => setTimeout(r, 25))
  }
}

export async function withSupervisor<T>(
  opts: SupervisorOptions,
  io: Io,
  fn: (sup: Supervisor) => Promise<T>,
): Promise<T> {
  const sup = await Supervisor.start(opts)
  const onFatal = (err: Error) => io.err.write(`kay: ${err.message}\n`)
  sup.on('fatal', onFatal)
  sup.on('pinned', (p) => io.err.write(`kay: pinned host key of ${p.host} (${p.fingerprint})\n`))
  try {
    return await fn(sup)
  } finally {
    await sup.stop({ timeoutMs: 3000 })
  }
}

export function errorLine(host: string, err: { code: string; message: string }): string {
  const hint =
    err.code === 'KAY_HOST_KEY_MISMATCH'
      ? ` (check the change, then: kay trust repin ${host})`
      : err.code === 'KAY_AUTH_FAILED'
        ? ' (check -i KEY, -l USER and the agent)'
        : ''
  return `kay: ${host}: ${err.code}: ${err.message.replace(`${host}: `, '')}${hint}`
}
