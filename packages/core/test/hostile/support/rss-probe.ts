/**
 * Child process for the hostile-peer memory tests: one HostActor (and collector) against one hostile server, with
 * nothing else in the process, so its peak RSS is the cost of that peer. Reads a ProbeSpec (JSON, argv[2]) and
 * prints a ProbeResult (JSON) as its last line. Run with `node --expose-gc --conditions=kay-source --import tsx`.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { HostCollector } from '../../../src/collection/collector.js'
import { identifyCommand } from '../../../src/collection/commands.js'
import { HostActor } from '../../../src/connection/actor.js'
import { LocalDialGate } from '../../../src/connection/dial-gate.js'
import { KayError } from '../../../src/errors.js'
import { generateClientKey } from '../../../src/sim/keys.js'
import { until } from '../../../src/testing/wait.js'
import type { HostKeyVerifier } from '../../../src/types.js'
import type { ProbeResult, ProbeSpec } from './run-probe.js'

const spec = JSON.parse(process.argv[2]!) as ProbeSpec
const MiB = 1024 * 1024

const acceptAll: HostKeyVerifier = { verify: async () => ({ kind: 'trusted' }) }

function gc(): void {
  ;(globalThis as { gc?: () => void }).gc?.()
}

function peakRss(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss
}

function codeOf(err: unknown): string {
  return err instanceof KayError ? err.code : `not a KayError: ${String(err)}`
}

async function main(): Promise<ProbeResult> {
  const key = generateClientKey()
  const actor = new HostActor({
    target: { id: 'hostile', hostname: '127.0.0.1', port: spec.port, user: 'kay' },
    identity: { username: 'kay', keys: [{ key: key.parsed, source: 'probe' }] },
    verifier: acceptAll,
    dialGate: new LocalDialGate({ cap: 1 }),
    handshakeTimeoutMs: spec.handshakeTimeoutMs,
    keepaliveIntervalMs: 0,
    // Redial fast: the test wants several rounds against the same peer.
    backoff: { baseMs: 20, capMs: 100 },
  })
  const collector = new HostCollector(actor, { streamTimeoutMs: 1000, maxFrameBytes: 256 * 1024 })
  // Count the collector's stream channels (it probes them as soon as the connection is ready).
  let streamsOpened = 0
  let streamsClosed = 0
  const openExec = actor.openExec.bind(actor)
  actor.openExec = (command, setup) =>
    openExec(command, (ch) => {
      if (identifyCommand(command).kind === 'stream') {
        streamsOpened++
        ch.once('close', () => streamsClosed++)
      }
      setup?.(ch)
    })
  const codes: string[] = []
  const lost: string[] = []
  actor.on('state', (s) => {
    if (s.state === 'backoff') lost.push(s.lastError?.code ?? 'none')
  })
  // Warm the code paths the probe uses, then take the baseline.
  gc()
  await new Promise((r) => setTimeout(r, 50))
  gc()
  const baselineRss = process.memoryUsage().rss
  try {
    writeFileSync('/proc/self/clear_refs', '5') // resets VmHWM to the current RSS (Linux 4.0+)
  } catch {}
  const cpu0 = process.cpuUsage()
  const end = Date.now() + spec.budgetMs
  const left = () => Math.max(1, end - Date.now())

  if (spec.phase === 'dial') {
    actor.start()
    // A peer that is never dropped shows as such (and its RSS as it stood when the budget ran out).
    await until('dial rounds', () => lost.length >= spec.rounds, left()).catch(() => lost.push('still-connected'))
  } else {
    actor.start()
    for (let i = 0; i < spec.rounds; i++) {
      await until('ready', () => actor.state === 'ready', left())
      try {
        const lostBefore = lost.length
        if (spec.phase === 'run') {
          await actor.run('flood', { timeoutMs: left(), maxOutputBytes: spec.maxOutputBytes ?? MiB })
        } else {
          await collector.collect(Math.min(left(), 10_000))
          // The tick succeeded over exec; the collector now probes its stream flavours in the background. Wait
          // until every stream it opened is closed again and none is being opened, or the connection went.
          let seen = -1
          await until(
            'stream probes settled',
            () => {
              if (lost.length > lostBefore) return true
              const settled = streamsOpened > 0 && streamsOpened === streamsClosed && streamsOpened === seen
              seen = streamsOpened
              return settled
            },
            { timeoutMs: left(), everyMs: 250 },
          )
        }
        codes.push('ok')
      } catch (err) {
        codes.push(codeOf(err))
      }
    }
  }
  const handshakes = actor.status().handshakes
  const cpu = process.cpuUsage(cpu0)
  const cpuMs = Math.round((cpu.user + cpu.system) / 1000)
  collector.close()
  await actor.close()
  return { baselineRss, peakRss: peakRss(), codes, lost, handshakes, cpuMs, streamsOpened, streamsClosed }
}

main().then(
  (r) => {
    process.stdout.write(`${JSON.stringify(r)}\n`)
    process.exit(0)
  },
  (err) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)
