/**
 * NDJSON for `kay collect --json` and `kay fleet --json`: one object per host, then one summary object per tick.
 * Field names are a public contract (scripts parse them); add fields, never rename.
 */

import type { ActorState, CollectMode, HostMetrics } from '@kay/core'
import type { FleetProgress } from '@kay/workers'

/** One host's result for one tick. */
export interface HostReport {
  host: string
  /** Metrics were collected this tick. */
  ok: boolean
  state: ActorState
  metrics?: HostMetrics
  error?: { code: string; message: string }
  rttMs?: number
  collectMode?: CollectMode
}

/** The printed per-host line: a HostReport's documented fields, in that order. */
type HostLine = HostReport

interface SummaryLine {
  summary: true
  hosts: number
  ok: number
  failed: number
  /** Failed hosts per error code (hosts that failed without a code count as `KAY_INTERNAL`). */
  byCode: Record<string, number>
  tick: number
  durationMs: number
  /** `kay fleet`: where every host stands after the tick (connecting, starting, probing, streaming, exec, …). */
  progress?: FleetProgress
}

/** The per-host object (only the documented fields, in a stable order). */
function hostLine(r: HostReport): HostLine {
  const o: HostLine = { host: r.host, ok: r.ok, state: r.state }
  if (r.metrics !== undefined) o.metrics = r.metrics
  if (r.error !== undefined) o.error = { code: r.error.code, message: r.error.message }
  if (r.rttMs !== undefined) o.rttMs = r.rttMs
  if (r.collectMode !== undefined) o.collectMode = r.collectMode
  return o
}

function summaryLine(
  reports: Iterable<HostReport>,
  tick: number,
  durationMs: number,
  progress?: FleetProgress,
): SummaryLine {
  const s: SummaryLine = {
    summary: true,
    hosts: 0,
    ok: 0,
    failed: 0,
    byCode: {},
    tick,
    durationMs: Math.round(durationMs),
  }
  for (const r of reports) {
    s.hosts++
    if (r.ok) s.ok++
    else {
      s.failed++
      const code = r.error?.code ?? 'KAY_INTERNAL'
      s.byCode[code] = (s.byCode[code] ?? 0) + 1
    }
  }
  if (progress) s.progress = progress
  return s
}

/** All lines for one tick (each without a trailing newline): one per host, then the summary. */
export function tickLines(
  reports: readonly HostReport[],
  tick: number,
  durationMs: number,
  progress?: FleetProgress,
): string[] {
  const lines = reports.map((r) => JSON.stringify(hostLine(r)))
  lines.push(JSON.stringify(summaryLine(reports, tick, durationMs, progress)))
  return lines
}
