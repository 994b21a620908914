/**
 * `kay exec`: run a command on every host over its pooled connection, pdsh/clush style. Output streams in as it
 * arrives (`--prefix`, the default, line by line; bounded per host), or is gathered (`--collate`, `--diff`, `--json`);
 * every failed host gets one closing line on stderr in every mode; `--outdir` also keeps each host's output in files.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { AbortedError, ConfigError, type HostStatus } from '@kay/core'
import type { ExecResult as WireResult } from '@kay/workers'
import { DEFAULTS, type ParsedCommand } from '../args.js'
import { EXIT, type ExitCode, exitCodeFor, type HostOutcome } from '../help.js'
import { resolveHosts } from '../hosts.js'
import {
  collateResults,
  type ExecOutcome,
  execJsonLine,
  failureLine,
  PrefixWriter,
  renderCollated,
} from '../ui/collate.js'
import { renderDiff } from '../ui/diff.js'
import { causeOf } from '../ui/rows.js'
import { type Io, readerGone, stopAfterFailures, supervisorOptions, waitSettled, withSupervisor } from './common.js'

type ExecCommand = ParsedCommand & { command: 'exec' }

export async function cmdExec(cmd: ExecCommand, io: Io): Promise<ExitCode> {
  const hosts = await resolveHosts(cmd.hosts, cmd.connection)
  const stdin = cmd.stdin ? await readStdin(process.stdin, DEFAULTS.stdinMaxBytes, io.signal) : undefined
  if (cmd.outdir !== undefined) await prepareOutdir(cmd.outdir)
  return withSupervisor(supervisorOptions(cmd.connection, hosts, { collectMode: 'exec' }), io, async (sup) => {
    await waitSettled(sup, cmd.connection, hosts, io.signal)
    const statuses = new Map(sup.statuses().map((s) => [s.id, s]))
    const view = new ExecView(cmd, io, statuses)
    const stopAfter = stopAfterFailures(cmd.batchFail, hosts.length)
    for await (const e of sup.execStream(
      hosts.map((h) => h.id),
      cmd.remoteCommand,
      {
        stream: true,
        timeoutMs: cmd.timeoutMs,
        maxOutputBytes: cmd.maxOutputBytes,
        ...(stdin === undefined ? {} : { stdin }),
        ...(cmd.batch === undefined ? {} : { batch: cmd.batch }),
        ...(stopAfter === undefined ? {} : { stopAfterFailures: stopAfter }),
        signal: io.signal,
      },
    )) {
      if (e.type === 'output') view.output(e.host, e.stream, e.data)
      else await view.result(e.result)
      await view.drained()
    }
    view.finish()
    return io.signal.aborted ? EXIT.interrupted : exitCodeFor(view.outcomes)
  })
}

/** One host's output while its command runs. */
interface HostOutput {
  /** Line writers (prefix mode). */
  out?: PrefixWriter
  err?: PrefixWriter
  /** Raw output kept for the gathered modes and --outdir (bounded by --max-output: the actor stops there). */
  stdout: Uint8Array[]
  stderr: Uint8Array[]
  /** Some of its output was printed (so its closing line can say so). */
  printed: boolean
}

/** The output side of `kay exec`: per-host line writers and buffers, the chosen mode, the closing lines. */
class ExecView {
  readonly outcomes: HostOutcome[] = []
  readonly #cmd: ExecCommand
  readonly #io: Io
  readonly #statuses: Map<string, HostStatus>
  readonly #hosts = new Map<string, HostOutput>()
  readonly #gathered: ExecOutcome[] = []
  readonly #keep: boolean
  /** Whole lines of the chunk being handled: written with one call (a flood would otherwise be a write per line). */
  #lines: string[] = []
  #needDrain = false

  constructor(cmd: ExecCommand, io: Io, statuses: Map<string, HostStatus>) {
    this.#cmd = cmd
    this.#io = io
    this.#statuses = statuses
    this.#keep = cmd.output !== 'prefix' || cmd.outdir !== undefined
  }

  #host(host: string): HostOutput {
    let h = this.#hosts.get(host)
    if (h === undefined) {
      h = { stdout: [], stderr: [], printed: false }
      if (this.#cmd.output === 'prefix') {
        const label = this.#cmd.noPrefix ? '' : host
        h.out = new PrefixWriter(label, (line) => this.#lines.push(line))
        h.err = new PrefixWriter(label, (line) => this.#lines.push(line))
      }
      this.#hosts.set(host, h)
    }
    return h
  }

  #write(stream: NodeJS.WritableStream, text: string): void {
    // Once stdout's reader is gone kay says nothing more (as `yes | head` does).
    if (readerGone(this.#io)) return
    if (!stream.write(text)) this.#needDrain = true
  }

  output(host: string, stream: 'stdout' | 'stderr', data: Uint8Array): void {
    const h = this.#host(host)
    if (data.length > 0) h.printed = true
    ;(stream === 'stdout' ? h.out : h.err)?.write(data)
    this.#flushLines(stream === 'stdout' ? this.#io.out : this.#io.err)
    if (this.#keep) (stream === 'stdout' ? h.stdout : h.stderr).push(data)
  }

  #flushLines(stream: NodeJS.WritableStream): void {
    if (this.#lines.length === 0) return
    this.#write(stream, `${this.#lines.join('\n')}\n`)
    this.#lines = []
  }

  async result(r: WireResult): Promise<void> {
    const h = this.#host(r.host)
    this.#hosts.delete(r.host)
    h.out?.end()
    this.#flushLines(this.#io.out)
    h.err?.end()
    this.#flushLines(this.#io.err)
    const text = (parts: Uint8Array[]) => Buffer.concat(parts).toString('utf8')
    const er: ExecOutcome = {
      host: r.host,
      ok: r.result?.exitCode === 0 && !r.error,
      exitCode: r.result?.exitCode ?? null,
      signal: r.result?.signal ?? null,
      stdout: text(h.stdout),
      stderr: text(h.stderr),
      durationMs: r.durationMs,
    }
    const error = causeOf(r.error, this.#statuses.get(r.host))
    if (error) er.error = error
    this.outcomes.push(error ? { ok: false, errorCode: error.code } : { ok: er.ok, exitCode: r.result?.exitCode ?? -1 })
    if (this.#cmd.outdir !== undefined) await writeHostFiles(this.#cmd.outdir, r.host, h)
    if (this.#cmd.output === 'json') this.#write(this.#io.out, `${execJsonLine(er)}\n`)
    else if (this.#cmd.output !== 'prefix') this.#gathered.push(er)
    const closing = failureLine(er, h.printed)
    if (closing !== undefined) this.#write(this.#io.err, `${closing}\n`)
  }

  /** Wait while stdout's buffer is full (a slow reader), so kay's own output stays bounded; an interrupt ends it. */
  async drained(): Promise<void> {
    if (!this.#needDrain) return
    this.#needDrain = false
    if (this.#io.signal.aborted) return
    const out = this.#io.out
    await new Promise<void>((resolve) => {
      const done = () => {
        out.off('drain', done)
        this.#io.signal.removeEventListener('abort', done)
        resolve()
      }
      out.once('drain', done)
      this.#io.signal.addEventListener('abort', done, { once: true })
    })
  }

  finish(): void {
    if (this.#cmd.output === 'collate') this.#write(this.#io.out, renderCollated(collateResults(this.#gathered)))
    else if (this.#cmd.output === 'diff') this.#write(this.#io.out, renderDiff(collateResults(this.#gathered)))
  }
}

/** Read a stream to its end, at most `max` bytes (kay exec -I). */
export async function readStdin(stream: NodeJS.ReadableStream, max: number, signal: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = []
  let bytes = 0
  const onAbort = () => (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.()
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const chunk of stream) {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer)
      bytes += b.length
      if (bytes > max) {
        throw new ConfigError(
          `-I: standard input is larger than ${max} bytes; copy big input with kay cp and read it there`,
        )
      }
      parts.push(b)
    }
  } catch (err) {
    if (signal.aborted) throw new AbortedError('interrupted while reading standard input')
    throw err
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
  if (signal.aborted) throw new AbortedError('interrupted while reading standard input')
  return Buffer.concat(parts)
}

async function prepareOutdir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new ConfigError(`--outdir: cannot create '${dir}': ${(err as NodeJS.ErrnoException).code ?? err}`)
  }
}

/** `DIR/HOST.out` and `DIR/HOST.err`, 0600 (also when they existed with other modes). */
async function writeHostFiles(dir: string, host: string, h: HostOutput): Promise<void> {
  const base = join(dir, host.replace(/[/\0]/g, '_'))
  for (const [ext, parts] of [
    ['out', h.stdout],
    ['err', h.stderr],
  ] as const) {
    const path = `${base}.${ext}`
    await writeFile(path, Buffer.concat(parts), { mode: 0o600 })
    await chmod(path, 0o600)
  }
}
