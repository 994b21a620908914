/**
 * `kay serve`: the supervisor ticking continuously, exposed as Prometheus/OpenMetrics text on loopback.
 *
 * A scrape never triggers SSH work: each tick renders the exposition once (prom-client) and scrapes return that
 * cached text, so a scrape costs the same at 10 hosts or 10,000. Prometheus (or any OpenMetrics scraper) is the
 * aggregation engine across collectors split with `--shard i/N`.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import type { ActorState, HostStatus, HostTarget, KayError } from '@kay/core'
import { ConfigError } from '@kay/core'
import type { CollectTick, Supervisor } from '@kay/workers'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

const STATES: ActorState[] = ['idle', 'dialing', 'ready', 'backoff', 'quarantined', 'closed']

export interface ServeMetrics {
  /** Fold one tick (and the supervisor's counters) into the registry and re-render the cached exposition. */
  update(tick: CollectTick, sup: Supervisor): Promise<void>
  /** The last rendered exposition ('' before the first tick). */
  text(): string
  contentType: string
  /** Count state transitions (reconnects by reason) from host events. */
  onHost(status: HostStatus): void
  close(): void
}

export function createServeMetrics(): ServeMetrics {
  const registry = new Registry()
  const g = (name: string, help: string, labelNames: string[] = ['host']) =>
    new Gauge({ name, help, labelNames, registers: [registry] })
  const up = g('kay_host_up', '1 if the last tick collected metrics from the host, else 0')
  const state = g('kay_host_state', 'the host connection state (1 for the current state)', ['host', 'state'])
  const cpu = g('kay_host_cpu_percent', 'CPU busy percent over the last interval, all CPUs')
  const cpus = g('kay_host_cpus', 'number of CPUs')
  const memUsed = g('kay_host_memory_used_bytes', 'memory used (total - available)')
  const memTotal = g('kay_host_memory_total_bytes', 'memory total')
  const load1 = g('kay_host_load1', 'load average over 1 minute')
  const load5 = g('kay_host_load5', 'load average over 5 minutes')
  const load15 = g('kay_host_load15', 'load average over 15 minutes')
  const uptime = g('kay_host_uptime_seconds', 'host uptime')
  const rx = g(
    'kay_host_network_receive_bytes_per_second',
    'bytes/s received on the interfaces with a device (all but lo where none has one)',
  )
  const tx = g(
    'kay_host_network_transmit_bytes_per_second',
    'bytes/s sent on the interfaces with a device (all but lo where none has one)',
  )
  const fs = g('kay_host_root_fs_used_percent', 'root filesystem use, percent')
  const rtt = g('kay_host_keepalive_rtt_seconds', 'last keepalive probe round trip')
  const lastOk = g('kay_host_last_success_timestamp_seconds', 'when the host last returned metrics (unix time)')
  const dialsInFlight = g('kay_dials_in_flight', 'TCP connect + handshake + auth attempts in flight', [])
  const dialCap = g('kay_dial_cap', 'configured global dial cap', [])
  const dialCapEff = g('kay_dial_cap_effective', "the pushback governor's current dial cap", [])
  const mismatches = g('kay_host_key_mismatches', 'hosts quarantined because their host key changed', [])
  const hostsByState = g('kay_hosts', 'hosts by connection state', ['state'])
  const handshakes = new Counter({
    name: 'kay_handshakes_total',
    help: 'dials that reached TCP connect',
    registers: [registry],
  })
  const reconnects = new Counter({
    name: 'kay_reconnects_total',
    help: 'connections lost or dials failed, by error code',
    labelNames: ['reason'],
    registers: [registry],
  })
  const restarts = new Counter({
    name: 'kay_shard_restarts_total',
    help: 'shard worker restarts',
    registers: [registry],
  })
  const collectDuration = new Histogram({
    name: 'kay_collect_duration_seconds',
    help: 'wall time of one collect tick',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  })
  const loopDelay = g('kay_event_loop_delay_p99_seconds', 'main thread event-loop delay, p99 since the last tick', [])
  const eld = monitorEventLoopDelay({ resolution: 20 })
  eld.enable()

  let text = ''
  let seenHandshakes = 0
  let seenRestarts = 0
  const lastSuccess = new Map<string, number>()
  const lastState = new Map<string, ActorState>()

  return {
    contentType: registry.contentType,
    text: () => text,
    onHost(status) {
      const prev = lastState.get(status.id)
      lastState.set(status.id, status.state)
      if (status.state === 'backoff' && prev !== 'backoff')
        reconnects.inc({ reason: status.lastError?.code ?? 'unknown' })
    },
    async update(tick, sup) {
      // Hosts removed since the last tick must not linger as stale series.
      for (const m of [
        up,
        state,
        cpu,
        cpus,
        memUsed,
        memTotal,
        load1,
        load5,
        load15,
        uptime,
        rx,
        tx,
        fs,
        rtt,
        lastOk,
      ]) {
        m.reset()
      }
      const now = Date.now()
      for (const h of tick.hosts) {
        const host = h.host
        up.set({ host }, h.metrics ? 1 : 0)
        for (const s of STATES) state.set({ host, state: s }, h.status.state === s ? 1 : 0)
        if (h.status.rttMs !== undefined) rtt.set({ host }, h.status.rttMs / 1000)
        const m = h.metrics
        if (m) {
          lastSuccess.set(host, now)
          if (m.cpuPct !== undefined) cpu.set({ host }, m.cpuPct)
          cpus.set({ host }, m.cpus)
          memUsed.set({ host }, m.memUsedBytes)
          memTotal.set({ host }, m.memTotalBytes)
          load1.set({ host }, m.load1)
          load5.set({ host }, m.load5)
          load15.set({ host }, m.load15)
          uptime.set({ host }, m.uptimeSeconds)
          if (m.netRxBytesPerSec !== undefined) rx.set({ host }, m.netRxBytesPerSec)
          if (m.netTxBytesPerSec !== undefined) tx.set({ host }, m.netTxBytesPerSec)
          if (m.rootFsUsedPct !== undefined) fs.set({ host }, m.rootFsUsedPct)
        }
        const ok = lastSuccess.get(host)
        if (ok !== undefined) lastOk.set({ host }, ok / 1000)
      }
      const st = sup.stats()
      dialsInFlight.set(st.dialsInFlight)
      dialCap.set(st.dialCap)
      dialCapEff.set(st.effectiveDialCap)
      hostsByState.reset()
      for (const [s, n] of Object.entries(st.byState)) hostsByState.set({ state: s }, n)
      mismatches.set(tick.hosts.filter((h) => h.status.lastError?.code === 'KAY_HOST_KEY_MISMATCH').length)
      if (st.handshakes > seenHandshakes) handshakes.inc(st.handshakes - seenHandshakes)
      seenHandshakes = Math.max(seenHandshakes, st.handshakes)
      if (st.restarts > seenRestarts) restarts.inc(st.restarts - seenRestarts)
      seenRestarts = st.restarts
      collectDuration.observe(tick.durationMs / 1000)
      loopDelay.set(eld.percentile(99) / 1e9)
      eld.reset()
      text = await registry.metrics()
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
      res.writeHead(200, { 'content-type': metrics.contentType }).end(metrics.text())
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
