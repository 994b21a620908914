import { ConfigError } from '@kay/core'
import type { ParsedCommand } from '../args.js'
import { sleep } from '../duration.js'
import { EXIT, type ExitCode, exitCodeFor } from '../help.js'
import { resolveHosts } from '../hosts.js'
import { renderDetail } from '../ui/detail.js'
import { causeOf } from '../ui/rows.js'
import { runTui } from '../ui/tui.js'
import { errorLine, type Io, supervisorOptions, waitSettled, withSupervisor } from './common.js'

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
  return withSupervisor(supervisorOptions(cmd.connection, hosts), io, async (sup, notices) => {
    if (io.out.isTTY === true && process.stdin.isTTY === true) {
      const tui = {
        intervalMs: cmd.intervalMs,
        signal: io.signal,
        out: io.out,
        detailHost: host.id,
        notices,
        err: io.err,
      }
      return runTui(sup, tui)
    }
    await waitSettled(sup, cmd.connection, hosts, io.signal)
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
