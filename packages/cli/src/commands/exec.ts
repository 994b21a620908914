import type { ParsedCommand } from '../args.js'
import { EXIT, type ExitCode, exitCodeFor, type HostOutcome } from '../help.js'
import { resolveHosts } from '../hosts.js'
import { collateResults, type ExecResult, execJsonLine, PrefixWriter, renderCollated } from '../ui/collate.js'
import { causeOf } from '../ui/rows.js'
import { dialDeadlineMs, errorLine, type Io, supervisorOptions, waitSettled, withSupervisor } from './common.js'

export async function cmdExec(cmd: ParsedCommand & { command: 'exec' }, io: Io): Promise<ExitCode> {
  const hosts = await resolveHosts(cmd.hosts, cmd.connection)
  return withSupervisor(supervisorOptions(cmd.connection, hosts, { collectMode: 'exec' }), io, async (sup) => {
    await waitSettled(sup, dialDeadlineMs(cmd.connection, hosts) + 1000, io.signal)
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
