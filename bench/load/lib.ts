/**
 * Shared helpers for the load benches: summaries (min/median/max), bounded waits, CPU and fd probes, and a
 * JSON-lines result sink so run.ts can collect every bench's numbers.
 */
import { appendFileSync, readdirSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { randomStreamToken, streamCommand, streamRequest, wantsDf } from '@kay/core/internal'
import { type UntilOptions, until } from '@kay/core/testing'
import type { Supervisor } from '@kay/workers'
import { Client, type ClientChannel } from 'ssh2'

export { sleep }

/** min / median / max of a sample (NaN for an empty one). */
export interface Summary {
  n: number
  min: number
  median: number
  max: number
}

export function summarize(xs: readonly number[]): Summary {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return { n: 0, min: Number.NaN, median: Number.NaN, max: Number.NaN }
  const mid = Math.floor(s.length / 2)
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
  return { n: s.length, min: s[0]!, median, max: s[s.length - 1]! }
}

/** `min / median / max` with `digits` decimals. */
export function fmt(s: Summary, digits = 3): string {
  if (s.n === 0) return 'n/a'
  return `${s.min.toFixed(digits)} / ${s.median.toFixed(digits)} / ${s.max.toFixed(digits)}`
}

/** Process CPU (user + system, all threads of this process) in ms since an earlier reading. */
export function cpuMsSince(prev: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(prev)
  return (d.user + d.system) / 1000
}

/** How many hosts collect over a stream (any loop flavour), from `stats().byMode`. */
export function streamHosts(byMode: Readonly<Record<string, number>>): number {
  let n = 0
  for (const [mode, count] of Object.entries(byMode)) if (mode.startsWith('stream-')) n += count
  return n
}

/**
 * Warm-up before measuring: each stream is probed when its connection is ready, in the background, so collect
 * (at most 20 ticks, `pauseMs` apart) until all `n` hosts stream — in `mode` (e.g. `stream-sh`) when given, else
 * in any flavour.
 */
export async function warmUpStreams(
  sup: Pick<Supervisor, 'collect' | 'refreshStats'>,
  n: number,
  opts: { timeoutMs: number; pauseMs?: number; mode?: string },
): Promise<void> {
  const { timeoutMs, pauseMs = 200, mode } = opts
  for (let i = 0; i < 20; i++) {
    await sup.collect({ timeoutMs })
    const { byMode } = await sup.refreshStats()
    if ((mode === undefined ? streamHosts(byMode) : (byMode[mode] ?? 0)) === n) return
    await sleep(pauseMs)
  }
}

/** Open file descriptors of this process (entries of /proc/self/fd). */
export function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return -1
  }
}

/**
 * The tests' shared `until`, for a benchmark that records a timeout as its result rather than failing: resolves
 * true once `check` holds, false past the deadline.
 */
export function reached(what: string, check: () => unknown, opts: UntilOptions): Promise<boolean> {
  return until(what, async () => (await check()) || undefined, opts).then(
    () => true,
    () => false,
  )
}

/** RSS after a best-effort GC (run with --expose-gc for a steadier baseline). */
export async function settledRss(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc
  for (let i = 0; i < 2; i++) {
    gc?.()
    await sleep(50)
  }
  return process.memoryUsage().rss
}

/** What {@link measureTicks} measured. */
export interface TickSeries {
  wallMs: Summary
  clientCpuPerHostTickMs: Summary
  simCpuPerHostTickMs: Summary
  failedHostTicks: number
  /** Main thread's event-loop delay p99 over the ticks, ms. */
  eventLoopP99Ms: number
}

/**
 * Runs `tick` (which returns how many of the `n` hosts failed) `ticks` times, `intervalMs` apart start to start, and
 * measures each: wall time, this process's CPU and the simulator's (`simCpuMs`, a cumulative reading) per host,
 * and the event-loop delay across all of them. `onTick` sees each tick's figures (per host, ms) as they come.
 */
export async function measureTicks(
  n: number,
  opts: {
    ticks: number
    intervalMs: number
    tick: () => Promise<number>
    simCpuMs: () => Promise<number>
    onTick?: (i: number, wallMs: number, cpuPerHost: number, simPerHost: number) => void
  },
): Promise<TickSeries> {
  const eld = monitorEventLoopDelay({ resolution: 10 })
  eld.enable()
  const walls: number[] = []
  const cpus: number[] = []
  const sims: number[] = []
  let failed = 0
  for (let i = 0; i < opts.ticks; i++) {
    const c0 = process.cpuUsage()
    const s0 = await opts.simCpuMs()
    const w0 = performance.now()
    failed += await opts.tick()
    const wall = performance.now() - w0
    const cpu = cpuMsSince(c0) / n
    const sim = ((await opts.simCpuMs()) - s0) / n
    walls.push(wall)
    cpus.push(cpu)
    sims.push(sim)
    opts.onTick?.(i, wall, cpu, sim)
    await sleep(Math.max(0, opts.intervalMs - wall))
  }
  eld.disable()
  return {
    wallMs: summarize(walls),
    clientCpuPerHostTickMs: summarize(cpus),
    simCpuPerHostTickMs: summarize(sims),
    failedHostTicks: failed,
    eventLoopP99Ms: eld.percentile(99) / 1e6,
  }
}

/** Append one result record (JSON line) to $KAY_BENCH_OUT when set, and print it. */
export function record(kind: string, data: object): void {
  const line = JSON.stringify({ kind, at: new Date().toISOString(), ...data })
  console.log(line)
  const out = process.env.KAY_BENCH_OUT
  if (out) appendFileSync(out, `${line}\n`)
}

/** Parse `--name value` / `--name=value` flags from argv. */
export function flags(argv: readonly string[]): Map<string, string> {
  const m = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (!a.startsWith('--')) continue
    const eq = a.indexOf('=')
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1))
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) m.set(a.slice(2), argv[++i]!)
    else m.set(a.slice(2), 'true')
  }
  return m
}

/** A comma-separated list of integers from a flag, or the default. */
export function intList(v: string | undefined, def: number[]): number[] {
  if (v === undefined) return def
  const xs = v.split(',').map((s) => Number(s.trim()))
  if (xs.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`expected a list of positive integers, got ${v}`)
  return xs
}

/** Run `fn` with a hard deadline: rejects after `ms` (the work itself is not cancelled). */
export async function withDeadline<T>(what: string, ms: number, fn: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Writes `dir`/ssh_config (one `Host hN` per server, with its address, port, user and the client key) and `dir`/hosts
 * (their names, one per line) for a CLI run over a bench fleet; returns the names.
 */
export async function writeFleetConfig(
  dir: string,
  servers: ReadonlyArray<{ host: string; port: number; user: string }>,
  keyPath: string,
): Promise<string[]> {
  const names = servers.map((_, i) => `h${i + 1}`)
  const hosts = servers.map(
    (s, i) => `Host ${names[i]}\n  HostName ${s.host}\n  Port ${s.port}\n  User ${s.user}\n  IdentityFile ${keyPath}\n`,
  )
  await writeFile(join(dir, 'ssh_config'), hosts.join(''))
  await writeFile(join(dir, 'hosts'), `${names.join('\n')}\n`)
  return names
}

const onInterruptCleanups = new Set<() => Promise<unknown>>()

/**
 * Registers what must be undone if the bench is interrupted (SIGINT, SIGTERM) before its own `finally` runs: an sshd
 * fleet to stop, a cgroup to remove, a child to end. Returns the function that unregisters it.
 */
export function onInterrupt(cleanup: () => Promise<unknown>): () => void {
  onInterruptCleanups.add(cleanup)
  return () => onInterruptCleanups.delete(cleanup)
}

/** Run `main` when this module is the entry point (not when imported by bench/run.ts), exiting with its code. */
export function runMain(moduleUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (moduleUrl !== `file://${process.argv[1]}`) return
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      console.error(`${sig}: cleaning up`)
      // Newest first: a child in a cgroup goes before the cgroup, a phase before the fleet it ran on.
      const all = [...onInterruptCleanups].reverse()
      void all
        .reduce((p, f) => p.then(() => f().catch(() => undefined)), Promise.resolve<unknown>(undefined))
        .finally(() => process.exit(130))
    })
  }
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err)
      process.exit(1)
    },
  )
}

/**
 * One host of the transport floor (`ssh2-floor` in real-sshd.ts; its fake-channel twin in micro/tick-path.bench.ts):
 * a channel running kay's stream loop whose output is only searched for the end marker of the request in flight.
 */
export interface FloorChannel {
  token: string
  channel: { write(line: string): unknown; on(event: 'data', listener: (chunk: Buffer) => void): unknown }
  /** The end marker awaited, and what to call when it arrives. */
  want?: { marker: string; resolve: (ok: boolean) => void } | undefined
  /** The last bytes seen, so a marker split across two chunks is still found. */
  tail: string
}

/** Watches a floor channel's output for the marker its tick awaits (parsing nothing). */
export function watchFloorChannel(c: FloorChannel): void {
  c.channel.on('data', (chunk: Buffer) => {
    const s = c.tail + chunk.toString('latin1')
    if (c.want && s.includes(c.want.marker)) {
      const w = c.want
      c.want = undefined
      w.resolve(true)
    }
    c.tail = s.slice(-80)
  })
}

/**
 * One floor tick: kay's request line for `seq` written on every channel (df on the first and every 12th, as kay asks),
 * then each frame's end marker awaited, 30 s at most. Returns how many channels answered.
 */
export async function floorTick(conns: readonly FloorChannel[], seq: number): Promise<number> {
  const line = streamRequest(seq, wantsDf(seq))
  const answered = await Promise.all(
    conns.map(
      (c) =>
        new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 30_000)
          c.want = {
            marker: `@@kay-end ${c.token} ${seq}\n`,
            resolve: (ok) => {
              clearTimeout(timer)
              resolve(ok)
            },
          }
          c.channel.write(line)
        }),
    ),
  )
  return answered.filter(Boolean).length
}

/** Numbers per host in a shaped floor's reply (floor-worker.ts), as in kay's packed rows. */
export const FLOOR_ROW_FIELDS = 29

export interface FloorConn extends FloorChannel {
  client: Client
  channel: ClientChannel
}

/** Dials one host with a bare ssh2 Client and opens kay's perl loop on it (the same command kay sends). */
export function openFloorConn(host: string, port: number, user: string, key: Buffer): Promise<FloorConn> {
  return new Promise((resolve, reject) => {
    const client = new Client()
    const token = randomStreamToken()
    client.on('error', reject)
    client.on('ready', () => {
      client.exec(streamCommand('perl', token), (err, channel) => {
        if (err) return reject(err)
        const c: FloorConn = { client, channel, token, tail: '' }
        channel.stderr.resume()
        watchFloorChannel(c)
        channel.on('close', () => c.want?.resolve(false))
        resolve(c)
      })
    })
    client.connect({ host, port, username: user, privateKey: key, hostVerifier: () => true })
  })
}

/**
 * Opens a floor connection to each server, `fanout` dials at a time (as kay's dial cap does); if one fails, closes
 * those already open and rejects.
 */
export async function openFloorConns(
  servers: ReadonlyArray<{ host: string; port: number; user: string }>,
  key: Buffer,
  fanout: number,
): Promise<FloorConn[]> {
  const conns: FloorConn[] = []
  try {
    for (let i = 0; i < servers.length; i += fanout) {
      const batch = servers.slice(i, i + fanout)
      conns.push(...(await Promise.all(batch.map((s) => openFloorConn(s.host, s.port, s.user, key)))))
    }
    return conns
  } catch (err) {
    for (const c of conns) c.client.end()
    throw err
  }
}
