/**
 * Against real OpenSSH sshd instances on loopback (127.77.x.y, one per host, one cgroup for the fleet): kay pooled
 * (stream and exec modes) against OpenSSH ControlMaster (`ssh -S sock -o ControlMaster=no` per host per tick, masters
 * started beforehand), plain `ssh` per host per tick via `xargs -P16`, and pdsh (-f 16) when installed. Method
 * `ssh2-floor` is the transport alone: bare ssh2 clients in one thread on kay's perl loop, parsing nothing.
 *
 *   bash .ci/setup-sshd.sh   # idempotent
 *   node --conditions=kay-source --import tsx bench/load/real-sshd.ts --sizes 50 --ticks 5
 *
 * `--threads N` runs kay with N shard threads (default the Supervisor's: one per 1,000 hosts, at most one per core).
 * `--warmup K` runs K ticks before measuring, with every pooled method alike (default 3; kay's stream warm-up, which
 * waits until every host streams, comes first). At 100 hosts kay's tick path needs ~100 ticks before V8 has it
 * optimized (~0.18 → ~0.06 ms per host-tick); a collector runs for days, so steady state is what counts.
 * `--kex curve25519-sha256` forces the ssh clients' key exchange (kay/ssh2 uses curve25519; OpenSSH 9.x defaults to
 * sntrup761x25519, which costs the client ~70 ms CPU per handshake here).
 *
 * Client CPU: kay = process.cpuUsage (main + shard threads); ssh/pdsh = a cgroup v2 group the clients run in
 * (masters included, since they carry the mux sessions). Server CPU = the fleet's cgroup. Every tick must return
 * output for every host (counted by the `@@kay df` section header each host prints).
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { StreamFlavour } from '@kay/core'
import { COLLECT_COMMAND } from '@kay/core/internal'
import { Cgroup, makeClientKey, SSHD_LOG, type SshdFleet, sshdAvailable, startSshdFleet } from '@kay/core/testing'
import { Supervisor } from '@kay/workers'
import {
  cpuMsSince,
  flags,
  floorTick,
  fmt,
  intList,
  openFloorConns,
  reached,
  record,
  runMain,
  type Summary,
  sleep,
  summarize,
  warmUpStreams,
} from './lib.js'

const FANOUT = 16
const SETTLE_MS = 100
const CHILD_TIMEOUT_MS = 120_000

interface Ctx {
  fleet: SshdFleet
  hosts: string[]
  port: number
  keyPath: string
  privateKey: string
  dir: string
  clients: Cgroup
  /** `--kex`: force the ssh clients' KexAlgorithms (OpenSSH 9.x defaults to sntrup761x25519, ~70 ms client CPU). */
  kex?: string
  /** `--threads`: kay's shard threads (default: the Supervisor's, one per 1,000 hosts up to one per core). */
  threads?: number
  /** `--warmup`: ticks run and discarded before measuring, by every pooled method alike (default 3). */
  warmup: number
}

interface RealRun {
  hosts: number
  method: string
  ticks: number
  wallMs: Summary
  clientCpuPerHostTickMs: Summary
  serverCpuPerHostTickMs: Summary
  failedHostTicks: number
  /** New SSH sessions per tick, fleet-wide, from the sshd logs (`Starting session`): 0 in stream mode. */
  sessionsPerTick: number
}

function sshOpts(ctx: Ctx): string[] {
  return [
    '-F',
    '/dev/null',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'LogLevel=ERROR',
    '-i',
    ctx.keyPath,
    '-p',
    String(ctx.port),
    ...(ctx.kex ? ['-o', `KexAlgorithms=${ctx.kex}`] : []),
  ]
}

/** Run argv inside the client cgroup (the shell moves itself in, then execs), stdin = `input`; resolves stdout. */
function inGroup(ctx: Ctx, argv: string[], input: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', `echo $$ > ${ctx.clients.procsPath} && exec "$@"`, 'sh', ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env,
    })
    let out = ''
    let err = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS)
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 4096) err += d
    })
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (code !== 0 && out === '') reject(new Error(`${argv[0]} exited ${code}: ${err.slice(0, 500)}`))
      else resolve(out)
    })
    child.stdin.end(input)
  })
}

/** `Starting session` lines over every fleet instance's log. */
async function fleetSessions(ctx: Ctx): Promise<number> {
  let total = 0
  for (const s of ctx.fleet.servers) total += await s.count(SSHD_LOG.startingSession)
  return total
}

function countAnswers(out: string): number {
  return out.split('@@kay df').length - 1
}

/** `--warmup`: ticks run and discarded, paced as measured ticks are. */
async function warmUp(ctx: Ctx, tick: () => Promise<number>): Promise<void> {
  for (let i = 0; i < ctx.warmup; i++) {
    await tick()
    await sleep(SETTLE_MS)
  }
}

async function measure(
  ctx: Ctx,
  method: string,
  ticks: number,
  clientCpu: 'self' | 'group',
  tick: () => Promise<number>,
): Promise<RealRun> {
  const n = ctx.hosts.length
  const walls: number[] = []
  const cpus: number[] = []
  const servers: number[] = []
  const sessions0 = await fleetSessions(ctx)
  let failed = 0
  for (let i = 0; i < ticks; i++) {
    const c0 = process.cpuUsage()
    const g0 = await ctx.clients.cpuUsageUsec()
    const s0 = (await ctx.fleet.cpuUsageUsec()) ?? Number.NaN
    const w0 = performance.now()
    const answered = await tick()
    const wall = performance.now() - w0
    await sleep(SETTLE_MS)
    const client = clientCpu === 'self' ? cpuMsSince(c0) : ((await ctx.clients.cpuUsageUsec()) - g0) / 1000
    const server = (((await ctx.fleet.cpuUsageUsec()) ?? Number.NaN) - s0) / 1000
    failed += n - answered
    walls.push(wall)
    cpus.push(client / n)
    servers.push(server / n)
  }
  const sessionsPerTick = ((await fleetSessions(ctx)) - sessions0) / ticks
  const r: RealRun = {
    hosts: n,
    sessionsPerTick,
    method: ctx.kex ? `${method} kex=${ctx.kex}` : method,
    ticks,
    wallMs: summarize(walls),
    clientCpuPerHostTickMs: summarize(cpus),
    serverCpuPerHostTickMs: summarize(servers),
    failedHostTicks: failed,
  }
  console.log(
    `${String(n).padStart(5)} ${method.padEnd(14)} wall ms ${fmt(r.wallMs, 1)} | client ms/host-tick ` +
      `${fmt(r.clientCpuPerHostTickMs, 3)} | server ms/host-tick ${fmt(r.serverCpuPerHostTickMs, 3)} | failed ${failed} | sessions/tick ${sessionsPerTick}`,
  )
  record('real-sshd', r)
  return r
}

async function kay(ctx: Ctx, mode: 'stream' | 'exec', ticks: number, flavour?: StreamFlavour): Promise<RealRun> {
  const n = ctx.hosts.length
  const sup = await Supervisor.start({
    hosts: ctx.hosts.map((h) => ({ id: h, hostname: h, port: ctx.port, user: 'kaytest' })),
    identity: { username: 'kaytest', keyFiles: [ctx.keyPath] },
    trust: { knownHostsPath: join(ctx.dir, 'kay_known_hosts'), policy: 'accept-new', extraKnownHosts: [] },
    collectMode: mode,
    ...(flavour ? { collectFlavours: [flavour] } : {}),
    ...(ctx.threads ? { threads: ctx.threads } : {}),
    keepalive: { intervalMs: 60_000 },
  })
  try {
    if (
      !(await reached('every host ready', async () => ((await sup.refreshStats()).byState.ready ?? 0) === n, {
        timeoutMs: 120_000,
        everyMs: 100,
      }))
    ) {
      throw new Error(`kay ${mode}: not all ready: ${JSON.stringify(sup.stats().byState)}`)
    }
    if (mode === 'stream') {
      await warmUpStreams(sup, n, { timeoutMs: 30_000, ...(flavour ? { mode: `stream-${flavour}` } : {}) })
    }
    const tick = async () => (await sup.collect({ timeoutMs: 30_000 })).hosts.filter((h) => h.metrics).length
    await warmUp(ctx, tick)
    const hs0 = (await sup.refreshStats()).handshakes
    const r = await measure(ctx, flavour ? `kay-stream-${flavour}` : `kay-${mode}`, ticks, 'self', tick)
    const hs = (await sup.refreshStats()).handshakes - hs0
    if (hs !== 0) console.log(`  kay-${mode}: ${hs} handshakes during measured ticks (expected 0)`)
    return r
  } finally {
    await sup.stop({ timeoutMs: 5000 })
  }
}

/**
 * The transport floor: what ssh2 and Node cost per host-tick before any of kay's own work. One thread, a bare ssh2
 * Client per host, one channel per host running kay's perl loop (so the hosts do exactly what they do for
 * kay-stream-perl); each tick writes the same request line kay writes and waits for the frame's end marker, parsing
 * nothing. kay-stream-perl's client CPU minus this is kay's own share (frame decoding, parsing, actors, shards).
 */
async function ssh2Floor(ctx: Ctx, ticks: number): Promise<RealRun> {
  const servers = ctx.hosts.map((host) => ({ host, port: ctx.port, user: 'kaytest' }))
  const conns = await openFloorConns(servers, await readFile(ctx.keyPath), FANOUT)
  try {
    let seq = 0
    const tick = () => floorTick(conns, ++seq)
    await warmUp(ctx, tick)
    return await measure(ctx, 'ssh2-floor', ticks, 'self', tick)
  } finally {
    for (const c of conns) c.client.end()
  }
}

async function plainSsh(ctx: Ctx, ticks: number): Promise<RealRun> {
  const argv = ['xargs', `-P${FANOUT}`, '-I{}', 'ssh', ...sshOpts(ctx), 'kaytest@{}', COLLECT_COMMAND]
  return measure(ctx, 'ssh-xargs-P16', ticks, 'group', async () =>
    countAnswers(await inGroup(ctx, argv, ctx.hosts.join('\n'))),
  )
}

async function controlMaster(ctx: Ctx, ticks: number): Promise<RealRun> {
  const sock = (h: string) => join(ctx.dir, `cm-${h}`)
  const base = ['xargs', `-P${FANOUT}`, '-I{}', 'ssh', ...sshOpts(ctx), '-S', join(ctx.dir, 'cm-{}')]
  const input = ctx.hosts.join('\n')
  await inGroup(ctx, [...base, '-M', '-N', '-f', 'kaytest@{}'], input)
  const up = await reached('every sshd socket listening', () => ctx.hosts.every((h) => existsSync(sock(h))), {
    timeoutMs: 30_000,
    everyMs: 100,
  })
  try {
    if (!up) throw new Error('ControlMaster: not every master socket appeared')
    return await measure(ctx, 'ssh-controlmaster', ticks, 'group', async () =>
      countAnswers(await inGroup(ctx, [...base, '-o', 'ControlMaster=no', 'kaytest@{}', COLLECT_COMMAND], input)),
    )
  } finally {
    // Masters exit on `-O exit`; anything left in the client group is ours and is killed with the group later.
    await inGroup(ctx, [...base, '-O', 'exit', 'kaytest@{}'], input).catch(() => '')
    await reached('every client process gone', async () => (await ctx.clients.pids()).length === 0, {
      timeoutMs: 5000,
      everyMs: 50,
    })
  }
}

async function pdsh(ctx: Ctx, ticks: number): Promise<RealRun | undefined> {
  if (!existsSync('/usr/bin/pdsh')) {
    console.log('pdsh: not installed, skipped')
    return undefined
  }
  const env = { ...process.env, PDSH_SSH_ARGS_APPEND: sshOpts(ctx).join(' ') }
  const argv = ['pdsh', '-R', 'ssh', '-f', String(FANOUT), '-l', 'kaytest', '-w', ctx.hosts.join(','), COLLECT_COMMAND]
  return measure(ctx, 'pdsh-f16', ticks, 'group', async () => countAnswers(await inGroup(ctx, argv, '', env)))
}

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const sizes = intList(f.get('sizes'), [50])
  const ticks = Number(f.get('ticks') ?? 5)
  const methods = (f.get('methods') ?? 'kay-stream,ssh2-floor,kay-exec,controlmaster,ssh,pdsh').split(',')
  if (COLLECT_COMMAND.includes('{}')) throw new Error('COLLECT_COMMAND contains {}: xargs -I would rewrite it')
  if (!sshdAvailable()) {
    console.error('sshd or user kaytest missing: run `bash .ci/setup-sshd.sh` first')
    return 2
  }
  let bad = 0
  for (const n of sizes) {
    const dir = await mkdtemp(join(tmpdir(), 'kcm-'))
    const clients = Cgroup.create('bench')
    if (!clients) throw new Error('no writable cgroup v2 hierarchy: cannot measure ssh client CPU')
    let fleet: SshdFleet | undefined
    try {
      const key = await makeClientKey(dir)
      const t0 = performance.now()
      fleet = await startSshdFleet({ count: n, authorizedKeys: [key.publicKey] })
      console.log(`sshd fleet of ${n} started in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
      const ctx: Ctx = {
        fleet,
        hosts: fleet.servers.map((s) => s.host),
        port: fleet.servers[0]!.port,
        keyPath: key.privateKeyPath,
        privateKey: key.privateKey,
        dir,
        clients,
        ...(f.has('kex') ? { kex: f.get('kex')! } : {}),
        ...(f.has('threads') ? { threads: Number(f.get('threads')) } : {}),
        warmup: Number(f.get('warmup') ?? 3),
      }
      for (const m of methods) {
        try {
          let r: RealRun | undefined
          if (m === 'kay-stream') r = await kay(ctx, 'stream', ticks)
          else if (m === 'kay-stream-bash') r = await kay(ctx, 'stream', ticks, 'bash')
          else if (m === 'kay-stream-perl') r = await kay(ctx, 'stream', ticks, 'perl')
          else if (m === 'kay-stream-python') r = await kay(ctx, 'stream', ticks, 'python')
          else if (m === 'kay-stream-awk') r = await kay(ctx, 'stream', ticks, 'awk')
          else if (m === 'kay-stream-sh') r = await kay(ctx, 'stream', ticks, 'sh')
          else if (m === 'kay-exec') r = await kay(ctx, 'exec', ticks)
          else if (m === 'ssh2-floor') r = await ssh2Floor(ctx, ticks)
          else if (m === 'controlmaster') r = await controlMaster(ctx, ticks)
          else if (m === 'ssh') r = await plainSsh(ctx, ticks)
          else if (m === 'pdsh') r = await pdsh(ctx, ticks)
          else throw new Error(`unknown method ${m}`)
          if (r && r.failedHostTicks > 0) bad++
        } catch (err) {
          record('real-sshd-error', { hosts: n, method: m, error: String(err) })
          bad++
        }
      }
    } finally {
      await fleet?.stop()
      await clients.destroy()
      await rm(dir, { recursive: true, force: true })
    }
  }
  return bad === 0 ? 0 : 1
}

runMain(import.meta.url, main)
