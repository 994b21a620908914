import type { HostMetrics, HostTarget } from '@kay/core'
import type { CollectTick, Supervisor, SupervisorOptions } from '@kay/workers'
import type { ConnectionOptions, ParsedCommand } from '../args.js'
import { sleep } from '../duration.js'
import { EXIT, type ExitCode, exitCodeFor } from '../help.js'
import { fileLimit } from '../rlimit.js'
import { tickLines } from '../ui/ndjson.js'
import { absorbTick, outcomes, reportsOf, rowsOf } from '../ui/rows.js'
import { collectSummary, type FleetRow, prepareTable, renderFleet } from '../ui/table.js'
import { runTui } from '../ui/tui.js'
import { connectTimeoutOf, type Io, supervisorOptions, waitSettled, withSupervisor } from './common.js'

export function printTable(io: Io, tick: CollectTick, sup: Supervisor): void {
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
    summary: {
      tick: tick.tick,
      handshakes: st.handshakes,
      dialSlotsInUse: st.dialsInFlight,
      dialSlotsCap: st.dialCap,
      collect: collectSummary(sup.progress()),
    },
  })
  io.out.write(`${lines.join('\n')}\n`)
}

export async function cmdFleet(
  cmd: (ParsedCommand & { command: 'fleet' }) | (ParsedCommand & { command: 'demo' }),
  conn: ConnectionOptions,
  io: Io,
  targets: HostTarget[],
  extra: Partial<SupervisorOptions> = {},
): Promise<ExitCode> {
  return withSupervisor(supervisorOptions(conn, targets, extra), io, async (sup, notices) => {
    const interactive = io.out.isTTY === true && !cmd.json && process.stdin.isTTY === true
    if (interactive) {
      const tui = { intervalMs: cmd.intervalMs, ticks: cmd.ticks, signal: io.signal, out: io.out, notices, err: io.err }
      return runTui(sup, tui)
    }
    // The worst exit code over the run, not the last tick's: a host that failed at tick 3 of 10 shows in it.
    let worst: ExitCode = EXIT.ok
    let n = 0
    while (!io.signal.aborted && (cmd.ticks === undefined || n < cmd.ticks)) {
      const started = Date.now()
      if (n === 0) await waitSettled(sup, conn, targets, io.signal)
      const last = await sup.collect({ timeoutMs: Math.min(cmd.intervalMs, connectTimeoutOf(conn)) })
      n++
      worst = Math.max(worst, exitCodeFor(outcomes(last))) as ExitCode
      if (cmd.json) {
        io.out.write(`${tickLines(reportsOf(last), last.tick, last.durationMs, sup.progress()).join('\n')}\n`)
      } else printTable(io, last, sup)
      if (cmd.ticks !== undefined && n >= cmd.ticks) break
      await sleep(Math.max(0, cmd.intervalMs - (Date.now() - started)), io.signal)
    }
    if (io.signal.aborted) return EXIT.interrupted
    return worst
  })
}

/** Warn when the open-file limit is below what the fleet needs (one descriptor per host). */
export function checkFiles(hosts: number, io: Io): void {
  const r = fileLimit()
  if (r.limit < hosts + 64) {
    io.err.write(
      `kay: warning: the open-file limit is ${r.limit} but ${hosts} hosts need about ${hosts + 64} descriptors; ` +
        'hosts past the limit will fail to connect (raise it with ulimit -n)\n',
    )
  }
}
