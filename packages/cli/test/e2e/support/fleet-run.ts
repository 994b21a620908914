/**
 * Watching `kay fleet --json` converge from a cold start: the CLI as a child process whose NDJSON is read tick by
 * tick as it comes (not at exit), and a tracker that says, for each tick, how many hosts reported at all, how many
 * were ok, how many collected over a collection stream, and when every host first did both. Used by the cold-start
 * e2e tests (real sshd) and by bench/load/fleet-cold-start.ts, which runs the same thing at 1,000 hosts.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { KAY_NODE_ARGS, REPO_ROOT } from './kay.js'

/** One tick of `kay fleet --json`, folded from its host lines and its summary line. */
export interface TickView {
  tick: number
  /** Host lines seen (each host once per tick: nothing lost means this equals the fleet size). */
  hosts: number
  ok: number
  /** Hosts whose metrics came over a collection stream (`collectMode` `stream-*`). */
  streaming: number
  /** Failed hosts per error code. */
  byCode: Record<string, number>
  /** Milliseconds from the start of the run to the tick's summary line. */
  atMs: number
  /** The summary's `progress` (where every host stood), when the kay run prints one. */
  progress?: Record<string, unknown>
}

/** What a run showed: every tick, the first tick at which every host was ok over a stream, and what came after. */
export class ConvergenceTracker {
  readonly ticks: TickView[] = []
  /** The first tick at which every one of `fleetSize` hosts was ok and streaming. */
  converged: TickView | undefined
  /** Host-ticks that failed after convergence (the goal: 0). */
  failedAfter = 0
  /** Ticks after convergence. */
  ticksAfter = 0
  /** Ticks that did not report every host (the goal: none). */
  lost = 0
  readonly #fleetSize: number
  readonly #started: number
  #current: TickView | undefined

  constructor(fleetSize: number, started = Date.now()) {
    this.#fleetSize = fleetSize
    this.#started = started
  }

  /** Feed one NDJSON object (a host line or a summary line); returns the tick it closed, if any. */
  add(o: Record<string, unknown>): TickView | undefined {
    const cur = this.#current ?? { tick: 0, hosts: 0, ok: 0, streaming: 0, byCode: {}, atMs: 0 }
    this.#current = cur
    if (o.summary === true) {
      cur.tick = Number(o.tick)
      cur.atMs = Date.now() - this.#started
      if (typeof o.progress === 'object' && o.progress !== null) cur.progress = o.progress as Record<string, unknown>
      this.#current = undefined
      this.ticks.push(cur)
      if (cur.hosts !== this.#fleetSize) this.lost++
      if (this.converged) {
        this.ticksAfter++
        this.failedAfter += this.#fleetSize - cur.ok
      } else if (cur.ok === this.#fleetSize && cur.streaming === this.#fleetSize) {
        this.converged = cur
      }
      return cur
    }
    cur.hosts++
    if (o.ok === true) {
      cur.ok++
      if (typeof o.collectMode === 'string' && o.collectMode.startsWith('stream-')) cur.streaming++
    } else {
      const code = String((o.error as { code?: string } | undefined)?.code ?? 'none')
      cur.byCode[code] = (cur.byCode[code] ?? 0) + 1
    }
    return undefined
  }
}

export interface FleetChild {
  child: ChildProcess
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  exited: Promise<number | string>
  /** The last lines of stderr (bounded). */
  stderr(): string
}

/**
 * Start `kay fleet --json …args` from `root` (default this checkout; the bench points it at another one to measure a
 * baseline) and hand each NDJSON object to `onObject` as it arrives. The caller ends it by PID.
 */
export function spawnKayFleet(
  args: string[],
  onObject: (o: Record<string, unknown>) => void,
  opts: { root?: string; env?: NodeJS.ProcessEnv } = {},
): FleetChild {
  const child = spawn(process.execPath, [...KAY_NODE_ARGS, 'fleet', '--json', ...args], {
    cwd: opts.root ?? REPO_ROOT,
    env: { ...process.env, NO_COLOR: '1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let partial = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const lines = (partial + d).split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) if (line.trim() !== '') onObject(JSON.parse(line) as Record<string, unknown>)
  })
  let err = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err = (err + d).slice(-8192)
  })
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'))
  })
  return { child, exited, stderr: () => err }
}
