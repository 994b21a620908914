/** The rows and reports a tick becomes: what the table, NDJSON and the exit code are drawn from. */
import type { HostMetrics, HostStatus } from '@kay/core'
import type { CollectTick } from '@kay/workers'
import type { HostOutcome } from '../help.js'
import type { HostReport } from './ndjson.js'
import type { FleetRow } from './table.js'

/**
 * The error to report for a host. A `KAY_NOT_READY` answer is replaced by the failure that keeps the host down
 * (its last dial error: auth, host key, connect…), so the report and the exit code name the cause, not the symptom.
 */
export function causeOf(
  error: { code: string; message: string } | undefined,
  status: Pick<HostStatus, 'lastError'> | undefined,
): { code: string; message: string } | undefined {
  if (error?.code === 'KAY_NOT_READY' && status?.lastError) {
    return { code: status.lastError.code, message: status.lastError.message }
  }
  return error && { code: error.code, message: error.message }
}

export function reportsOf(tick: CollectTick): HostReport[] {
  return tick.hosts.map((h) => {
    const r: HostReport = { host: h.host, ok: h.metrics !== undefined, state: h.status.state }
    if (h.metrics) r.metrics = h.metrics
    const error = causeOf(h.error, h.status)
    if (error) r.error = error
    if (h.status.rttMs !== undefined) r.rttMs = h.status.rttMs
    if (h.collectMode) r.collectMode = h.collectMode
    return r
  })
}

export function outcomes(tick: CollectTick): HostOutcome[] {
  return tick.hosts.map((h) => (h.error ? { ok: false, errorCode: causeOf(h.error, h.status)?.code } : { ok: true }))
}

/** Rows for the table: status + the latest metrics of each host. */
export function rowsOf(
  statuses: HostStatus[],
  metrics: Map<string, HostMetrics>,
  errors: Map<string, FleetRow['lastError']>,
) {
  return statuses.map((s) => {
    const row: FleetRow = { id: s.id, state: s.state }
    if (s.nextRetryAt !== undefined) row.nextRetryAt = s.nextRetryAt
    const err = s.lastError ?? errors.get(s.id)
    if (err) row.lastError = { code: err.code, message: err.message }
    const m = metrics.get(s.id)
    if (m && s.state === 'ready') row.metrics = m
    if (s.rttMs !== undefined) row.rttMs = s.rttMs
    if (s.collectMode) row.collectMode = s.collectMode
    if (s.collectPhase) row.collectPhase = s.collectPhase
    return row
  })
}

/** Fold one tick into the latest-metrics and latest-error maps the table is drawn from. */
export function absorbTick(
  tick: CollectTick,
  metrics: Map<string, HostMetrics>,
  errors: Map<string, FleetRow['lastError']>,
): void {
  for (const h of tick.hosts) {
    if (h.metrics) metrics.set(h.host, h.metrics)
    const error = causeOf(h.error, h.status)
    if (error) errors.set(h.host, error)
    else errors.delete(h.host)
  }
}
