/**
 * Cost per host-tick at the operator's interval: the built CLI (`kay fleet --json --interval Ns`) over real OpenSSH
 * sshd hosts (one per host on 127.77.x.y), from a cold start and after it, against the transport floor at the same
 * interval in the same run.
 *
 *   bash .ci/setup-sshd.sh && pnpm build   # sshd and kaytest; the CLI it runs is the built one (bin/kay.js)
 *   flock /tmp/kay-heavy.lock node --conditions=kay-source --import tsx bench/load/tick-cost.ts \
 *     --hosts 100 --intervals 5 --ticks 6
 *
 * Per interval (`--intervals 1,5,15`, seconds), two phases over the same fleet:
 * - kay: the CLI runs in a cgroup of its own (every thread, from exec on); the hosts' sshd and loops in the fleet's.
 *   `cold` is the CPU from exec to the first tick at which every host answered over its stream (handshakes, probes,
 *   V8's first compiles), per host. Then `first` is the `--ticks` ticks after that tick and `after` the `--ticks`
 *   after those — or, with `--settle-s S`, the `--ticks` after S more seconds of ticks (V8 keeps optimising for
 *   tens of ticks at 5 s) —, per host-tick, each from the end of one tick to the end of the tick `--ticks` later, as read
 *   when the CLI prints the tick's summary line.
 * - floor: the cheapest design there is, in this process: one bare ssh2 Client per host, one channel per host
 *   running kay's perl loop, one request line per tick on it, the frame's end marker awaited, nothing parsed. Client
 *   CPU is this process's (it does nothing else meanwhile); host CPU the fleet's cgroup. Warm-up: one tick, plus
 *   `--settle-s` seconds of ticks.
 * - floor-shaped (`--methods kay,floor,floor-shaped`): the same floor in kay's shape — its clients in a worker thread
 *   that answers each tick with a row of numbers per host, this thread printing a JSON line per host of them
 *   (floor-worker.ts): what kay's two isolates and its output cost without kay's collector.
 * Every tick must answer for every host (kay: `ok` in the summary line; floor: every end marker).
 *
 * With `--sim`, the hosts are simulated (kay's ssh2 simulator, 5,000 hosts per process, answering the perl loop
 * itself) instead of real sshd, so 10,000 hosts fit on this machine; host CPU is then the simulator processes'.
 * Both the CLI and this process hold one descriptor per host: raise the limit first (`ulimit -n 65536`).
 */
import { execFileSync, spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { Cgroup, makeClientKey, sshdAvailable, startSshdFleet } from '@kay/core/testing'
import { closeFleets, openFleets, simCpuMs } from '../stress/lib.js'
import type { FloorWorkerData, FloorWorkerReply, FloorWorkerRequest } from './floor-worker.js'
import {
  FLOOR_ROW_FIELDS,
  flags,
  floorTick,
  intList,
  onInterrupt,
  openFloorConns,
  record,
  runMain,
  sleep,
  writeFleetConfig,
} from './lib.js'

const ROOT = resolve(fileURLToPath(new URL('../../', import.meta.url)))
const FANOUT = 16

interface Reading {
  tick: number
  ok: number
  streaming: number
  atMs: number
  kayUsec: number
  hostUsec: number
  threads?: Threads
}

/** CPU (ns) and times scheduled, per thread name, summed over a process's threads (/proc/<pid>/task/<tid>/schedstat). */
type Threads = Map<string, { ns: number; runs: number }>

async function threadsOf(pid: number): Promise<Threads> {
  const m: Threads = new Map()
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    try {
      // Node names every thread `node`: the main thread is the pid, the rest by their order of creation (V8's
      // platform threads, then libuv's pool and the shard workers, in tid order).
      const comm = (await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8')).trim()
      const name = Number(tid) === pid ? 'main' : `${comm}+${Number(tid) - pid}`
      const [ns, , runs] = (await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8')).split(' ').map(Number)
      const t = m.get(name) ?? { ns: 0, runs: 0 }
      t.ns += ns!
      t.runs += runs!
      m.set(name, t)
    } catch {
      // the thread ended
    }
  }
  return m
}

/** Per thread name over a window: CPU ms per host-tick and wake-ups per tick. */
function threadDelta(a: Threads, b: Threads, n: number, ticks: number): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, t] of b) {
    const p = a.get(name) ?? { ns: 0, runs: 0 }
    out[name] =
      `${((t.ns - p.ns) / 1e6 / (n * ticks)).toFixed(3)} ms, ${((t.runs - p.runs) / ticks).toFixed(0)} runs/tick`
  }
  return out
}

interface PerHostTick {
  client: number
  host: number
}

const perHostTick = (a: Reading, b: Reading, n: number): PerHostTick => ({
  client: (b.kayUsec - a.kayUsec) / 1000 / (n * (b.tick - a.tick)),
  host: (b.hostUsec - a.hostUsec) / 1000 / (n * (b.tick - a.tick)),
})

/** The hosts under test, real or simulated: where they listen, the client key, the CPU they use. */
interface BenchFleet {
  servers: ReadonlyArray<{ host: string; port: number; user: string }>
  keyPath: string
  /** CPU used by every host so far (µs): the sshd fleet's cgroup, or the simulator processes. */
  cpuUsageUsec(): Promise<number>
  stop(): Promise<void>
}

async function realFleet(dir: string, n: number): Promise<BenchFleet> {
  const key = await makeClientKey(dir)
  const fleet = await startSshdFleet({ count: n, authorizedKeys: [key.publicKey] })
  return {
    servers: fleet.servers,
    keyPath: key.privateKeyPath,
    cpuUsageUsec: async () => (await fleet.cpuUsageUsec()) ?? Number.NaN,
    stop: () => fleet.stop(),
  }
}

async function simFleet(dir: string, n: number): Promise<BenchFleet> {
  const ctx = await openFleets(n, { parts: Math.ceil(n / 5000) })
  const keyPath = join(dir, 'id_sim')
  await writeFile(keyPath, ctx.privateKey, { mode: 0o600 })
  return {
    servers: ctx.targets.map((t) => ({ host: t.hostname, port: t.port, user: t.user })),
    keyPath,
    cpuUsageUsec: async () => (await simCpuMs(ctx.fleets)) * 1000,
    stop: () => closeFleets(ctx),
  }
}

/** One CLI run from exec: the cold start, then two windows of `ticks` ticks. */
async function kayPhase(
  dir: string,
  fleet: BenchFleet,
  n: number,
  intervalS: number,
  ticks: number,
  settle: number,
  minStreamingPct: number,
  extra: string[],
) {
  const group = Cgroup.create('bench')
  if (!group) throw new Error('no writable cgroup v2 hierarchy')
  const hostCpu = () => fleet.cpuUsageUsec()
  const h0 = await hostCpu()
  const t0 = performance.now()
  const argv = [
    process.execPath,
    ...extra.filter((x) => !x.startsWith('cli=')),
    extra.find((x) => x.startsWith('cli='))?.slice(4) ?? 'packages/cli/bin/kay.js',
    'fleet',
    '--json',
    '--interval',
    `${intervalS}s`,
    '--hostfile',
    join(dir, 'hosts'),
    '--ssh-config',
    join(dir, 'ssh_config'),
    '--known-hosts',
    join(dir, 'known_hosts'),
  ]
  // One descriptor per host: as many as this process may have (the CLI warns below hosts + 64).
  const kay = spawn('sh', ['-c', `ulimit -n $(ulimit -Hn); echo $$ > ${group.procsPath} && exec "$@"`, 'sh', ...argv], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const stopKay = async () => {
    kay.removeAllListeners('exit')
    kay.kill('SIGTERM')
    await new Promise((r) => (kay.exitCode === null && kay.signalCode === null ? kay.once('exit', r) : r(null)))
    await group.destroy()
  }
  const offInterrupt = onInterrupt(stopKay)
  // Host-key pins are expected on a cold start; anything else on stderr is shown.
  createInterface({ input: kay.stderr! }).on('line', (l) => {
    if (!l.startsWith('kay: pinned host key')) console.error(l)
  })
  const tracing = extra.some((x) => x.startsWith('--trace'))
  /** Hosts that must be streaming (the rest ok over exec) for the cold start to count as done. */
  const minStreaming = Math.ceil((n * minStreamingPct) / 100)
  const readings: Reading[] = []
  let converged: Reading | undefined
  /** The CLI's resident set at the end of the last window (main thread, shard threads, V8 heaps). */
  let rssKiB = Number.NaN
  try {
    const deadlineMs = 300_000 + 3 * (ticks + settle) * intervalS * 1000
    await new Promise<void>((done, fail) => {
      const timer = setTimeout(() => {
        const r = readings.at(-1)
        const last = r ? `tick ${r.tick}: ${r.ok} ok, ${r.streaming} streaming of ${n}` : 'no tick'
        fail(new Error(`kay: not every host streaming and ok within ${deadlineMs / 1000} s (last ${last})`))
      }, deadlineMs)
      kay.once('exit', (code) => fail(new Error(`kay exited ${code}`)))
      let chain = Promise.resolve()
      createInterface({ input: kay.stdout! }).on('line', (line) => {
        if (!line.startsWith('{')) console.log(`  kay: ${line}`) // what --node-flags asked for (e.g. --trace-gc)
        if (!line.startsWith('{"summary":true')) return
        const s = JSON.parse(line) as { tick: number; ok: number; progress?: { streaming: number } }
        if (tracing) console.log(`  kay: --- tick ${s.tick}`) // so a trace can be cut by tick
        const atMs = performance.now() - t0
        // Read both groups in arrival order; the tick's work is done when its summary line is printed.
        chain = chain.then(async () => {
          const r: Reading = {
            tick: s.tick,
            ok: s.ok,
            streaming: s.progress?.streaming ?? 0,
            atMs,
            kayUsec: await group.cpuUsageUsec(),
            hostUsec: (await hostCpu()) - h0,
            threads: await threadsOf(kay.pid!),
          }
          readings.push(r)
          if (!converged && r.ok === n && r.streaming >= minStreaming) converged = r
          if (converged && r.tick - converged.tick >= 2 * ticks + settle) {
            rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(await readFile(`/proc/${kay.pid}/status`, 'utf8'))?.[1])
            clearTimeout(timer)
            done()
          }
        })
      })
    })
  } finally {
    offInterrupt()
    await stopKay()
  }
  const c = converged!
  const at = (k: number) => readings.find((r) => r.tick === c.tick + k)!
  const failed = readings.filter((r) => r.tick > c.tick && r.ok !== n).length
  return {
    convergedS: c.atMs / 1000,
    /** Hosts streaming at the start and end of the settled window (the rest ok over exec). */
    streaming: [at(ticks + settle).streaming, at(2 * ticks + settle).streaming],
    convergedTick: c.tick,
    coldClientMsPerHost: c.kayUsec / 1000 / n,
    coldHostMsPerHost: c.hostUsec / 1000 / n,
    first: perHostTick(c, at(ticks), n),
    after: perHostTick(at(ticks + settle), at(2 * ticks + settle), n),
    rssKiBPerHost: rssKiB / n,
    afterThreads: threadDelta(at(ticks + settle).threads!, at(2 * ticks + settle).threads!, n, ticks),
    ticksWithFailures: failed,
  }
}

/** One tick of a floor: how many hosts answered. */
type FloorTicker = (seq: number) => Promise<number>

/** The plain floor, in this thread: bare ssh2 clients, nothing parsed, nothing printed. */
async function plainFloor(fleet: BenchFleet): Promise<{ tick: FloorTicker; close(): void }> {
  const conns = await openFloorConns(fleet.servers, await readFile(fleet.keyPath), FANOUT)
  const close = () => {
    for (const c of conns) c.client.end()
  }
  return { tick: (seq) => floorTick(conns, seq), close }
}

/**
 * The floor in kay's shape: the same clients in a worker thread (floor-worker.ts) that answers each tick with one row
 * of numbers per host, transferred; this thread makes a JSON line per host of them and writes them out (to
 * /dev/null), as `kay fleet --json` does. Kay's two isolates and its output, without kay's collector.
 */
async function shapedFloor(fleet: BenchFleet): Promise<{ tick: FloorTicker; close(): void }> {
  // Plain objects: a server's fields may be getters, which a structured clone drops.
  const servers = fleet.servers.map(({ host, port, user }) => ({ host, port, user }))
  const data: FloorWorkerData = { servers, keyPath: fleet.keyPath, fanout: FANOUT }
  const worker = new Worker(new URL('./floor-boot.mjs', import.meta.url), {
    workerData: data,
    execArgv: ['--conditions=kay-source'],
  })
  const next = () =>
    new Promise<FloorWorkerReply>((resolve, reject) => {
      const onError = (err: Error) => reject(err)
      worker.once('error', onError)
      worker.once('message', (m: FloorWorkerReply) => {
        worker.off('error', onError)
        resolve(m)
      })
    })
  await next() // ready: every connection open
  const out = createWriteStream('/dev/null')
  const tick: FloorTicker = async (seq) => {
    const reply = next()
    worker.postMessage({ type: 'tick', seq } satisfies FloorWorkerRequest)
    const r = await reply
    if (r.type !== 'tick') return 0
    const v = r.values
    const lines: string[] = []
    for (let i = 0; i < r.hosts.length; i++) {
      const o = i * FLOOR_ROW_FIELDS
      const metrics: Record<string, number | Record<string, number>> = {}
      for (let j = 0; j < 15; j++) metrics[FLOOR_METRICS[j]!] = v[o + j]!
      const cpuStates: Record<string, number> = {}
      for (let j = 0; j < 8; j++) cpuStates[FLOOR_STATES[j]!] = v[o + 15 + j]!
      metrics.cpuStates = cpuStates
      lines.push(
        JSON.stringify({
          host: r.hosts[i],
          ok: true,
          state: 'ready',
          metrics,
          rttMs: v[o + 25],
          collectMode: 'stream-perl',
        }),
      )
    }
    out.write(`${lines.join('\n')}\n`)
    return r.ok
  }
  return {
    tick,
    close: () => {
      worker.postMessage({ type: 'stop' } satisfies FloorWorkerRequest)
      out.end()
    },
  }
}

/** The names of a row's first 15 numbers (the next 8 are the CPU states), as kay prints them (HostMetrics). */
const FLOOR_METRICS = [
  'at',
  'cpus',
  'memTotalBytes',
  'memUsedBytes',
  'memAvailableBytes',
  'swapTotalBytes',
  'swapUsedBytes',
  'load1',
  'load5',
  'load15',
  'uptimeSeconds',
  'cpuPct',
  'netRxBytesPerSec',
  'netTxBytesPerSec',
  'rootFsUsedPct',
]
const FLOOR_STATES = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal']

/** A floor at `intervalS`: 1 + `settle` warm-up ticks, then `ticks` measured ones. */
async function floorPhase(
  fleet: BenchFleet,
  shaped: boolean,
  n: number,
  intervalS: number,
  ticks: number,
  settle: number,
) {
  // Memory the floor adds to this process (every thread), per host: its resident set after the last tick against
  // before its connections opened (garbage not collected, as the CLI's is read). Only the first floor of a run
  // counts: a second one reuses what the first freed.
  const rss0 = process.memoryUsage.rss()
  const floor = await (shaped ? shapedFloor(fleet) : plainFloor(fleet))
  try {
    let seq = 0
    let failed = 0
    let a: Reading | undefined
    let b: Reading | undefined
    for (let k = -settle; k <= ticks; k++) {
      const started = performance.now()
      const ok = await floor.tick(++seq)
      if (ok !== n) failed++
      const r: Reading = {
        tick: k,
        ok,
        streaming: n,
        atMs: 0,
        kayUsec: process.cpuUsage().user + process.cpuUsage().system,
        hostUsec: await fleet.cpuUsageUsec(),
      }
      if (k === 0) a = r
      else b = r
      if (k < ticks) await sleep(Math.max(0, intervalS * 1000 - (performance.now() - started)))
    }
    const rssKiBPerHost = (process.memoryUsage.rss() - rss0) / 1024 / n
    return { ...perHostTick(a!, b!, n), ticksWithFailures: failed, rssKiBPerHost }
  } finally {
    floor.close()
  }
}

async function main(argv: string[]): Promise<number> {
  const f = flags(argv)
  if (!f.has('sim') && !sshdAvailable()) {
    console.error('needs sshd and the kaytest user: run .ci/setup-sshd.sh (or --sim for simulated hosts)')
    return 2
  }
  const n = Number(f.get('hosts') ?? 100)
  const intervals = intList(f.get('intervals'), [1, 5, 15])
  const ticks = Number(f.get('ticks') ?? 6)
  /** Seconds of ticks between the `first` window and the `next` one (and of the floor's warm-up). */
  const settleS = Number(f.get('settle-s') ?? 0)
  /** `--min-streaming-pct P`: the cold start is done when every host is ok and P % of them stream (default 100). */
  const minStreamingPct = Number(f.get('min-streaming-pct') ?? 100)
  const methods = (f.get('methods') ?? 'kay,floor').split(',')
  // Node flags for the CLI, e.g. `--node-flags=--trace-gc` (comma-separated); `--variants 'a;b,c'` runs the CLI once
  // per set (`;`-separated, `-` for none) on the same fleet, against one floor run. A `cli=<path>` item runs another
  // build of the CLI (e.g. the commit before a change, built elsewhere) in place of packages/cli/bin/kay.js.
  const variants = (f.get('variants') ?? f.get('node-flags') ?? '-')
    .split(';')
    .map((v) => (v === '-' || v === '' ? [] : v.split(',')))
  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
  const sim = f.has('sim')
  const dir = await mkdtemp(join(tmpdir(), 'kay-tick-cost-'))
  const fleet = await (sim ? simFleet(dir, n) : realFleet(dir, n))
  const offInterrupt = onInterrupt(async () => {
    await fleet.stop()
    await rm(dir, { recursive: true, force: true })
  })
  try {
    await writeFleetConfig(dir, fleet.servers, fleet.keyPath)
    for (const intervalS of intervals) {
      const settle = Math.ceil(settleS / intervalS)
      if (methods.includes('kay')) {
        for (const nodeFlags of variants) {
          await rm(join(dir, 'known_hosts'), { force: true })
          const k = await kayPhase(dir, fleet, n, intervalS, ticks, settle, minStreamingPct, nodeFlags)
          console.log(
            `kay ${nodeFlags.join(' ')}  ${n} ${sim ? 'simulated ' : ''}hosts @${intervalS}s: converged at ${k.convergedS.toFixed(1)} s (tick ${k.convergedTick}; streaming in the settled window: ${k.streaming.join('–')}), ` +
              `cold ${k.coldClientMsPerHost.toFixed(1)} ms client / ${k.coldHostMsPerHost.toFixed(1)} ms host per host; ` +
              `per host-tick: first ${ticks} ${k.first.client.toFixed(3)} / ${k.first.host.toFixed(3)}, ` +
              `next ${ticks} (after ${settle} more) ${k.after.client.toFixed(3)} / ${k.after.host.toFixed(3)} ms (client / host); ` +
              `RSS ${k.rssKiBPerHost.toFixed(0)} KiB per host` +
              (k.ticksWithFailures > 0 ? `, ${k.ticksWithFailures} ticks with failures` : ''),
          )
          for (const [name, v] of Object.entries(k.afterThreads)) console.log(`      thread ${name}: ${v}`)
          record('tick-cost', {
            method: 'kay-cli',
            nodeFlags,
            hosts: n,
            sim,
            intervalS,
            ticks,
            settle,
            commit,
            ...k,
          })
        }
      }
      for (const method of ['floor', 'floor-shaped'].filter((m) => methods.includes(m))) {
        const r = await floorPhase(fleet, method === 'floor-shaped', n, intervalS, ticks, settle)
        console.log(
          `${method} ${n} ${sim ? 'simulated ' : ''}hosts @${intervalS}s: per host-tick ${r.client.toFixed(3)} / ${r.host.toFixed(3)} ms (client / host); ` +
            `RSS added ${r.rssKiBPerHost.toFixed(0)} KiB per host` +
            (r.ticksWithFailures > 0 ? `, ${r.ticksWithFailures} ticks with failures` : ''),
        )
        record('tick-cost', {
          method: method === 'floor' ? 'ssh2-floor' : 'ssh2-floor-shaped',
          hosts: n,
          sim,
          intervalS,
          ticks,
          settle,
          ...r,
        })
      }
    }
    return 0
  } finally {
    offInterrupt()
    await fleet.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

runMain(import.meta.url, main)
