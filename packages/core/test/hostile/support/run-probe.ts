/**
 * Runs rss-probe.ts (one HostActor against one hostile server, alone in a child process) and returns what it
 * measured. Shared by test/hostile/memory.test.ts and bench/stress/hostile-rss.ts.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export interface ProbeSpec {
  port: number
  /** dial: let the actor dial `rounds` times; run: a command per round; collect: a collection per round. */
  phase: 'dial' | 'run' | 'collect'
  rounds: number
  handshakeTimeoutMs: number
  /** The whole probe's bound, ms. */
  budgetMs: number
  /** run: the command's output cap, bytes. Default 1 MiB. */
  maxOutputBytes?: number
}

export interface ProbeResult {
  /** RSS after set-up and a GC, before the first dial, bytes. */
  baselineRss: number
  /** Peak RSS (VmHWM) since the baseline, bytes. */
  peakRss: number
  /** The outcome of each run/collect round: `ok` or the error code of the command or collection. */
  codes: string[]
  /** Why the connection went each time it did (a failed dial, or a lost connection): the actor's error code. */
  lost: string[]
  /** Dials the actor made (handshakes reaching TCP connect). */
  handshakes: number
  /** CPU the probe used from the baseline to the end (user + system), ms. */
  cpuMs: number
  /** collect: collection streams opened, and closed again. */
  streamsOpened: number
  streamsClosed: number
}

const probe = fileURLToPath(new URL('./rss-probe.ts', import.meta.url))
const coreDir = fileURLToPath(new URL('../../../', import.meta.url))

/** Spawns the probe; rejects with its stderr if it fails. The probe bounds itself; a wedged child is killed. */
export function runProbe(spec: ProbeSpec): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--expose-gc', '--conditions=kay-source', '--import', 'tsx', probe, JSON.stringify(spec)],
      { cwd: coreDir, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    let err = ''
    child.stdout.on('data', (b: Buffer) => {
      out += b
    })
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 16 * 1024) err += b
    })
    const killer = setTimeout(() => child.kill('SIGKILL'), spec.budgetMs + 15_000)
    child.on('close', (code) => {
      clearTimeout(killer)
      const last = out.trim().split('\n').pop() ?? ''
      if (code !== 0) reject(new Error(`probe exited ${code}: ${err.trim()}`))
      else resolve(JSON.parse(last) as ProbeResult)
    })
  })
}
