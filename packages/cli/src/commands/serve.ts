import type { ParsedCommand } from '../args.js'
import { sleep } from '../duration.js'
import { EXIT, type ExitCode } from '../help.js'
import { resolveHosts } from '../hosts.js'
import { createServeMetrics, reloadHosts, startHttp } from '../serve/metrics.js'
import { connectTimeoutOf, type Io, supervisorOptions, withSupervisor } from './common.js'

/**
 * `kay serve`: tick every interval, expose the last tick on /metrics. SIGHUP re-reads the host selection (adds and
 * removes hosts without touching the others' connections); SIGINT/SIGTERM stop cleanly (exit 0).
 */
export async function cmdServe(cmd: ParsedCommand & { command: 'serve' }, io: Io): Promise<ExitCode> {
  // Loopback-only unless --allow-non-loopback: enforced by the argument parser (args.ts).
  const hosts = await resolveHosts(cmd.hosts, cmd.connection)
  // The endpoint first: a port in use is one line and exit 1, before any host is dialed.
  const metrics = createServeMetrics()
  let firstTickDone = false
  const http = await startHttp(metrics, cmd.listen, () => firstTickDone).catch((err: unknown) => {
    metrics.close()
    throw err
  })
  return withSupervisor(supervisorOptions(cmd.connection, hosts, { nodeExporter: true }), io, async (sup) => {
    sup.on('host', (s) => metrics.onHost(s))
    io.err.write(`kay: serving http://${http.address.host}:${http.address.port}/metrics for ${hosts.length} hosts\n`)
    let reloading = false
    const onHup = () => {
      if (reloading) return
      reloading = true
      resolveHosts(cmd.hosts, cmd.connection)
        .then((next) => {
          const { added, removed } = reloadHosts(sup, next)
          io.err.write(`kay: reloaded host list: +${added.length} -${removed.length} (${next.length} hosts)\n`)
        })
        .catch((err: Error) => io.err.write(`kay: reload failed, keeping the current hosts: ${err.message}\n`))
        .finally(() => {
          reloading = false
        })
    }
    process.on('SIGHUP', onHup)
    try {
      while (!io.signal.aborted) {
        const started = Date.now()
        const tick = await sup.collect({ timeoutMs: Math.min(cmd.intervalMs, connectTimeoutOf(cmd.connection)) })
        metrics.update(tick, sup)
        firstTickDone = true
        await sleep(Math.max(0, cmd.intervalMs - (Date.now() - started)), io.signal)
      }
    } finally {
      process.off('SIGHUP', onHup)
    }
    return EXIT.ok
  }).finally(async () => {
    await http.close()
    metrics.close()
  })
}
