import type { HostTarget } from '@kay/core'
import type { SupervisorOptions } from '@kay/workers'
import type { ParsedCommand } from '../args.js'
import { sleep } from '../duration.js'
import { EXIT, type ExitCode, exitCodeFor } from '../help.js'
import { resolveHosts } from '../hosts.js'
import { tickLines } from '../ui/ndjson.js'
import { causeOf, outcomes, reportsOf } from '../ui/rows.js'
import { connectTimeoutOf, errorLine, type Io, supervisorOptions, waitSettled, withSupervisor } from './common.js'
import { printTable } from './fleet.js'

export async function cmdCollect(
  cmd: ParsedCommand & { command: 'collect' },
  io: Io,
  targets?: HostTarget[],
  extra: Partial<SupervisorOptions> = {},
): Promise<ExitCode> {
  const hosts = targets ?? (await resolveHosts(cmd.hosts, cmd.connection))
  return withSupervisor(supervisorOptions(cmd.connection, hosts, extra), io, async (sup) => {
    await waitSettled(sup, cmd.connection, hosts, io.signal)
    const timeoutMs = connectTimeoutOf(cmd.connection)
    await sup.collect({ timeoutMs })
    await sleep(cmd.sampleGapMs, io.signal)
    const tick = await sup.collect({ timeoutMs })
    if (cmd.json) io.out.write(`${tickLines(reportsOf(tick), tick.tick, tick.durationMs).join('\n')}\n`)
    else printTable(io, tick, sup)
    for (const h of tick.hosts) {
      const error = causeOf(h.error, h.status)
      if (error && !cmd.json) io.err.write(`${errorLine(h.host, error)}\n`)
    }
    return io.signal.aborted ? EXIT.interrupted : exitCodeFor(outcomes(tick))
  })
}
