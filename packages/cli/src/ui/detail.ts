/**
 * The single-host detail view (`Enter` on a row, or `kay top HOST`): per-core CPU bars, memory, top processes,
 * filesystems and interfaces, fitted to the terminal. Sections shrink in a fixed order when space is short:
 * processes take what is left after CPU and memory, filesystems and interfaces are capped.
 */
import type { HostDetail } from '@kay/core'
import {
  ansi,
  bar,
  fit,
  formatLoad,
  formatPct,
  formatRtt,
  formatUptime,
  humanBytes,
  humanRate,
  sanitize,
  truncate,
} from './format.js'
import { type FleetRow, stateText } from './table.js'

export interface DetailOptions {
  width: number
  height: number
  color: boolean
  /** The host's status row (state, last error, RTT) when known. */
  status?: FleetRow
  formatTime?: (epochMs: number) => string
}

/** At most this many filesystem / interface lines, so processes keep most of the screen. */
const SECTION_CAP = 6

/** Render the detail view for `host` into at most `height` lines of at most `width` columns. */
export function renderDetail(host: string, detail: HostDetail | undefined, opts: DetailOptions): string[] {
  const width = Math.max(1, Math.floor(opts.width))
  const height = Math.max(0, Math.floor(opts.height))
  const head: string[] = []
  const title = opts.status === undefined ? host : `${host} — ${stateText(opts.status, opts.formatTime)}`
  head.push(opts.color ? ansi.bold(truncate(sanitize(title), width)) : truncate(sanitize(title), width))
  if (opts.status?.lastError !== undefined && opts.status.state !== 'ready') {
    head.push(truncate(`last error: ${opts.status.lastError.code}: ${sanitize(opts.status.lastError.message)}`, width))
  }
  const footer = truncate('Esc back · q quit', width)
  if (detail === undefined) {
    head.push(truncate('no data yet for this host', width))
    return fitHeight([...head, '', footer], height)
  }
  const m = detail.metrics
  head.push(
    truncate(
      `up ${formatUptime(m.uptimeSeconds)} · load ${formatLoad(m.load1)} ${formatLoad(m.load5)} ${formatLoad(m.load15)}` +
        ` · ${m.cpus} cpus · cpu ${formatPct(m.cpuPct)}%` +
        (opts.status?.rttMs === undefined ? '' : ` · rtt ${formatRtt(opts.status.rttMs)}`),
      width,
    ),
  )
  const memPct = m.memTotalBytes > 0 ? (m.memUsedBytes / m.memTotalBytes) * 100 : 0
  const swapPct = m.swapTotalBytes > 0 ? (m.swapUsedBytes / m.swapTotalBytes) * 100 : 0
  head.push(meterLine('mem', memPct, `${humanBytes(m.memUsedBytes)}/${humanBytes(m.memTotalBytes)}`, width))
  if (m.swapTotalBytes > 0) {
    head.push(meterLine('swp', swapPct, `${humanBytes(m.swapUsedBytes)}/${humanBytes(m.swapTotalBytes)}`, width))
  }
  head.push(...cpuBars(detail.perCpuPct, width))

  const fsLines = section(
    'FILESYSTEM',
    `${fit('MOUNT', 16)} ${fit('SIZE', 6, 'right')} ${fit('USED', 6, 'right')} ${fit('USE%', 5, 'right')} FILESYSTEM`,
    detail.filesystems.map(
      (f) =>
        `${fit(sanitize(f.mount), 16)} ${fit(humanBytes(f.sizeKb * 1024), 6, 'right')} ` +
        `${fit(humanBytes(f.usedKb * 1024), 6, 'right')} ${fit(formatPct(f.usedPct), 5, 'right')} ${sanitize(f.filesystem)}`,
    ),
    width,
  )
  const ifLines = section(
    'INTERFACES',
    `${fit('NAME', 16)} ${fit('RX/s', 6, 'right')} ${fit('TX/s', 6, 'right')} ${fit('RX', 6, 'right')} ${fit('TX', 6, 'right')}`,
    detail.interfaces.map(
      (i) =>
        `${fit(sanitize(i.name), 16)} ${fit(humanRate(i.rxBytesPerSec), 6, 'right')} ${fit(humanRate(i.txBytesPerSec), 6, 'right')} ` +
        `${fit(humanBytes(i.rxBytes), 6, 'right')} ${fit(humanBytes(i.txBytes), 6, 'right')}`,
    ),
    width,
  )
  const procHeader =
    `${fit('PID', 7, 'right')} ${fit('USER', 10)} ${fit('CPU%', 5, 'right')} ${fit('MEM%', 5, 'right')} ` +
    `${fit('RSS', 6, 'right')} COMMAND`
  const procRows = detail.processes.map(
    (p) =>
      `${fit(String(p.pid), 7, 'right')} ${fit(sanitize(p.user), 10)} ${fit(formatPct(p.cpuPct), 5, 'right')} ` +
      `${fit(formatPct(p.memPct), 5, 'right')} ${fit(humanBytes(p.rssKb * 1024), 6, 'right')} ${sanitize(p.command)}`,
  )
  // Processes get what is left after the fixed parts; each section keeps its title and header when it has rows.
  // Fixed lines: the head, the sections, the blank line before the processes, and the blank + footer at the end.
  const procSpace = Math.max(0, height - head.length - fsLines.length - ifLines.length - 3)
  const procLines =
    procRows.length === 0 ? [] : ['', ...sectionLines('PROCESSES', procHeader, procRows, procSpace, width)]
  return fitHeight([...head, ...procLines, ...fsLines, ...ifLines, '', footer], height)
}

function meterLine(label: string, pct: number, text: string, width: number): string {
  const barWidth = Math.max(0, Math.min(40, width - label.length - text.length - 9))
  const meter = barWidth >= 5 ? ` ${bar(pct, barWidth, '|', ' ')}` : ''
  return truncate(`${label}${meter} ${formatPct(pct).padStart(5)}% ${text}`, width)
}

/** Per-core bars laid out in as many columns as fit (`cpu3  [|||||     ]  45.2`). */
function cpuBars(perCpu: readonly number[], width: number): string[] {
  if (perCpu.length === 0) return []
  const label = `cpu${perCpu.length - 1}`.length
  const cellWidth = Math.max(label + 1 + 12 + 6, 24)
  const cols = Math.max(1, Math.min(4, Math.floor((width + 2) / (cellWidth + 2))))
  const rows = Math.ceil(perCpu.length / cols)
  const out: string[] = []
  for (let r = 0; r < rows; r++) {
    const cells: string[] = []
    for (let c = 0; c < cols; c++) {
      const i = c * rows + r
      const pct = perCpu[i]
      if (pct === undefined) continue
      const barW = cellWidth - label - 1 - 6
      cells.push(`${fit(`cpu${i}`, label)} ${bar(pct, barW, '|', ' ')}${formatPct(pct).padStart(6)}`)
    }
    out.push(truncate(cells.join('  '), width))
  }
  return out
}

function sectionLines(title: string, header: string, rows: string[], space: number, width: number): string[] {
  if (space < 3) return []
  const shown = rows.slice(0, space - 2)
  const more = rows.length - shown.length
  const t = more > 0 ? `${title} (${shown.length} of ${rows.length})` : title
  return [truncate(t, width), truncate(header, width), ...shown.map((r) => truncate(r, width))]
}

function section(title: string, header: string, rows: string[], width: number): string[] {
  if (rows.length === 0) return []
  return ['', ...sectionLines(title, header, rows, SECTION_CAP + 2, width)]
}

function fitHeight(lines: string[], height: number): string[] {
  if (lines.length <= height) return lines
  // Keep the footer (how to get back) when cutting.
  if (height <= 1) return lines.slice(0, height)
  return [...lines.slice(0, height - 1), lines[lines.length - 1]!]
}
