/**
 * `kay exec` output modes:
 * - `--prefix` (default): `host: line` for every line as it arrives. A {@link PrefixWriter} per host and stream
 *   buffers partial lines, so lines from different hosts never interleave mid-line.
 * - `--collate`: hosts with identical output and exit status grouped under one folded host list
 *   (`web[01-05,07]`), dshbak -c style, printed when all hosts are done.
 * - `--json`: one NDJSON object per host.
 * - `--diff`: each distinct output as a unified diff against the reference one (diff.ts).
 * In every mode a failed host also gets one closing line on stderr ({@link failureLine}), as pdsh prints.
 */
import { StringDecoder } from 'node:string_decoder'
import { foldHosts } from '@kay/core'
import { ansi, sanitize } from './format.js'

/** One host's outcome of `kay exec`. */
export interface ExecOutcome {
  host: string
  /** The command ran and exited 0. */
  ok: boolean
  /** The remote exit status; null when it did not exit normally (signal, timeout, connection error). */
  exitCode: number | null
  /** The signal that ended the command (`TERM`, `KILL`…), when one did. */
  signal?: string | null
  stdout: string
  stderr: string
  durationMs: number
  error?: { code: string; message: string }
}

/** Hosts that produced the same result. */
export interface CollateGroup {
  /** Host ids, in natural order. */
  hosts: string[]
  /** `hosts` folded (`web[01-05,07]`). */
  folded: string
  stdout: string
  stderr: string
  exitCode: number | null
  signal?: string | null
  /** The error, its message without the host's own name, so that per-host messages group. */
  error?: { code: string; message: string }
}

const collator = new Intl.Collator('en', { numeric: true })

/** Stands for a host's own name inside a grouped error message; rendered back as the group's folded host list. */
const SELF = '\u0000host\u0000'

function errorKeyMessage(host: string, message: string): string {
  if (host === '') return message
  const own = message.startsWith(`${host}: `) ? message.slice(host.length + 2) : message
  return own.split(host).join(SELF)
}

/**
 * Group results with identical stdout, stderr, exit status and error. Groups are ordered largest first
 * (the common answer, then the outliers), ties by first host.
 */
export function collateResults(results: readonly ExecOutcome[]): CollateGroup[] {
  const groups = new Map<string, CollateGroup>()
  for (const r of results) {
    const error =
      r.error === undefined ? undefined : { code: r.error.code, message: errorKeyMessage(r.host, r.error.message) }
    const key = JSON.stringify([
      r.stdout,
      r.stderr,
      r.exitCode,
      r.signal ?? null,
      error?.code ?? null,
      error?.message ?? null,
    ])
    let g = groups.get(key)
    if (g === undefined) {
      g = { hosts: [], folded: '', stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode }
      if (r.signal) g.signal = r.signal
      if (error !== undefined) g.error = error
      groups.set(key, g)
    }
    g.hosts.push(r.host)
  }
  const out = [...groups.values()]
  for (const g of out) {
    g.hosts.sort(collator.compare)
    g.folded = foldHosts(g.hosts)
    if (g.error !== undefined) g.error = { code: g.error.code, message: g.error.message.split(SELF).join(g.folded) }
  }
  out.sort((a, b) => b.hosts.length - a.hosts.length || collator.compare(a.hosts[0]!, b.hosts[0]!))
  return out
}

function withNewline(text: string): string {
  return text === '' || text.endsWith('\n') ? text : `${text}\n`
}

/** The status part of a group header: `exit 0`, `exit 3`, `signal TERM`, `KAY_TIMEOUT: …`. */
function statusText(g: Pick<CollateGroup, 'error' | 'exitCode' | 'signal'>): string {
  if (g.error !== undefined) return `${g.error.code}: ${sanitize(g.error.message)}`
  if (g.signal) return `signal ${g.signal}`
  return g.exitCode === null ? 'no exit status' : `exit ${g.exitCode}`
}

/** The fix an error calls for, when the message does not already say it (`` or ` (…)`). */
export function fixHint(host: string, err: { code: string; message: string }): string {
  if (err.code === 'KAY_HOST_KEY_MISMATCH' && !err.message.includes('kay trust repin')) {
    return ` (check the change, then: kay trust repin ${host})`
  }
  if (err.code === 'KAY_AUTH_FAILED') return ' (check -i KEY, -l USER and the agent)'
  return ''
}

/**
 * The closing line for a host that did not succeed, pdsh style (`pdsh@x: h001: ssh exited with exit code 3`), or
 * undefined when it did. One line, on stderr, in every output mode.
 */
export function failureLine(r: ExecOutcome, printedOutput = r.stdout !== '' || r.stderr !== ''): string | undefined {
  if (r.error !== undefined) {
    const partial = printedOutput ? ' (its output until then is shown)' : ''
    if (r.error.code === 'KAY_ABORTED') return `kay: ${r.host}: interrupted${partial}`
    const own = r.error.message.startsWith(`${r.host}: `) ? r.error.message.slice(r.host.length + 2) : r.error.message
    return `kay: ${r.host}: ${r.error.code}: ${sanitize(own)}${fixHint(r.host, r.error)}${partial}`
  }
  if (r.signal) return `kay: ${r.host}: command killed by signal ${r.signal}`
  if (r.exitCode === null) return `kay: ${r.host}: command ended without an exit status`
  if (r.exitCode !== 0) return `kay: ${r.host}: command exited with exit code ${r.exitCode}`
  return undefined
}

/**
 * Render groups dshbak -c style:
 * ```
 * ----------------
 * web[01-05,07] (6 hosts) exit 0
 * ----------------
 * <output>
 * ```
 * stderr follows stdout under a `-- stderr --` marker. Output always ends with a newline.
 */
export function renderCollated(groups: readonly CollateGroup[], opts: { color?: boolean } = {}): string {
  const rule = '----------------'
  let out = ''
  for (const g of groups) {
    const count = g.hosts.length === 1 ? '(1 host)' : `(${g.hosts.length} hosts)`
    let header = `${g.folded} ${count} ${statusText(g)}`
    if (opts.color === true) header = g.error !== undefined || g.exitCode !== 0 ? ansi.red(header) : ansi.bold(header)
    out += `${rule}\n${header}\n${rule}\n${withNewline(g.stdout)}`
    if (g.stderr !== '') out += `-- stderr --\n${withNewline(g.stderr)}`
  }
  return out
}

export interface PrefixWriterOptions {
  /** A partial line longer than this (characters) is emitted as a line of its own; bounds the buffer. */
  maxLineLength?: number
}

const DEFAULT_MAX_LINE_LENGTH = 64 * 1024

/**
 * Turns one host's output stream into `prefix: line` lines. Chunks may split lines (and UTF-8 characters) anywhere;
 * `emit` is called once per complete line, never with a fragment, so writers for different hosts can share one
 * output without interleaving mid-line. `end()` completes a final line that had no newline.
 */
export class PrefixWriter {
  readonly #prefix: string
  readonly #emit: (line: string) => void
  readonly #max: number
  readonly #decoder = new StringDecoder('utf8')
  #partial = ''
  #ended = false

  /** `prefix` '' prints the lines without a label (`-N`). */
  constructor(prefix: string, emit: (line: string) => void, opts: PrefixWriterOptions = {}) {
    this.#prefix = prefix === '' ? '' : `${prefix}: `
    this.#emit = emit
    this.#max = Math.max(1, opts.maxLineLength ?? DEFAULT_MAX_LINE_LENGTH)
  }

  write(chunk: string | Uint8Array): void {
    if (this.#ended) return
    const text = typeof chunk === 'string' ? chunk : this.#decoder.write(Buffer.from(chunk))
    const all = this.#partial + text
    let start = 0
    for (let nl = all.indexOf('\n'); nl !== -1; nl = all.indexOf('\n', start)) {
      this.#line(all.slice(start, nl))
      start = nl + 1
    }
    let buf = all.slice(start)
    while (buf.length > this.#max) {
      this.#line(buf.slice(0, this.#max))
      buf = buf.slice(this.#max)
    }
    this.#partial = buf
  }

  /** Flush a final partial line (completed with a newline by the caller's line writer). Idempotent. */
  end(): void {
    if (this.#ended) return
    const rest = this.#partial + this.#decoder.end()
    this.#partial = ''
    this.#ended = true
    if (rest !== '') this.#line(rest)
  }

  #line(line: string): void {
    this.#emit(this.#prefix + (line.endsWith('\r') ? line.slice(0, -1) : line))
  }
}

/** All of `text` as `host: line` lines (for output that is already complete). */
export function prefixLines(host: string, text: string): string[] {
  const lines: string[] = []
  const w = new PrefixWriter(host, (l) => lines.push(l))
  w.write(text)
  w.end()
  return lines
}

/** One NDJSON line (without the newline) for `kay exec --json`. */
export function execJsonLine(r: ExecOutcome): string {
  const obj: Record<string, unknown> = {
    host: r.host,
    ok: r.ok,
    exitCode: r.exitCode,
    signal: r.signal ?? null,
    stdout: r.stdout,
    stderr: r.stderr,
    durationMs: Math.round(r.durationMs),
  }
  if (r.error !== undefined) obj.error = { code: r.error.code, message: r.error.message }
  return JSON.stringify(obj)
}
