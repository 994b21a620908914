/**
 * `kay serve`: the supervisor ticking continuously, exposed as Prometheus text or OpenMetrics on loopback.
 *
 * A scrape never triggers SSH work: each tick builds the exposition once (exposition.ts) and scrapes are answered
 * from it, so a scrape costs the same at 10 hosts or 10,000. Per host: node_exporter's own families (as the shards
 * collected them, under `instance="<host>"`) and kay's `kay_host_*` families under the same label; per collector:
 * kay's dial, handshake and tick families. Prometheus (or any OpenMetrics scraper) is the aggregation engine
 * across collectors split with `--shard i/N`.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { type ActorState, ConfigError, type HostStatus, type HostTarget, type KayError } from '@kay/core'
import { escapeLabelValue } from '@kay/core/internal'
import type { CollectTick, Supervisor } from '@kay/workers'
import { CONTENT_TYPES, Exposition, type ExpositionFormat, formatValue, negotiate } from './exposition.js'

const STATES: ActorState[] = ['idle', 'dialing', 'ready', 'backoff', 'quarantined', 'closed']
const DURATION_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export interface ServeMetrics {
  /** Fold one tick (and the supervisor's counters) in and build the exposition scrapes are answered from. */
  update(tick: CollectTick, sup: Supervisor): void
  /** The last exposition in `format`, as buffers to write in order (nothing before the first tick). */
  body(format: ExpositionFormat): { chunks: Uint8Array[]; bytes: number }
  /** Count state transitions (reconnects by reason) from host events. */
  onHost(status: HostStatus): void
  close(): void
}

export function createServeMetrics(): ServeMetrics {
  const eld = monitorEventLoopDelay({ resolution: 20 })
  eld.enable()
  let exposition = new Exposition()
  let handshakes = 0
  let restarts = 0
  const reconnects = new Map<string, number>()
  const durations = new Array<number>(DURATION_BUCKETS.length).fill(0)
  let durationCount = 0
  let durationSum = 0
  const lastSuccess = new Map<string, number>()
  const lastState = new Map<string, ActorState>()

  return {
    body: (format) => exposition.render(format),
    onHost(status) {
      const prev = lastState.get(status.id)
      lastState.set(status.id, status.state)
      if (status.state === 'backoff' && prev !== 'backoff') {
        const reason = status.lastError?.code ?? 'unknown'
        reconnects.set(reason, (reconnects.get(reason) ?? 0) + 1)
      }
    },
    update(tick, sup) {
      const now = Date.now()
      const st = sup.stats()
      // Counters only grow: a restarted shard reports its handshakes from zero again.
      handshakes = Math.max(handshakes, st.handshakes)
      restarts = Math.max(restarts, st.restarts)
      const seconds = tick.durationMs / 1000
      for (let i = 0; i < DURATION_BUCKETS.length; i++) if (seconds <= DURATION_BUCKETS[i]!) durations[i]!++
      durationCount++
      durationSum += seconds

      let up = ''
      let state = ''
      let rtt = ''
      let lastOk = ''
      let mode = ''
      let cpus = ''
      let memUsed = ''
      let memTotal = ''
      let load1 = ''
      let load5 = ''
      let load15 = ''
      let uptime = ''
      let mismatches = 0
      const present = new Set<string>()
      for (const h of tick.hosts) {
        const inst = `instance="${escapeLabelValue(h.host)}"`
        present.add(h.host)
        up += `kay_host_up{${inst}} ${h.metrics ? 1 : 0}\n`
        for (const s of STATES) state += `kay_host_state{${inst},state="${s}"} ${h.status.state === s ? 1 : 0}\n`
        if (h.status.rttMs !== undefined)
          rtt += `kay_host_keepalive_rtt_seconds{${inst}} ${formatValue(h.status.rttMs / 1000)}\n`
        if (h.status.lastError?.code === 'KAY_HOST_KEY_MISMATCH') mismatches++
        const m = h.metrics
        if (m) {
          lastSuccess.set(h.host, now)
          if (h.collectMode) mode += `kay_host_collect_mode{${inst},mode="${h.collectMode}"} 1\n`
          cpus += `kay_host_cpus{${inst}} ${m.cpus}\n`
          memUsed += `kay_host_memory_used_bytes{${inst}} ${m.memUsedBytes}\n`
          memTotal += `kay_host_memory_total_bytes{${inst}} ${m.memTotalBytes}\n`
          load1 += `kay_host_load1{${inst}} ${m.load1}\n`
          load5 += `kay_host_load5{${inst}} ${m.load5}\n`
          load15 += `kay_host_load15{${inst}} ${m.load15}\n`
          uptime += `kay_host_uptime_seconds{${inst}} ${m.uptimeSeconds}\n`
        }
        const ok = lastSuccess.get(h.host)
        if (ok !== undefined) lastOk += `kay_host_last_success_timestamp_seconds{${inst}} ${ok / 1000}\n`
      }
      // Hosts removed since the last tick must not linger.
      for (const id of lastSuccess.keys()) if (!present.has(id)) lastSuccess.delete(id)

      const x = new Exposition()
      const g = (name: string, help: string, lines: string) => x.family({ name, type: 'gauge', help }, lines)
      const c = (name: string, help: string, lines: string) => x.family({ name, type: 'counter', help }, lines)
      g('kay_host_up', '1 if the last tick collected metrics from the host, else 0', up)
      g('kay_host_state', 'the host connection state (1 for the current state)', state)
      g(
        'kay_host_collect_mode',
        'how the last tick collected the host: stream-<loop> or exec (1 for the current)',
        mode,
      )
      g('kay_host_keepalive_rtt_seconds', 'last keepalive probe round trip', rtt)
      g('kay_host_last_success_timestamp_seconds', 'when the host last returned metrics (unix time)', lastOk)
      g('kay_host_cpus', 'number of CPUs', cpus)
      g('kay_host_memory_used_bytes', 'memory used (total - available)', memUsed)
      g('kay_host_memory_total_bytes', 'memory total', memTotal)
      g('kay_host_load1', 'load average over 1 minute', load1)
      g('kay_host_load5', 'load average over 5 minutes', load5)
      g('kay_host_load15', 'load average over 15 minutes', load15)
      g('kay_host_uptime_seconds', 'host uptime', uptime)
      g(
        'kay_dials_in_flight',
        'TCP connect + handshake + auth attempts in flight',
        `kay_dials_in_flight ${st.dialsInFlight}\n`,
      )
      g('kay_dial_cap', 'configured global dial cap', `kay_dial_cap ${st.dialCap}\n`)
      g(
        'kay_dial_cap_effective',
        "the pushback governor's current dial cap",
        `kay_dial_cap_effective ${st.effectiveDialCap}\n`,
      )
      g(
        'kay_host_key_mismatches',
        'hosts quarantined because their host key changed',
        `kay_host_key_mismatches ${mismatches}\n`,
      )
      let byState = ''
      for (const [s, n] of Object.entries(st.byState)) byState += `kay_hosts{state="${escapeLabelValue(s)}"} ${n}\n`
      g('kay_hosts', 'hosts by connection state', byState)
      c('kay_handshakes_total', 'dials that reached TCP connect', `kay_handshakes_total ${handshakes}\n`)
      let rc = ''
      for (const [reason, n] of reconnects) rc += `kay_reconnects_total{reason="${escapeLabelValue(reason)}"} ${n}\n`
      c('kay_reconnects_total', 'connections lost or dials failed, by error code', rc)
      c('kay_shard_restarts_total', 'shard worker restarts', `kay_shard_restarts_total ${restarts}\n`)
      let hist = ''
      for (let i = 0; i < DURATION_BUCKETS.length; i++) {
        hist += `kay_collect_duration_seconds_bucket{le="${DURATION_BUCKETS[i]}"} ${durations[i]}\n`
      }
      hist += `kay_collect_duration_seconds_bucket{le="+Inf"} ${durationCount}\n`
      hist += `kay_collect_duration_seconds_sum ${formatValue(durationSum)}\nkay_collect_duration_seconds_count ${durationCount}\n`
      x.family({ name: 'kay_collect_duration_seconds', type: 'histogram', help: 'wall time of one collect tick' }, hist)
      g(
        'kay_event_loop_delay_p99_seconds',
        'main thread event-loop delay, p99 since the last tick',
        `kay_event_loop_delay_p99_seconds ${formatValue(eld.percentile(99) / 1e9)}\n`,
      )
      eld.reset()
      x.nodeChunks(tick.node)
      exposition = x
    },
    close() {
      eld.disable()
    },
  }
}

export interface ServeHandle {
  server: Server
  address: { host: string; port: number }
  ready(): boolean
  close(): Promise<void>
}

/** The HTTP side: /metrics (cached exposition), /healthz (process alive), /readyz (first tick done). */
/** Why `--listen` failed, as one line with the fix (a port in use is the usual case). */
function listenError(listen: { host: string; port: number }, err: NodeJS.ErrnoException): KayError {
  const where = `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`
  const why =
    err.code === 'EADDRINUSE'
      ? 'the address is already in use (another kay serve or exporter?); choose a free port with --listen ADDR:PORT'
      : err.code === 'EACCES'
        ? 'permission denied (ports below 1024 need privileges); choose a port above 1024 with --listen'
        : err.code === 'EADDRNOTAVAIL'
          ? 'no interface of this machine has that address; check --listen'
          : `${err.code ?? err.message}`
  return new ConfigError(`--listen ${where}: cannot listen: ${why}`)
}

export function startHttp(
  metrics: ServeMetrics,
  listen: { host: string; port: number },
  isReady: () => boolean,
): Promise<ServeHandle> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/metrics') {
      const format = negotiate(req.headers.accept)
      const { chunks, bytes } = metrics.body(format)
      res.writeHead(200, { 'content-type': CONTENT_TYPES[format], 'content-length': bytes })
      if (req.method === 'HEAD') {
        res.end()
        return
      }
      for (const c of chunks) res.write(c)
      res.end()
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
    } else if (path === '/readyz') {
      const ok = isReady()
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'first tick not done\n')
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
    }
  })
  // Bounded: idle keep-alive sockets and slow clients do not pin the process.
  server.keepAliveTimeout = 5000
  server.headersTimeout = 10_000
  server.requestTimeout = 10_000
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(listenError(listen, err))
    server.once('error', onError)
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError)
      const a = server.address()
      const port = typeof a === 'object' && a ? a.port : listen.port
      resolve({
        server,
        address: { host: listen.host, port },
        ready: isReady,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r())
            server.closeAllConnections()
          }),
      })
    })
  })
}

/** Apply a re-resolved host list without dropping existing connections: add the new, remove the gone. */
export function reloadHosts(sup: Supervisor, next: HostTarget[]): { added: string[]; removed: string[] } {
  const current = new Set(sup.hosts())
  const wanted = new Set(next.map((h) => h.id))
  const removed = [...current].filter((id) => !wanted.has(id))
  if (removed.length > 0) sup.remove(removed)
  const added = sup.add(next.filter((h) => !current.has(h.id)))
  return { added, removed }
}
