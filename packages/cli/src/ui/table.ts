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

/** The order `s` cycles through. Host sorts ascending; state puts problems first; metrics sort largest first. */
export const SORT_CYCLE: readonly SortColumn[] = ['host', 'cpu', 'mem', 'load', 'net', 'fs', 'rtt', 'uptime', 'state']

export interface StateCounts {
  /** Connection ready. */
  ready: number
  /** Not yet connected: waiting for a dial slot (idle) or dialing. */
  connecting: number
  /** backoff, quarantined (key mismatch) or closed. */
  down: number
  total: number
}

/** The result of one data update: rows filtered and sorted, fleet-wide counts, the HOST column width. */
export interface PreparedTable {
  readonly rows: readonly FleetRow[]
  readonly counts: StateCounts
  /** Width of the HOST column: the longest id in the whole fleet (stable while scrolling/filtering), clamped. */
  readonly hostWidth: number
  readonly sort: SortColumn
  readonly filter: string
}

export const HOST_WIDTH_MIN = 4
export const HOST_WIDTH_MAX = 40

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
export function comparator(sort: SortColumn): (a: FleetRow, b: FleetRow) => number {
  const byId = (a: FleetRow, b: FleetRow): number => collator.compare(a.id, b.id)
  if (sort === 'host') return byId
  if (sort === 'state') return (a, b) => STATE_RANK[a.state] - STATE_RANK[b.state] || byId(a, b)
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
export function stateLabel(row: FleetRow): string {
  const code = row.lastError?.code
  if (row.state === 'ready') {
    return row.collectPhase === 'starting' || row.collectPhase === 'probing' ? row.collectPhase : 'ready'
  }
  if (code === 'KAY_HOST_KEY_MISMATCH') return 'key mismatch'
  if (code === 'KAY_HOST_KEY_REVOKED') return 'key revoked'
  if (code === 'KAY_HOST_KEY_UNKNOWN') return 'key unknown'
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
export function matchesFilter(row: FleetRow, filter: string): boolean {
  if (filter === '') return true
  const f = filter.toLowerCase()
  return (
    row.id.toLowerCase().includes(f) ||
    stateLabel(row).includes(f) ||
    (row.lastError?.code.toLowerCase().includes(f) ?? false)
  )
}

export function countStates(rows: readonly FleetRow[]): StateCounts {
  const c: StateCounts = { ready: 0, connecting: 0, down: 0, total: rows.length }
  for (const r of rows) {
    if (r.state === 'ready') c.ready++
    else if (r.state === 'idle' || r.state === 'dialing') c.connecting++
    else c.down++
  }
  return c
}

/** Filter, sort and count: once per data update (never per frame). The input array is not modified. */
export function prepareTable(
  rows: readonly FleetRow[],
  opts: { sort?: SortColumn; filter?: string } = {},
): PreparedTable {
  const sort = opts.sort ?? 'host'
  const filter = opts.filter ?? ''
  let longest = 0
  for (const r of rows) if (r.id.length > longest) longest = r.id.length
  const kept = filter === '' ? rows.slice() : rows.filter((r) => matchesFilter(r, filter))
  kept.sort(comparator(sort))
  return {
    rows: kept,
    counts: countStates(rows),
    hostWidth: Math.min(HOST_WIDTH_MAX, Math.max(HOST_WIDTH_MIN, longest)),
    sort,
    filter,
  }
}

export type ColumnKey = 'host' | 'state' | 'cpu' | 'mem' | 'load' | 'uptime' | 'net' | 'fs' | 'rtt' | 'mode' | 'error'

interface ColumnDef {
  key: ColumnKey
  title: string
  width: number
  align: 'left' | 'right'
}

/** Columns left to right, with their natural widths. HOST's width comes from the data; LAST ERROR takes the rest. */
const COLUMNS: readonly ColumnDef[] = [
  { key: 'host', title: 'HOST', width: HOST_WIDTH_MIN, align: 'left' },
  { key: 'state', title: 'STATE', width: 22, align: 'left' },
  { key: 'cpu', title: 'CPU%', width: 5, align: 'right' },
  { key: 'mem', title: 'MEM used/total', width: 14, align: 'right' },
  { key: 'load', title: 'LOAD 1/5/15', width: 14, align: 'right' },
  { key: 'uptime', title: 'UPTIME', width: 7, align: 'right' },
  { key: 'net', title: 'NET rx/tx', width: 9, align: 'right' },
  { key: 'fs', title: 'FS%', width: 5, align: 'right' },
  { key: 'rtt', title: 'RTT', width: 6, align: 'right' },
  { key: 'mode', title: 'MODE', width: 13, align: 'left' },
  { key: 'error', title: 'LAST ERROR', width: 12, align: 'left' },
]

/**
 * Which columns go first when the terminal is too narrow, first dropped first. HOST and STATE are never dropped
 * (they shrink instead). Rationale: MODE and RTT are diagnostics, UPTIME/FS/NET are context, LAST ERROR explains a
 * red STATE, and CPU, MEM and LOAD are what the table is for.
 */
export const COLUMN_DROP_ORDER: readonly ColumnKey[] = [
  'mode',
  'rtt',
  'uptime',
  'fs',
  'net',
  'error',
  'load',
  'mem',
  'cpu',
]

/** LAST ERROR grows into the spare width up to this many columns. */
const ERROR_MAX_WIDTH = 80

export type Column = ColumnDef

/** The columns that fit in `width` (separated by one space), widest-first drops per {@link COLUMN_DROP_ORDER}. */
export function layoutColumns(width: number, hostWidth: number): Column[] {
  let cols: Column[] = COLUMNS.map((c) => (c.key === 'host' ? { ...c, width: hostWidth } : { ...c }))
  const total = (cs: Column[]): number => cs.reduce((s, c) => s + c.width, 0) + Math.max(0, cs.length - 1)
  for (const key of COLUMN_DROP_ORDER) {
    if (total(cols) <= width) break
    cols = cols.filter((c) => c.key !== key)
  }
  const host = cols.find((c) => c.key === 'host')!
  const state = cols.find((c) => c.key === 'state')!
  const err = cols.find((c) => c.key === 'error')
  if (err !== undefined) err.width = Math.min(ERROR_MAX_WIDTH, err.width + Math.max(0, width - total(cols)))
  // Only HOST and STATE left and still too wide: shrink STATE to 12 ("key mismatch"), then HOST, then STATE again.
  let over = total(cols) - width
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
  if (over > 0) state.width = Math.max(1, state.width - over)
  return cols
}

/** What a row formatter needs besides the row. */
export interface RowContext {
  columns: readonly Column[]
  color: boolean
  /** Formats `nextRetryAt` (epoch ms) for "backoff until …". */
  formatTime: (epochMs: number) => string
}

/** The STATE cell text: `ready`, `connecting`, `backoff until 12:03:04`, `key mismatch`, `auth failed`, … */
export function stateText(row: FleetRow, formatTime: (epochMs: number) => string = formatClock): string {
  const label = stateLabel(row)
  if (label === 'backoff' && row.nextRetryAt !== undefined) return `backoff until ${formatTime(row.nextRetryAt)}`
  return label
}

function cellText(key: ColumnKey, row: FleetRow, ctx: RowContext): string {
  const m = row.metrics
  switch (key) {
    case 'host':
      return row.id
    case 'state':
      return stateText(row, ctx.formatTime)
    case 'cpu':
      return formatPct(m?.cpuPct)
    case 'mem':
      return m === undefined ? '-' : `${humanBytes(m.memUsedBytes)}/${humanBytes(m.memTotalBytes)}`
    case 'load':
      return m === undefined ? '-' : `${formatLoad(m.load1)}/${formatLoad(m.load5)}/${formatLoad(m.load15)}`
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
    case 'error':
      return row.lastError === undefined || row.state === 'ready' ? '' : sanitize(row.lastError.message)
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
    let cell = fit(c.key === 'host' ? sanitize(cellText(c.key, row, ctx)) : cellText(c.key, row, ctx), c.width, c.align)
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

/** Lines above the rows (summary, optional progress bar, header) and below them (footer). */
export function chromeHeight(summary: FleetSummary): number {
  return (summary.coldStart === true ? 2 : 1) + 1 + 1
}

/** How many rows fit in a terminal of `height` lines. */
export function bodyHeight(height: number, summary: FleetSummary): number {
  return Math.max(0, height - chromeHeight(summary))
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
  const columns = layoutColumns(width, table.hostWidth)
  const header = columns.map((c) => fit(c.title, c.width, c.align))
  const headerLine = truncate(header.join(' '), width)
  lines.push(opts.color ? ansi.bold(headerLine) : headerLine)

  const body = bodyHeight(opts.height, s)
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
  lines.push(truncate(footer(table, offset, end, opts), width))
  return lines.slice(0, Math.max(0, opts.height))
}

function footer(table: PreparedTable, offset: number, end: number, opts: RenderOptions): string {
  if (opts.filterDraft !== undefined && opts.filterDraft !== null) {
    return `filter: ${sanitize(opts.filterDraft)}_   (Enter apply, Esc cancel)`
  }
  const n = table.rows.length
  const range = n === 0 ? 'no rows' : `rows ${offset + 1}-${end} of ${n}`
  const filtered = table.filter === '' ? '' : ` (filter '${sanitize(table.filter)}', ${table.counts.total} hosts)`
  return `${range}${filtered} · sort ${table.sort} · ↑↓ PgUp PgDn move · s sort · / filter · Enter detail · q quit`
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
