/**
 * Small formatters shared by the table, detail and collate views. All pure; widths are in terminal columns,
 * counted as one column per code point (host names and metrics are ASCII in practice).
 */

const UNITS = ['B', 'K', 'M', 'G', 'T', 'P'] as const

/**
 * Compact binary size: at most 4 characters of number plus a unit letter (`0B`, `999B`, `1.5K`, `12M`, `1023M` never:
 * 1000–1023 roll over to `1.0G`). One decimal below 10, none above.
 */
export function humanBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '-'
  let v = bytes
  let u = 0
  while (v >= 999.5 && u < UNITS.length - 1) {
    v /= 1024
    u++
  }
  if (u === 0) return `${Math.round(v)}B`
  return `${v < 9.95 ? v.toFixed(1) : Math.round(v)}${UNITS[u]}`
}

/** A rate in bytes per second: {@link humanBytes} of the value (the column header says /s). */
export function humanRate(bytesPerSec: number | undefined): string {
  return bytesPerSec === undefined ? '-' : humanBytes(bytesPerSec)
}

/** Uptime as its two largest units: `45s`, `12m3s`, `5h12m`, `3d4h`. */
export function formatUptime(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-'
  const s = Math.floor(seconds)
  const d = Math.floor(s / 86_400)
  const h = Math.floor((s % 86_400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  const sec = s % 60
  if (d > 0) return `${d}d${h}h`
  if (h > 0) return `${h}h${m}m`
  if (m > 0) return `${m}m${sec}s`
  return `${sec}s`
}

/** A load average in at most 4 characters: `0.42`, `12.3`, `123`, `1234`. */
export function formatLoad(load: number): string {
  if (!Number.isFinite(load) || load < 0) return '-'
  if (load < 9.995) return load.toFixed(2)
  if (load < 99.95) return load.toFixed(1)
  return String(Math.round(load))
}

/** A percentage with one decimal, `-` when unknown. */
export function formatPct(pct: number | undefined): string {
  return pct === undefined || !Number.isFinite(pct) ? '-' : pct.toFixed(1)
}

/** A round trip: `0.4ms`, `12ms`, `1.2s`. */
export function formatRtt(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) return '-'
  if (ms < 10) return `${ms.toFixed(1)}ms`
  if (ms < 1000) return `${Math.round(ms)}ms`
  return `${(ms / 1000).toFixed(1)}s`
}

/** Wall-clock `HH:MM:SS` in local time. */
export function formatClock(epochMs: number): string {
  const d = new Date(epochMs)
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

/** Cut `s` to at most `width` columns, marking the cut with `…`. */
export function truncate(s: string, width: number): string {
  if (width <= 0) return ''
  if (s.length <= width) return s
  // Code-point aware so a surrogate pair is never split in half.
  const cps = Array.from(s)
  if (cps.length <= width) return s
  return width === 1 ? '…' : `${cps.slice(0, width - 1).join('')}…`
}

/** Pad or cut to exactly `width` columns; `right` aligns numbers. */
export function fit(s: string, width: number, align: 'left' | 'right' = 'left'): string {
  const t = truncate(s, width)
  const len = Array.from(t).length
  const pad = ' '.repeat(Math.max(0, width - len))
  return align === 'right' ? pad + t : t + pad
}

/** Replace control characters (remote error text, process names) so they cannot move the cursor or ring bells. */
export function sanitize(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, ' ')
}

/** ANSI SGR helpers; callers use them only when colour is on. */
export const ansi = {
  inverse: (s: string): string => `\x1b[7m${s}\x1b[27m`,
  bold: (s: string): string => `\x1b[1m${s}\x1b[22m`,
  red: (s: string): string => `\x1b[31m${s}\x1b[39m`,
  yellow: (s: string): string => `\x1b[33m${s}\x1b[39m`,
  green: (s: string): string => `\x1b[32m${s}\x1b[39m`,
  dim: (s: string): string => `\x1b[2m${s}\x1b[22m`,
}

/** Strip ANSI escape sequences (for measuring and tests). */
export function stripAnsi(s: string): string {
  return s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '')
}

/** A horizontal bar of `width` cells, `pct` (0–100) filled: `[#####.....]` has width 12 incl. brackets. */
export function bar(pct: number, width: number, fill = '#', empty = '.'): string {
  const inner = Math.max(0, width - 2)
  const p = Math.min(100, Math.max(0, Number.isFinite(pct) ? pct : 0))
  const n = Math.round((p / 100) * inner)
  return `[${fill.repeat(n)}${empty.repeat(inner - n)}]`
}
