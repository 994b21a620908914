/**
 * The CLI's commands: each parses nothing (args.ts did), builds a Supervisor, and renders what it replies.
 * No connection logic lives here.
 */
import { homedir, userInfo } from 'node:os'
import { join } from 'node:path'
import {
  ConfigError,
  defaultPinFile,
  type HostMetrics,
  type HostStatus,
  type HostTarget,
  isKayError,
  KnownHostsStore,
} from '@kay/core'
import { type CollectTick, Supervisor, type SupervisorOptions } from '@kay/workers'
import type { ConnectionOptions, ParsedCommand } from './args.js'
import { EXIT, type ExitCode, exitCodeFor, type HostOutcome } from './help.js'
import { resolveHosts } from './hosts.js'
import { createServeMetrics, reloadHosts, startHttp } from './serve.js'
import { runTui } from './tui.js'
import { collateResults, type ExecResult, execJsonLine, PrefixWriter, renderCollated } from './ui/collate.js'
import { renderDetail } from './ui/detail.js'
import { type HostReport, tickLines } from './ui/ndjson.js'
import { type FleetRow, prepareTable, renderFleet } from './ui/table.js'

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

/** Wait until every host is ready or has failed at least once (bounded by `ms`). */
export async function waitSettled(sup: Supervisor, ms: number, signal: AbortSignal): Promise<void> {
  const end = Date.now() + ms
  const settled = (s: HostStatus) =>
    s.state === 'ready' || s.state === 'quarantined' || (s.state === 'backoff' && s.attempts > 0)
  while (!signal.aborted && Date.now() < end) {
    if (sup.statuses().every(settled)) return
    await new Promise((r) => setTimeout(r, 25))
  }
}

/**
 * The error to report for a host. A `KAY_NOT_READY` answer is replaced by the failure that keeps the host down
 * (its last dial error: auth, host key, connect…), so the report and the exit code name the cause, not the symptom.
 */
export function causeOf(
  error: { code: string; message: string } | undefined,
  status: Pick<HostStatus, 'lastError'> | undefined,
): { code: string; message: string } | undefined {
  if (error?.code === 'KAY_NOT_READY' && status?.lastError) {
    return { code: status.lastError.code, message: status.lastError.message }
  }
  return error && { code: error.code, message: error.message }
}

export function reportsOf(tick: CollectTick): HostReport[] {
  return tick.hosts.map((h) => {
    const r: HostReport = { host: h.host, ok: h.metrics !== undefined, state: h.status.state }
    if (h.metrics) r.metrics = h.metrics
    const error = causeOf(h.error, h.status)
    if (error) r.error = error
    if (h.status.rttMs !== undefined) r.rttMs = h.status.rttMs
    if (h.collectMode) r.collectMode = h.collectMode
    return r
  })
}

function outcomes(tick: CollectTick): HostOutcome[] {
  return tick.hosts.map((h) => (h.error ? { ok: false, errorCode: causeOf(h.error, h.status)?.code } : { ok: true }))
}

/** Rows for the table: status + the latest metrics of each host. */
export function rowsOf(
  statuses: HostStatus[],
  metrics: Map<string, HostMetrics>,
  errors: Map<string, FleetRow['lastError']>,
) {
  return statuses.map((s) => {
    const row: FleetRow = { id: s.id, state: s.state }
    if (s.nextRetryAt !== undefined) row.nextRetryAt = s.nextRetryAt
    const err = s.lastError ?? errors.get(s.id)
    if (err) row.lastError = { code: err.code, message: err.message }
    const m = metrics.get(s.id)
    if (m && s.state === 'ready') row.metrics = m
    if (s.rttMs !== undefined) row.rttMs = s.rttMs
    if (s.collectMode) row.collectMode = s.collectMode
    return row
  })
}

/** Fold one tick into the latest-metrics and latest-error maps the table is drawn from. */
export function absorbTick(
  tick: CollectTick,
  metrics: Map<string, HostMetrics>,
  errors: Map<string, FleetRow['lastError']>,
): void {
  for (const h of tick.hosts) {
    if (h.metrics) metrics.set(h.host, h.metrics)
    const error = causeOf(h.error, h.status)
    if (error) errors.set(h.host, error)
    else errors.delete(h.host)
  }
}

function printTable(io: Io, tick: CollectTick, sup: Supervisor): void {
  const metrics = new Map<string, HostMetrics>()
  const errors = new Map<string, FleetRow['lastError']>()
  absorbTick(tick, metrics, errors)
  const rows = rowsOf(
    tick.hosts.map((h) => h.status),
    metrics,
    errors,
  )
  const table = prepareTable(rows, { sort: 'host', filter: '' })
  const st = sup.stats()
  const lines = renderFleet(table, {
    width: io.out.columns ?? 160,
    height: rows.length + 3,
    offset: 0,
    color: false,
    summary: { tick: tick.tick, handshakes: st.handshakes, dialSlotsInUse: st.dialsInFlight, dialSlotsCap: st.dialCap },
  })
  io.out.write(`${lines.join('\n')}\n`)
}

async function withSupervisor<T>(opts: SupervisorOptions, io: Io, fn: (sup: Supervisor) => Promise<T>): Promise<T> {
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

export async function cmdCollect(
  cmd: ParsedCommand & { command: 'collect' },
  io: Io,
  targets?: HostTarget[],
  extra: Partial<SupervisorOptions> = {},
): Promise<ExitCode> {
  const hosts = targets ?? (await resolveHosts(cmd.hosts, cmd.connection))
  return withSupervisor(supervisorOptions(cmd.connection, hosts, extra), io, async (sup) => {
    await waitSettled(sup, cmd.connection.connectTimeoutMs + 1000, io.signal)
    await sup.collect({ timeoutMs: cmd.connection.connectTimeoutMs })
    await sleep(cmd.sampleGapMs, io.signal)
    const tick = await sup.collect({ timeoutMs: cmd.connection.connectTimeoutMs })
    await sup.refreshStats()
    if (cmd.json) io.out.write(`${tickLines(reportsOf(tick), tick.tick, tick.durationMs).join('\n')}\n`)
    else printTable(io, tick, sup)
    for (const h of tick.hosts) {
      const error = causeOf(h.error, h.status)
      if (error && !cmd.json) io.err.write(`${errorLine(h.host, error)}\n`)
    }
    return io.signal.aborted ? EXIT.interrupted : exitCodeFor(outcomes(tick))
  })
}

export async function cmdFleet(
  cmd: (ParsedCommand & { command: 'fleet' }) | (ParsedCommand & { command: 'demo' }),
  conn: ConnectionOptions,
  io: Io,
  targets: HostTarget[],
  extra: Partial<SupervisorOptions> = {},
): Promise<ExitCode> {
  return withSupervisor(supervisorOptions(conn, targets, extra), io, async (sup) => {
    const interactive = io.out.isTTY === true && !cmd.json && process.stdin.isTTY === true
    if (interactive)
      return runTui(sup, { intervalMs: cmd.intervalMs, ticks: cmd.ticks, signal: io.signal, out: io.out })
    let last: CollectTick | undefined
    let n = 0
    while (!io.signal.aborted && (cmd.ticks === undefined || n < cmd.ticks)) {
      const started = Date.now()
      if (n === 0) await waitSettled(sup, conn.connectTimeoutMs, io.signal)
      last = await sup.collect({ timeoutMs: Math.min(cmd.intervalMs, conn.connectTimeoutMs) })
      n++
      await sup.refreshStats()
      if (cmd.json) io.out.write(`${tickLines(reportsOf(last), last.tick, last.durationMs).join('\n')}\n`)
      else printTable(io, last, sup)
      if (cmd.ticks !== undefined && n >= cmd.ticks) break
      await sleep(Math.max(0, cmd.intervalMs - (Date.now() - started)), io.signal)
    }
    if (io.signal.aborted) return EXIT.interrupted
    return last ? exitCodeFor(outcomes(last)) : EXIT.ok
  })
}

export async function cmdExec(cmd: ParsedCommand & { command: 'exec' }, io: Io): Promise<ExitCode> {
  const hosts = await resolveHosts(cmd.hosts, cmd.connection)
  return withSupervisor(supervisorOptions(cmd.connection, hosts, { collectMode: 'exec' }), io, async (sup) => {
    await waitSettled(sup, cmd.connection.connectTimeoutMs + 1000, io.signal)
    const results: ExecResult[] = []
    const out: HostOutcome[] = []
    const statuses = new Map(sup.statuses().map((s) => [s.id, s]))
    for await (const r of sup.exec(
      hosts.map((h) => h.id),
      cmd.remoteCommand,
      { timeoutMs: cmd.timeoutMs, maxOutputBytes: cmd.maxOutputBytes },
    )) {
      const er: ExecResult = {
        host: r.host,
        ok: r.result?.exitCode === 0 && !r.error,
        exitCode: r.result?.exitCode ?? null,
        stdout: r.result?.stdout ?? '',
        stderr: r.result?.stderr ?? '',
        durationMs: r.result?.durationMs ?? 0,
      }
      const error = causeOf(r.error, statuses.get(r.host))
      if (error) er.error = error
      results.push(er)
      if (error) out.push({ ok: false, errorCode: error.code })
      else out.push({ ok: r.result?.exitCode === 0, exitCode: r.result?.exitCode ?? -1 })
      if (cmd.output === 'json') io.out.write(`${execJsonLine(er)}\n`)
      else if (cmd.output === 'prefix') {
        // Results arrive whole per host, so lines of different hosts never interleave mid-line.
        const w = new PrefixWriter(r.host, (line) => io.out.write(`${line}\n`))
        w.write(er.stdout)
        w.end()
        const e = new PrefixWriter(r.host, (line) => io.err.write(`${line}\n`))
        e.write(er.stderr)
        e.end()
        if (error) io.err.write(`${errorLine(r.host, error)}\n`)
      }
    }
    if (cmd.output === 'collate') io.out.write(renderCollated(collateResults(results)))
    return io.signal.aborted ? EXIT.interrupted : exitCodeFor(out)
  })
}

/**
 * `kay top HOST`: the single-host detail view, refreshed every interval over the host's pooled connection. On a TTY
 * it is the drill-in view of the live table; otherwise one detail snapshot is printed.
 */
export async function cmdTop(cmd: ParsedCommand & { command: 'top' }, io: Io): Promise<ExitCode> {
  const hosts = await resolveHosts(
    { include: [cmd.host], exclude: [], hostfiles: [], allConfigHosts: false },
    cmd.connection,
  )
  const host = hosts[0]
  if (!host || hosts.length !== 1)
    throw new ConfigError(`kay top takes exactly one host, '${cmd.host}' selects ${hosts.length}`)
  return withSupervisor(supervisorOptions(cmd.connection, hosts), io, async (sup) => {
    if (io.out.isTTY === true && process.stdin.isTTY === true) {
      return runTui(sup, { intervalMs: cmd.intervalMs, signal: io.signal, out: io.out, detailHost: host.id })
    }
    await waitSettled(sup, cmd.connection.connectTimeoutMs + 1000, io.signal)
    const status = sup.statuses()[0]
    try {
      const runner = sup.runner(host.id)
      await runner.detail() // the first sample is the baseline for per-core CPU %
      await sleep(Math.min(cmd.intervalMs, 1000), io.signal)
      const d = await runner.detail()
      io.out.write(
        `${renderDetail(host.id, d, { width: io.out.columns ?? 120, height: 60, color: false }).join('\n')}\n`,
      )
      return EXIT.ok
    } catch (err) {
      const e = err as { code: string; message: string }
      const cause = causeOf(e, status) ?? e
      io.err.write(`${errorLine(host.id, cause)}\n`)
      return exitCodeFor([{ ok: false, errorCode: cause.code }])
    }
  })
}

export async function cmdTrust(cmd: ParsedCommand & { command: 'trust' }, io: Io): Promise<ExitCode> {
  const store = new KnownHostsStore({
    path: cmd.connection.knownHosts ?? defaultPinFile(),
    userFiles: [],
    globalFiles: [],
  })
  if (cmd.action === 'list') {
    for (const e of await store.list()) io.out.write(`${e.hosts.join(',')}  ${e.keyType}  ${e.fingerprint}\n`)
    return EXIT.ok
  }
  if (cmd.action === 'forget') {
    const n = await store.forget(cmd.hosts)
    io.out.write(`removed ${n} pin(s)\n`)
    return EXIT.ok
  }
  // repin: forget the old pins; the next connection pins the key the host offers now (trust on first use again).
  const n = await store.forget(cmd.hosts)
  io.out.write(`removed ${n} pin(s); the next connection to ${cmd.hosts.join(', ')} pins the key offered then\n`)
  return EXIT.ok
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

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0 || signal.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

export { isKayError }

/**
 * `kay serve`: tick every interval, expose the last tick on /metrics. SIGHUP re-reads the host selection (adds and
 * removes hosts without touching the others' connections); SIGINT/SIGTERM stop cleanly (exit 0).
 */
export async function cmdServe(cmd: ParsedCommand & { command: 'serve' }, io: Io): Promise<ExitCode> {
  // Loopback-only unless --allow-non-loopback: enforced by the argument parser (args.ts).
  const hosts = await resolveHosts(cmd.hosts, cmd.connection)
  return withSupervisor(supervisorOptions(cmd.connection, hosts), io, async (sup) => {
    const metrics = createServeMetrics()
    sup.on('host', (s) => metrics.onHost(s))
    let firstTickDone = false
    const http = await startHttp(metrics, cmd.listen, () => firstTickDone)
    io.err.write(`kay: serving http://${http.address.host}:${http.address.port}/metrics for ${hosts.length} hosts\n`)
    let reloading = false
    const onHup = () => {
      if (reloading) return
      reloading = true
      resolveHosts(cmd.hosts, cmd.connection)
        .then((next) => {
          const { added, removed } = reloadHosts(sup, next)
          io.err.write(`kay: reloaded host list: +${added.length} -${removed.length} (${next.length} hosts)\n`)
        })
        .catch((err: Error) => io.err.write(`kay: reload failed, keeping the current hosts: ${err.message}\n`))
        .finally(() => {
          reloading = false
        })
    }
    process.on('SIGHUP', onHup)
    try {
      while (!io.signal.aborted) {
        const started = Date.now()
        const tick = await sup.collect({ timeoutMs: Math.min(cmd.intervalMs, cmd.connection.connectTimeoutMs) })
        await sup.refreshStats()
        await metrics.update(tick, sup)
        firstTickDone = true
        await sleep(Math.max(0, cmd.intervalMs - (Date.now() - started)), io.signal)
      }
    } finally {
      process.off('SIGHUP', onHup)
      await http.close()
      metrics.close()
    }
    return EXIT.ok
  })
}
