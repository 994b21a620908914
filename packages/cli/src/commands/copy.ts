/**
 * `kay cp` (pdcp, `clush --copy`) and `kay rcopy` (rpdcp, `clush --rcopy`): files to or from every host over an SFTP
 * session of its pooled connection, modes kept, with per-host results and exit codes as `kay exec` has.
 */
import { mkdir, stat } from 'node:fs/promises'
import { ConfigError } from '@kay/core'
import { checkLocalSources } from '@kay/core/internal'
import type { ParsedCommand } from '../args.js'
import { EXIT, type ExitCode, exitCodeFor, type HostOutcome } from '../help.js'
import { resolveHosts } from '../hosts.js'
import { failureLine } from '../ui/collate.js'
import { causeOf } from '../ui/rows.js'
import { type Io, stopAfterFailures, supervisorOptions, waitSettled, withSupervisor } from './common.js'

export async function cmdCopy(cmd: ParsedCommand & { command: 'cp' | 'rcopy' }, io: Io): Promise<ExitCode> {
  const hosts = await resolveHosts(cmd.hosts, cmd.connection)
  // The operator's own mistakes (a missing local file, no such local directory) stop here, before any host: exit 1.
  if (cmd.command === 'cp') await checkLocalSources(cmd.sources, cmd.recursive)
  else await localDir(cmd.dest)
  return withSupervisor(supervisorOptions(cmd.connection, hosts, { collectMode: 'exec' }), io, async (sup) => {
    await waitSettled(sup, cmd.connection, hosts, io.signal)
    const statuses = new Map(sup.statuses().map((s) => [s.id, s]))
    const outcomes: HostOutcome[] = []
    const stopAfter = stopAfterFailures(cmd.batchFail, hosts.length)
    for await (const r of sup.copy(
      hosts.map((h) => h.id),
      {
        direction: cmd.command === 'cp' ? 'put' : 'get',
        sources: cmd.sources,
        dest: cmd.dest,
        recursive: cmd.recursive,
        timeoutMs: cmd.timeoutMs,
      },
      {
        ...(cmd.batch === undefined ? {} : { batch: cmd.batch }),
        ...(stopAfter === undefined ? {} : { stopAfterFailures: stopAfter }),
        signal: io.signal,
      },
    )) {
      const error = causeOf(r.error, statuses.get(r.host))
      if (error) {
        outcomes.push({ ok: false, errorCode: error.code })
        const line = failureLine({
          host: r.host,
          ok: false,
          exitCode: null,
          stdout: '',
          stderr: '',
          durationMs: 0,
          error,
        })
        io.err.write(`${line}\n`)
        continue
      }
      outcomes.push({ ok: true })
      const c = r.copied
      if (c !== undefined) {
        const what = `${c.files} file${c.files === 1 ? '' : 's'}${c.directories > 0 ? `, ${c.directories} dir${c.directories === 1 ? '' : 's'}` : ''}`
        io.out.write(`${r.host}: copied ${what} (${c.bytes} bytes)\n`)
      }
    }
    return io.signal.aborted ? EXIT.interrupted : exitCodeFor(outcomes)
  })
}

/** rcopy's destination: an existing directory (made if missing, 0700). */
async function localDir(path: string): Promise<void> {
  try {
    const st = await stat(path)
    if (!st.isDirectory()) throw new ConfigError(`'${path}' is not a directory: rcopy writes NAME.HOST files into one`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    await mkdir(path, { recursive: true, mode: 0o700 })
  }
}
