/**
 * Steady-state load: a simulated fleet in a separate process, kay's Supervisor collecting every tick on pooled
 * connections (stream and exec modes), against the "old way" (a fresh HostActor per host per tick through the same
 * dial cap: TCP + kex + auth + one exec + close).
 *
 *   node --conditions=kay-source --expose-gc --import tsx bench/load/steady.ts --sizes 100,1000 --ticks 10
 *
 * Flags: --sizes (default 100,1000), --ticks (pooled, default 10), --fresh-ticks (default 3), --interval-ms
 * (pacing, default 1000), --repeats (pooled runs per mode, default 1), --modes (default stream,exec),
 * --no-fresh, --dial-cap (default 16).
 *
 * Per tick: wall, client CPU (process.cpuUsage: the main thread and the shard worker threads), sim CPU (the sim
 * child's utime+stime), handshakes seen by the sim (must be 0 pooled), event-loop delay p99 of the main thread.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { HostActor, type HostTarget, type Identity, KnownHostsStore, LocalDialGate } from '@kay/core'
import { COLLECT_COMMAND, parseSections } from '@kay/core/internal'
import { generateClientKey, type RemoteSimFleet, spawnSimFleet } from '@kay/core/sim'
import { Supervisor } from '@kay/workers'
import {
  flags,
  fmt,
  intList,
  measureTicks,
  reached,
  record,
  runMain,
  type Summary,
  settledRss,
  summarize,
  warmUpStreams,
  withDeadline,
} from './lib.js'

const USER = 'bench'
const TICK_TIMEOUT_MS = 30_000

/** CPU of another process (utime + stime from /proc/<pid>/stat), ms. */
export async function procCpuMs(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8')
  // Fields after the parenthesised comm; utime and stime are fields 14 and 15 (1-based).
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(rest[11]) + Number(rest[12])
  return (ticks * 1000) / 100 // USER_HZ is 100 on Linux
}

export interface SteadyRun {
  hosts: number
  mode: 'stream' | 'exec' | 'fresh'
  ticks: number
  wallMs: Summary
  clientCpuPerHostTickMs: Summary
  simCpuPerHostTickMs: Summary
  handshakesPerTick: number
  failedHostTicks: number
  eventLoopP99Ms: number
  rssPerHostKb?: number
  readyMs?: number
  modes?: Record<string, number>
}

export interface FleetCtx {
  fleet: RemoteSimFleet
  targets: HostTarget[]
  privateKey: string
  identity: Identity
  knownHostsPath: string
  dir: string
}

export async function openFleet(hosts: number): Promise<FleetCtx> {
  const key = generateClientKey('kay-bench')
  const fleet = await spawnSimFleet(
    { hosts, authorizedKeys: [key.publicKey], seed: 7 },
    { startTimeoutMs: Math.max(60_000, hosts * 20) },
  )
  const dir = await mkdtemp(join(tmpdir(), 'kay-bench-'))
  const targets = fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: USER }))
  return {
    fleet,
    targets,
    privateKey: key.privateKey,
    identity: { username: USER, keys: [{ key: key.parsed, source: 'bench key' }] },
    knownHostsPath: join(dir, 'known_hosts'),
    dir,
  }
}

export async function closeFleet(ctx: FleetCtx): Promise<void> {
  await ctx.fleet.close()
  await rm(ctx.dir, { recursive: true, force: true })
}

/** One pooled run: start a supervisor, wait for every host, warm up, then measure `ticks` ticks. */
export async function pooledRun(
  ctx: FleetCtx,
  mode: 'stream' | 'exec',
  ticks: number,
  intervalMs: number,
  dialCap: number,
): Promise<SteadyRun> {
  const n = ctx.targets.length
  const rssBefore = await settledRss()
  const t0 = performance.now()
  const sup = await Supervisor.start({
    hosts: ctx.targets,
    dialCap,
    identity: { username: USER, keyFiles: [], keys: [ctx.privateKey] },
    trust: { knownHostsPath: ctx.knownHostsPath, policy: 'accept-new', extraKnownHosts: [] },
    collectMode: mode,
    keepalive: { intervalMs: 60_000 },
  })
  try {
    const allReady = await reached(
      'every host ready',
      async () => ((await sup.refreshStats()).byState.ready ?? 0) === n,
      { timeoutMs: Math.max(60_000, n * 30), everyMs: 50 },
    )
    const readyMs = performance.now() - t0
    if (!allReady) throw new Error(`${n} hosts: not all ready in time: ${JSON.stringify(sup.stats().byState)}`)
    if (mode === 'stream') await warmUpStreams(sup, n, { timeoutMs: TICK_TIMEOUT_MS })
    const modes = { ...(await sup.refreshStats()).byMode }
    const rssAfter = await settledRss()
    await ctx.fleet.resetStats()
    const hs0 = (await ctx.fleet.stats()).totals.handshakesStarted
    const series = await measureTicks(n, {
      ticks,
      intervalMs,
      simCpuMs: () => procCpuMs(ctx.fleet.pid),
      tick: async () => {
        const r = await sup.collect({ timeoutMs: TICK_TIMEOUT_MS })
        return r.hosts.filter((h) => !h.metrics).length + (n - r.hosts.length)
      },
    })
    const hs = (await ctx.fleet.stats()).totals.handshakesStarted - hs0
    return {
      hosts: n,
      mode,
      ticks,
      ...series,
      handshakesPerTick: hs / ticks,
      rssPerHostKb: (rssAfter - rssBefore) / 1024 / n,
      readyMs,
      modes,
    }
  } finally {
    await sup.stop({ timeoutMs: 5000 })
  }
}

function waitReady(actor: HostActor, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(false), timeoutMs)
    const done = (ok: boolean) => {
      clearTimeout(timer)
      actor.off('state', onState)
      resolve(ok)
    }
    const onState = (s: { state: string }) => {
      if (s.state === 'ready') done(true)
      else if (s.state === 'backoff' || s.state === 'quarantined' || s.state === 'closed') done(false)
    }
    actor.on('state', onState)
    actor.start()
  })
}

/** One "old way" tick: a fresh actor per host (dial through the cap, wait ready, one exec, close). */
async function freshTick(ctx: FleetCtx, gate: LocalDialGate, verifier: KnownHostsStore): Promise<number> {
  let failed = 0
  await Promise.all(
    ctx.targets.map(async (target) => {
      const actor = new HostActor({
        target,
        identity: ctx.identity,
        verifier,
        dialGate: gate,
        keepaliveIntervalMs: 0,
        backoff: { baseMs: 60_000, capMs: 60_000 },
      })
      try {
        if (!(await waitReady(actor, TICK_TIMEOUT_MS))) {
          failed++
          return
        }
        const r = await actor.run(COLLECT_COMMAND, { timeoutMs: 10_000 })
        // Parse like the pooled path does, so both sides pay for it.
        parseSections(r.stdout)
      } catch {
        failed++
      } finally {
        await actor.close()
      }
    }),
  )
  return failed
}

/** The old way: `ticks` ticks of fresh connections, all in this thread, dial cap `dialCap`. */
export async function freshRun(ctx: FleetCtx, ticks: number, intervalMs: number, dialCap: number): Promise<SteadyRun> {
  const n = ctx.targets.length
  const gate = new LocalDialGate({ cap: dialCap })
  const verifier = new KnownHostsStore({
    path: ctx.knownHostsPath,
    userFiles: [],
    globalFiles: [],
    policy: 'accept-new',
  })
  await ctx.fleet.resetStats()
  const hs0 = (await ctx.fleet.stats()).totals.handshakesStarted
  const series = await measureTicks(n, {
    ticks,
    intervalMs,
    simCpuMs: () => procCpuMs(ctx.fleet.pid),
    tick: () => withDeadline('fresh tick', TICK_TIMEOUT_MS * 4, () => freshTick(ctx, gate, verifier)),
  })
  const hs = (await ctx.fleet.stats()).totals.handshakesStarted - hs0
  return { hosts: n, mode: 'fresh', ticks, ...series, handshakesPerTick: hs / ticks }
}

function show(r: SteadyRun): void {
  console.log(
    `${String(r.hosts).padStart(6)} ${r.mode.padEnd(6)} wall ms ${fmt(r.wallMs, 1)} | client ms/host-tick ` +
      `${fmt(r.clientCpuPerHostTickMs, 4)} | sim ms/host-tick ${fmt(r.simCpuPerHostTickMs, 4)} | hs/tick ` +
      `${r.handshakesPerTick} | failed ${r.failedHostTicks} | eld p99 ${r.eventLoopP99Ms.toFixed(1)} ms` +
      (r.rssPerHostKb === undefined ? '' : ` | rss/host ${r.rssPerHostKb.toFixed(1)} KiB`) +
      (r.readyMs === undefined ? '' : ` | ready ${(r.readyMs / 1000).toFixed(1)} s`),
  )
}

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const sizes = intList(f.get('sizes'), [100, 1000])
  const ticks = Number(f.get('ticks') ?? 10)
  const freshTicks = Number(f.get('fresh-ticks') ?? 3)
  const intervalMs = Number(f.get('interval-ms') ?? 1000)
  const repeats = Number(f.get('repeats') ?? 1)
  const dialCap = Number(f.get('dial-cap') ?? 16)
  const modes = (f.get('modes') ?? 'stream,exec').split(',') as Array<'stream' | 'exec'>
  const fresh = !f.has('no-fresh')
  let bad = 0
  for (const n of sizes) {
    let ctx: FleetCtx
    try {
      ctx = await openFleet(n)
    } catch (err) {
      record('steady-error', { hosts: n, stage: 'sim start', error: String(err) })
      bad++
      continue
    }
    try {
      const pooled: Record<string, SteadyRun[]> = {}
      for (let rep = 0; rep < repeats; rep++) {
        for (const mode of modes) {
          try {
            const r = await pooledRun(ctx, mode, ticks, intervalMs, dialCap)
            show(r)
            record('steady', { ...r, repeat: rep })
            const list = pooled[mode] ?? []
            list.push(r)
            pooled[mode] = list
          } catch (err) {
            record('steady-error', { hosts: n, mode, stage: 'pooled', error: String(err) })
            bad++
          }
        }
      }
      if (fresh) {
        try {
          const r = await freshRun(ctx, freshTicks, intervalMs, dialCap)
          show(r)
          record('steady', r)
          for (const [mode, runs] of Object.entries(pooled)) {
            const cpu = summarize(runs.map((x) => x.clientCpuPerHostTickMs.median)).median
            const wall = summarize(runs.map((x) => x.wallMs.median)).median
            const sim = summarize(runs.map((x) => x.simCpuPerHostTickMs.median)).median
            const ratio = {
              hosts: n,
              pooledMode: mode,
              cpuFreshOverPooled: r.clientCpuPerHostTickMs.median / cpu,
              wallFreshOverPooled: r.wallMs.median / wall,
              simCpuFreshOverPooled: r.simCpuPerHostTickMs.median / sim,
            }
            console.log(JSON.stringify(ratio))
            record('steady-ratio', ratio)
          }
        } catch (err) {
          record('steady-error', { hosts: n, mode: 'fresh', error: String(err) })
          bad++
        }
      }
    } finally {
      await closeFleet(ctx)
    }
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
