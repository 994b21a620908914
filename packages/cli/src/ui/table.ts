/**
 * The fleet table, rendered to lines for a terminal of a given size.
 *
 * Two steps so that a frame's cost does not grow with the fleet:
 * - {@link prepareTable} runs once per data update: it filters, sorts and counts (O(n log n)).
 * - {@link renderFleet} runs once per frame: it formats only the rows in the viewport [offset, offset+body).
 *
 * Narrow terminals drop whole columns by priority instead of wrapping ({@link COLUMN_DROP_ORDER}); no line is ever
 * wider than the terminal. Escape codes appear only with `color: true`.
 */

import type { ActorState, CollectMode, CollectPhase, HostMetrics } from '@kay/core'
import {
  ansi,
  bar,
  fit,
  formatClock,
  formatLoad,
  formatPct,
  formatRtt,
  formatUptime,
  humanBytes,
  humanRate,
  sanitize,
  truncate,
} from './format.js'

/** One host as the table sees it (a view of HostStatus + the latest metrics). */
export interface FleetRow {
  id: string
  state: ActorState
  /** Epoch ms of the next dial while in backoff. */
  nextRetryAt?: number
  lastError?: { code: string; message: string }
  metrics?: HostMetrics
  rttMs?: number
  collectMode?: CollectMode
  /** A ready host's collection: `starting`/`probing` until its stream is open (or it settles on exec). */
  collectPhase?: CollectPhase
}

export type SortColumn = 'host' | 'state' | 'cpu' | 'mem' | 'load' | 'net' | 'fs' | 'rtt' | 'uptime'

/**
 * The order `s` cycles through (`r` reverses any of them). Host sorts ascending; state puts problems first, grouped by
 * reason; metrics sort largest first.
 */
export const SORT_CYCLE: readonly SortColumn[] = ['host', 'state', 'cpu', 'mem', 'load', 'net', 'fs', 'rtt', 'uptime']

interface StateCounts {
  /** Connection ready. */
  ready: number
  /** Not yet connected: waiting for a dial slot (idle) or dialing. */
  connecting: number
  /** backoff, quarantined (key mismatch) or closed. */
  down: number
  total: number
  /** Hosts with a problem: not ready, or ready with a failed last tick (they have a reason to show). */
  problems: number
}

/** The result of one data update: rows filtered and sorted, fleet-wide counts, the HOST column width. */
export interface PreparedTable {
  readonly rows: readonly FleetRow[]
  readonly counts: StateCounts
  /** Width of the HOST column: the longest id in the whole fleet (stable while scrolling/filtering), clamped. */
  readonly hostWidth: number
  readonly sort: SortColumn
  /** Sort order reversed (`r`). */
  readonly reverse: boolean
  readonly filter: string
  /** Only hosts with a problem are shown (`p`). */
  readonly problemsOnly: boolean
}

const HOST_WIDTH_MIN = 4
const HOST_WIDTH_MAX = 40

const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' })

const STATE_RANK: Record<ActorState, number> = { quarantined: 0, backoff: 1, closed: 2, dialing: 3, idle: 4, ready: 5 }

type NumKey = (m: HostMetrics, r: FleetRow) => number | undefined
const NUMERIC: Partial<Record<SortColumn, NumKey>> = {
  cpu: (m) => m.cpuPct,
  mem: (m) => (m.memTotalBytes > 0 ? m.memUsedBytes / m.memTotalBytes : undefined),
  load: (m) => m.load1,
  net: (m) =>
    m.netRxBytesPerSec === undefined && m.netTxBytesPerSec === undefined
      ? undefined
      : (m.netRxBytesPerSec ?? 0) + (m.netTxBytesPerSec ?? 0),
  fs: (m) => m.rootFsUsedPct,
  uptime: (m) => m.uptimeSeconds,
}

/** A comparator for a sort column; ties (and missing values, which sort last) fall back to the host id. */
function comparator(sort: SortColumn): (a: FleetRow, b: FleetRow) => number {
  const byId = (a: FleetRow, b: FleetRow): number => collator.compare(a.id, b.id)
  if (sort === 'host') return byId
  if (sort === 'state') {
    // Problems first, hosts failing for the same reason together.
    const code = (r: FleetRow) => r.lastError?.code ?? ''
    return (a, b) =>
      STATE_RANK[a.state] - STATE_RANK[b.state] ||
      (code(a) === code(b) ? 0 : code(a) === '' ? 1 : code(b) === '' ? -1 : code(a) < code(b) ? -1 : 1) ||
      byId(a, b)
  }
  const key: (r: FleetRow) => number | undefined =
    sort === 'rtt' ? (r) => r.rttMs : (r) => (r.metrics === undefined ? undefined : NUMERIC[sort]!(r.metrics, r))
  return (a, b) => {
    const x = key(a)
    const y = key(b)
    if (x === undefined || y === undefined || Number.isNaN(x) || Number.isNaN(y)) {
      const ax = x === undefined || Number.isNaN(x)
      const by = y === undefined || Number.isNaN(y)
      return ax === by ? byId(a, b) : ax ? 1 : -1
    }
    // RTT: smaller is better, but an operator sorts by it to find the slow ones — largest first like the rest.
    return y - x || byId(a, b)
  }
}

/** The short state label used in the STATE column and matched by the filter (no retry time). */
function stateLabel(row: FleetRow): string {
  const code = row.lastError?.code
  if (row.state === 'ready') {
    return row.collectPhase === 'starting' || row.collectPhase === 'probing' ? row.collectPhase : 'ready'
  }
  if (code === 'KAY_HOST_KEY_MISMATCH') return 'key mismatch'
  if (code === 'KAY_HOST_KEY_REVOKED') return 'key revoked'
  if (code === 'KAY_HOST_KEY_UNKNOWN') return 'key unknown'
  if (code === 'KAY_HOST_CERT_EXPIRED') return 'cert expired'
  if (code === 'KAY_HOST_CERT_PRINCIPAL') return 'cert name'
  if (code === 'KAY_HOST_CERT_INVALID') return 'cert invalid'
  if (code === 'KAY_HOST_CA_REVOKED') return 'CA revoked'
  if (code === 'KAY_AUTH_FAILED') return 'auth failed'
  switch (row.state) {
    case 'idle':
      return 'queued'
    case 'dialing':
      return 'connecting'
    case 'backoff':
      return 'backoff'
    case 'quarantined':
      return 'quarantined'
    case 'closed':
      return 'closed'
  }
}

/** Whether a row matches a filter: case-insensitive substring of the id, the state label or the error code. */
function matchesFilter(row: FleetRow, filter: string): boolean {
  if (filter === '') return true
  const f = filter.toLowerCase()
  return (
    row.id.toLowerCase().includes(f) ||
    stateLabel(row).includes(f) ||
    (row.lastError?.code.toLowerCase().includes(f) ?? false)
  )
}

/** A host with a problem: not ready, or ready with a failed last tick. */
function hasProblem(row: FleetRow): boolean {
  return row.state !== 'ready' || row.lastError !== undefined
}

function countStates(rows: readonly FleetRow[]): StateCounts {
  const c: StateCounts = { ready: 0, connecting: 0, down: 0, total: rows.length, problems: 0 }
  for (const r of rows) {
    if (r.state === 'ready') c.ready++
    else if (r.state === 'idle' || r.state === 'dialing') c.connecting++
    else c.down++
    if (hasProblem(r)) c.problems++
  }
  return c
}

/** Filter, sort and count: once per data update (never per frame). The input array is not modified. */
export function prepareTable(
  rows: readonly FleetRow[],
  opts: { sort?: SortColumn; reverse?: boolean; filter?: string; problemsOnly?: boolean } = {},
): PreparedTable {
  const sort = opts.sort ?? 'host'
  const reverse = opts.reverse ?? false
  const filter = opts.filter ?? ''
  const problemsOnly = opts.problemsOnly ?? false
  let longest = 0
  for (const r of rows) if (r.id.length > longest) longest = r.id.length
  const kept =
    filter === '' && !problemsOnly
      ? rows.slice()
      : rows.filter((r) => (!problemsOnly || hasProblem(r)) && matchesFilter(r, filter))
  const cmp = comparator(sort)
  kept.sort(reverse ? (a, b) => cmp(b, a) : cmp)
  return {
    rows: kept,
    counts: countStates(rows),
    hostWidth: Math.min(HOST_WIDTH_MAX, Math.max(HOST_WIDTH_MIN, longest)),
    sort,
    reverse,
    filter,
    problemsOnly,
  }
}

export type ColumnKey = 'host' | 'state' | 'cpu' | 'mem' | 'load' | 'uptime' | 'net' | 'fs' | 'rtt' | 'mode' | 'reason'

interface ColumnDef {
  key: ColumnKey
  title: string
  width: number
  align: 'left' | 'right'
  /** A narrower form shown before the column is dropped (MEM as used %, LOAD as the 1-minute load). */
  compact?: boolean
}

/** REASON's natural width: the code and a readable cause; it grows into spare room. */
const REASON_MIN_WIDTH = 30

/** Columns left to right, with their natural widths. HOST's width comes from the data; REASON takes the rest. */
const COLUMNS: readonly ColumnDef[] = [
  { key: 'host', title: 'HOST', width: HOST_WIDTH_MIN, align: 'left' },
  { key: 'state', title: 'STATE', width: 16, align: 'left' },
  { key: 'cpu', title: 'CPU%', width: 5, align: 'right' },
  { key: 'mem', title: 'MEM used/total', width: 14, align: 'right' },
  { key: 'load', title: 'LOAD 1/5/15', width: 14, align: 'right' },
  { key: 'uptime', title: 'UPTIME', width: 7, align: 'right' },
  { key: 'net', title: 'NET rx/tx', width: 9, align: 'right' },
  { key: 'fs', title: 'FS%', width: 5, align: 'right' },
  { key: 'rtt', title: 'RTT', width: 6, align: 'right' },
  { key: 'mode', title: 'MODE', width: 13, align: 'left' },
  { key: 'reason', title: 'REASON', width: REASON_MIN_WIDTH, align: 'left' },
]

const COMPACT: Partial<Record<ColumnKey, Pick<ColumnDef, 'title' | 'width'>>> = {
  mem: { title: 'MEM%', width: 5 },
  load: { title: 'LOAD', width: 5 },
  // The state without the retry time (`backoff`), 12 wide for `key mismatch`.
  state: { title: 'STATE', width: 12 },
}

/**
 * How the table gives way as the terminal narrows, first step first: diagnostics and context columns go, then MEM and
 * LOAD take their compact forms, then go; CPU goes last. HOST and STATE always stay (they shrink instead), and while
 * any host has a problem REASON stays too (it shrinks to {@link REASON_SHRUNK_WIDTH} before CPU goes). STATE drops
 * the retry time before LOAD goes.
 */
const LAYOUT_STEPS: ReadonlyArray<{ drop: ColumnKey } | { compact: ColumnKey }> = [
  { drop: 'mode' },
  { drop: 'rtt' },
  { drop: 'uptime' },
  { drop: 'fs' },
  { drop: 'net' },
  { compact: 'load' },
  { compact: 'mem' },
  { compact: 'state' },
  { drop: 'load' },
  { drop: 'mem' },
  { drop: 'cpu' },
]

/** Column drop order, for reference (the `drop` steps of {@link LAYOUT_STEPS}). */
export const COLUMN_DROP_ORDER: readonly ColumnKey[] = LAYOUT_STEPS.flatMap((s) => ('drop' in s ? [s.drop] : []))

/** REASON grows into the spare width up to this many columns. */
const REASON_MAX_WIDTH = 100
/** The narrowest REASON: the code and the start of the cause. */
const REASON_SHRUNK_WIDTH = 16

export type Column = ColumnDef

/**
 * The columns that fit in `width` (separated by one space). `reason`: some host has a problem, so REASON is shown
 * (and kept as long as anything is); without problems it is left out and the metrics get its room.
 */
export function layoutColumns(width: number, hostWidth: number, opts: { reason?: boolean } = {}): Column[] {
  const reason = opts.reason ?? true
  let cols: Column[] = COLUMNS.filter((c) => reason || c.key !== 'reason').map((c) =>
    c.key === 'host' ? { ...c, width: hostWidth } : { ...c },
  )
  const total = (cs: Column[]): number => cs.reduce((s, c) => s + c.width, 0) + Math.max(0, cs.length - 1)
  const reasonCol = () => cols.find((c) => c.key === 'reason')
  for (const step of LAYOUT_STEPS) {
    if (total(cols) <= width) break
    // Before CPU, the last metric, goes: REASON gives up its spare room first.
    if ('drop' in step && step.drop === 'cpu') {
      const r = reasonCol()
      if (r !== undefined) r.width = Math.max(REASON_SHRUNK_WIDTH, r.width - (total(cols) - width))
      if (total(cols) <= width) break
    }
    if ('drop' in step) cols = cols.filter((c) => c.key !== step.drop)
    else {
      const c = cols.find((x) => x.key === step.compact)
      if (c !== undefined) Object.assign(c, COMPACT[step.compact], { compact: true })
    }
  }
  const host = cols.find((c) => c.key === 'host')!
  const state = cols.find((c) => c.key === 'state')!
  const r = reasonCol()
  if (r !== undefined) r.width = Math.min(REASON_MAX_WIDTH, r.width + Math.max(0, width - total(cols)))
  // Still too wide: REASON down to a few columns, then STATE to 12 ("key mismatch"), then HOST, then STATE again.
  let over = total(cols) - width
  if (over > 0 && r !== undefined) {
    const cut = Math.min(over, r.width - 8)
    r.width -= cut
    over -= cut
  }
  if (over > 0) {
    const cut = Math.min(over, state.width - 12)
    state.width -= cut
    over -= cut
  }
  if (over > 0) {
    const cut = Math.min(over, host.width - 4)
    host.width -= cut
    over -= cut
  }
  if (over > 0 && r !== undefined) {
    const cut = Math.min(over, r.width - 1)
    r.width -= cut
    over -= cut
  }
  if (over > 0) state.width = Math.max(1, state.width - over)
  return cols
}

/**
 * The REASON cell: the error code without its `KAY_` prefix, then the cause, without the host's own name (the row
 * already shows it) or the code repeated in words: `CONNECT_FAILED connect ECONNREFUSED 10.0.0.1:22`.
 */
export function reasonText(row: FleetRow): string {
  const e = row.lastError
  if (e === undefined) return ''
  const code = e.code.replace(/^KAY_/, '')
  let cause = e.message.startsWith(`${row.id}: `) ? e.message.slice(row.id.length + 2) : e.message
  const words = code.toLowerCase().replace(/_/g, ' ')
  if (cause.toLowerCase().startsWith(`${words}: `)) cause = cause.slice(words.length + 2)
  // `handshake failed: read ECONNRESET`: the code already says it failed; what failed how is the cause.
  cause = cause.replace(/^(?:[a-z]+ ){0,2}failed: /, '')
  // Node's socket errors read `connect ECONNREFUSED 10.0.0.1:22`: the errno is the cause.
  cause = cause.replace(/^connect (E[A-Z]+)/, '$1')
  return sanitize(`${code} ${cause}`)
}

/** What a row formatter needs besides the row. */
export interface RowContext {
  columns: readonly Column[]
  color: boolean
  /** Formats `nextRetryAt` (epoch ms) for "backoff until …". */
  formatTime: (epochMs: number) => string
}

/** The STATE cell text: `ready`, `connecting`, `backoff 12:03:04` (the next dial), `key mismatch`, `auth failed`, … */
export function stateText(row: FleetRow, formatTime: (epochMs: number) => string = formatClock): string {
  const label = stateLabel(row)
  if (label === 'backoff' && row.nextRetryAt !== undefined) return `backoff ${formatTime(row.nextRetryAt)}`
  return label
}

function cellText(col: Column, row: FleetRow, ctx: RowContext): string {
  const m = row.metrics
  switch (col.key) {
    case 'host':
      return row.id
    case 'state':
      return col.compact === true ? stateLabel(row) : stateText(row, ctx.formatTime)
    case 'cpu':
      return formatPct(m?.cpuPct)
    case 'mem':
      if (m === undefined) return '-'
      if (col.compact === true)
        return formatPct(m.memTotalBytes > 0 ? (m.memUsedBytes / m.memTotalBytes) * 100 : undefined)
      return `${humanBytes(m.memUsedBytes)}/${humanBytes(m.memTotalBytes)}`
    case 'load':
      if (m === undefined) return '-'
      if (col.compact === true) return formatLoad(m.load1)
      return `${formatLoad(m.load1)}/${formatLoad(m.load5)}/${formatLoad(m.load15)}`
    case 'uptime':
      return m === undefined ? '-' : formatUptime(m.uptimeSeconds)
    case 'net':
      return m === undefined || (m.netRxBytesPerSec === undefined && m.netTxBytesPerSec === undefined)
        ? '-'
        : `${humanRate(m.netRxBytesPerSec)}/${humanRate(m.netTxBytesPerSec)}`
    case 'fs':
      return formatPct(m?.rootFsUsedPct)
    case 'rtt':
      return formatRtt(row.rttMs)
    case 'mode':
      return row.collectMode ?? '-'
    case 'reason':
      return reasonText(row)
  }
}

function stateColor(row: FleetRow): ((s: string) => string) | undefined {
  if (row.state === 'ready') return ansi.green
  if (row.state === 'quarantined' || row.lastError?.code === 'KAY_AUTH_FAILED') return ansi.red
  if (row.state === 'backoff' || row.state === 'closed') return ansi.yellow
  return undefined
}

/** One table line for one row, exactly as wide as the columns (before the caller's selection highlight). */
export function formatRow(row: FleetRow, ctx: RowContext): string {
  let line = ''
  for (let i = 0; i < ctx.columns.length; i++) {
    const c = ctx.columns[i]!
    let cell = fit(c.key === 'host' ? sanitize(cellText(c, row, ctx)) : cellText(c, row, ctx), c.width, c.align)
    if (ctx.color && c.key === 'state') {
      const paint = stateColor(row)
      if (paint !== undefined) cell = paint(cell)
    }
    line += i === 0 ? cell : ` ${cell}`
  }
  return line
}

/** Fleet-wide facts for the summary line, from the supervisor. */
export interface FleetSummary {
  tick: number
  /** Handshakes (dials that reached TCP connect) so far, fleet-wide. */
  handshakes: number
  dialSlotsInUse: number
  dialSlotsCap: number
  /** Show the `connected X / N` progress bar (until every host has been ready once, or the first tick is done). */
  coldStart?: boolean
  /** How the ready hosts collect (Supervisor.progress()): `starting` counts those still opening their stream. */
  collect?: { streaming: number; exec: number; starting: number }
}

export interface RenderOptions {
  width: number
  height: number
  /** Index (into the prepared rows) of the first row shown. Clamped. */
  offset: number
  /** Index of the selected row; highlighted (inverse) only with colour. */
  selected?: number
  color: boolean
  summary: FleetSummary
  /** While the filter is being edited: the text typed so far (shown as a prompt). */
  filterDraft?: string | null
  /** A diagnostic (host keys pinned, a warning), on its own line above the footer, never over the table. */
  status?: string
  /** Override the row formatter (tests count calls through it). */
  formatRow?: (row: FleetRow, ctx: RowContext) => string
  formatTime?: (epochMs: number) => string
}

/** The summary's collection counts from a supervisor's progress (a stream being probed counts as starting). */
export function collectSummary(p: {
  streaming: number
  exec: number
  starting: number
  probing: number
}): NonNullable<FleetSummary['collect']> {
  return { streaming: p.streaming, exec: p.exec, starting: p.starting + p.probing }
}

/** Lines above the rows (summary, optional progress bar, header) and below them (optional status line, footer). */
function chromeHeight(summary: FleetSummary, status = false): number {
  return (summary.coldStart === true ? 2 : 1) + 1 + (status ? 1 : 0) + 1
}

/** How many rows fit in a terminal of `height` lines. */
export function bodyHeight(height: number, summary: FleetSummary, status = false): number {
  return Math.max(0, height - chromeHeight(summary, status))
}

/** Render one frame: at most `height` lines, none wider than `width` columns. */
export function renderFleet(table: PreparedTable, opts: RenderOptions): string[] {
  const width = Math.max(1, Math.floor(opts.width))
  const { counts } = table
  const s = opts.summary
  const lines: string[] = []
  const c = s.collect
  const collecting =
    c === undefined
      ? ''
      : ` (${c.streaming} streaming${c.exec > 0 ? `, ${c.exec} exec` : ''}${c.starting > 0 ? `, ${c.starting} starting` : ''})`
  const summaryText =
    `${counts.ready} ready${collecting} · ${counts.connecting} connecting · ${counts.down} down · tick ${s.tick} · ` +
    `handshakes ${s.handshakes} · dial slots ${s.dialSlotsInUse}/${s.dialSlotsCap}`
  lines.push(truncate(summaryText, width))
  if (s.coldStart === true) {
    const label = `connected ${counts.ready} / ${counts.total} `
    const pct = counts.total === 0 ? 100 : (counts.ready / counts.total) * 100
    const barWidth = Math.min(50, width - label.length)
    lines.push(truncate(barWidth >= 5 ? label + bar(pct, barWidth) : label.trimEnd(), width))
  }
  const columns = layoutColumns(width, table.hostWidth, { reason: table.counts.problems > 0 })
  const header = columns.map((c) => fit(c.title, c.width, c.align))
  const headerLine = truncate(header.join(' '), width)
  lines.push(opts.color ? ansi.bold(headerLine) : headerLine)

  const status = opts.status !== undefined && opts.status !== ''
  const body = bodyHeight(opts.height, s, status)
  const n = table.rows.length
  const offset = Math.max(0, Math.min(Math.floor(opts.offset), Math.max(0, n - body)))
  const end = Math.min(n, offset + body)
  const ctx: RowContext = { columns, color: opts.color, formatTime: opts.formatTime ?? formatClock }
  const format = opts.formatRow ?? formatRow
  const lineWidth = columns.reduce((sum, c) => sum + c.width, 0) + columns.length - 1
  for (let i = offset; i < end; i++) {
    const line = format(table.rows[i]!, ctx)
    // The formatter's line is exactly the column widths; cut for the (pathological) case they exceed the terminal.
    const shown = lineWidth > width ? truncateStyled(line, width, opts.color) : line
    lines.push(opts.color && i === opts.selected ? ansi.inverse(shown.padEnd(shown.length + width - lineWidth)) : shown)
  }
  if (status) lines.push(truncate(sanitize(opts.status!), width))
  lines.push(truncate(footer(table, offset, end, opts), width))
  return lines.slice(0, Math.max(0, opts.height))
}

function footer(table: PreparedTable, offset: number, end: number, opts: RenderOptions): string {
  if (opts.filterDraft !== undefined && opts.filterDraft !== null) {
    return `filter: ${sanitize(opts.filterDraft)}_   (Enter apply, Esc cancel)`
  }
  const n = table.rows.length
  const range = n === 0 ? 'no rows' : `rows ${offset + 1}-${end} of ${n}`
  const only = [
    table.problemsOnly ? 'problems only' : '',
    table.filter === '' ? '' : `filter '${sanitize(table.filter)}'`,
  ]
    .filter((x) => x !== '')
    .join(', ')
  const filtered = only === '' ? '' : ` (${only}, ${table.counts.total} hosts)`
  const sort = `sort ${table.sort}${table.reverse ? ' reversed' : ''}`
  return `${range}${filtered} · ${sort} · ↑↓ PgUp PgDn move · s sort · r reverse · p problems · / filter · Enter detail · q quit`
}

/** Cut a line that may carry SGR codes to `width` visible columns (codes are kept whole). */
function truncateStyled(line: string, width: number, color: boolean): string {
  if (!color) return truncate(line, width)
  let out = ''
  let visible = 0
  for (let i = 0; i < line.length && visible < width; ) {
    const m = /^\x1b\[[0-9;]*m/.exec(line.slice(i, i + 16))
    if (m !== null) {
      out += m[0]
      i += m[0].length
      continue
    }
    out += line[i]
    visible++
    i++
  }
  return `${out}\x1b[0m`
}
