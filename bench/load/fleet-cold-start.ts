/**
 * Cold start through the CLI, as a new user runs it: `kay fleet --json --interval <I>` over N real OpenSSH hosts
 * (one sshd per host on 127.77.x.y, co-located with kay), from nothing to every host ok over its collection stream.
 * The goal (DESIGN.md invariant 10, issue #19): every host streams within `--goal-s` and then every host is ok on
 * every one of `--after` further ticks, no tick leaving a host out. Exits 0 when the goal is met, 1 when not.
 *
 *   flock /tmp/kay-heavy.lock node --conditions=kay-source --import tsx bench/load/fleet-cold-start.ts \
 *     --hosts 1000 --interval-ms 5000 --goal-s 90 --after 5
 *
 * Reported: seconds to all streaming (from kay's start), `Starting session` lines per host in the sshd logs up to
 * that tick (sessions opened during cold start; 1 means the stream alone), the peak 1-minute load average seen, and
 * failed host-ticks after convergence. `--kay-root DIR` runs the kay sources of another checkout (a baseline).
 *
 * Overload: `--login-cpu-ms N` makes every session cost its host ~N ms of CPU before the command runs (a shell loop,
 * calibrated here; as login start-up files do), `--login-sleep-ms N` makes it start N ms late (a slow login shell).
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeClientKey, SSHD_LOG, type SshdFleet, sshdAvailable, startSshdFleet } from '@kay/core/testing'
import { ConvergenceTracker, spawnKayFleet, type TickView } from '../../packages/cli/test/e2e/support/fleet-run.js'
import { flags, record, runMain } from './lib.js'

async function sessions(fleet: SshdFleet): Promise<number> {
  let n = 0
  for (const s of fleet.servers) n += await s.count(SSHD_LOG.startingSession)
  return n
}

/** Turns of the slow-login shell loop per ms of CPU on this machine (timed once). */
function loopsPerMs(): number {
  const n = 400_000
  const t0 = process.hrtime.bigint()
  execFileSync('/bin/sh', ['-c', `i=0; while [ "$i" -lt ${n} ]; do i=$((i + 1)); done`])
  return n / (Number(process.hrtime.bigint() - t0) / 1e6)
}

async function load1(): Promise<number> {
  return Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0])
}

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const hosts = Number(f.get('hosts') ?? 1000)
  const intervalMs = Number(f.get('interval-ms') ?? 5000)
  const goalS = Number(f.get('goal-s') ?? 90)
  const after = Number(f.get('after') ?? 5)
  const maxS = Number(f.get('max-s') ?? goalS + ((after + 2) * intervalMs) / 1000 + 30)
  const root = f.get('kay-root')
  const label = f.get('label') ?? (root ? `kay at ${root}` : 'kay')
  const loginCpuMs = Number(f.get('login-cpu-ms') ?? 0)
  const loginSleepMs = Number(f.get('login-sleep-ms') ?? 0)
  if (!sshdAvailable()) {
    console.error('sshd or user kaytest missing: run `bash .ci/setup-sshd.sh` first')
    return 2
  }
  const dir = await mkdtemp(join(tmpdir(), 'kay-cold-'))
  let fleet: SshdFleet | undefined
  let sampler: ReturnType<typeof setInterval> | undefined
  try {
    const key = await makeClientKey(dir)
    const t0 = Date.now()
    const cpuLoops = loginCpuMs > 0 ? Math.round(loginCpuMs * loopsPerMs()) : 0
    const slowLogin = cpuLoops > 0 || loginSleepMs > 0 ? { slowLogin: { cpuLoops, sleepMs: loginSleepMs } } : {}
    fleet = await startSshdFleet({ count: hosts, authorizedKeys: [key.publicKey], ...slowLogin })
    console.log(`sshd fleet of ${hosts} started in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    const port = fleet.servers[0]!.port
    await writeFile(join(dir, 'ssh_config'), `Host *\n  User kaytest\n  Port ${port}\n`)
    await writeFile(join(dir, 'hosts'), `${fleet.servers.map((s) => s.host).join('\n')}\n`)

    let peakLoad = await load1()
    sampler = setInterval(() => {
      void load1().then((l) => {
        peakLoad = Math.max(peakLoad, l)
      })
    }, 1000)
    const tracker = new ConvergenceTracker(hosts)
    let sessionsAtConvergence: Promise<number> | undefined
    const args = [
      '--interval',
      `${intervalMs}ms`,
      '--ticks',
      String(Math.ceil((maxS * 1000) / intervalMs) + 1),
      '--hostfile',
      join(dir, 'hosts'),
      '--ssh-config',
      join(dir, 'ssh_config'),
      '-i',
      key.privateKeyPath,
      '--known-hosts',
      join(dir, 'known_hosts'),
    ]
    const run = spawnKayFleet(
      args,
      (o) => {
        const tick = tracker.add(o)
        if (!tick) return
        console.log(progressLine(tick, hosts))
        if (tracker.converged === tick) sessionsAtConvergence = sessions(fleet!)
        if (tracker.converged && tracker.ticksAfter >= after) stop()
      },
      root ? { root } : {},
    )
    let killTimer: ReturnType<typeof setTimeout> | undefined
    const stop = () => {
      if (killTimer) return
      run.child.kill('SIGINT')
      killTimer = setTimeout(() => run.child.kill('SIGKILL'), 20_000)
    }
    const deadline = setTimeout(stop, maxS * 1000)
    const code = await run.exited
    clearTimeout(deadline)
    clearTimeout(killTimer)
    clearInterval(sampler)
    sampler = undefined

    const c = tracker.converged
    const sessionCount = await (sessionsAtConvergence ?? sessions(fleet))
    const met = c !== undefined && c.atMs <= goalS * 1000 && tracker.ticksAfter >= after
    const ok = met && tracker.failedAfter === 0 && tracker.lost === 0
    const result = {
      label,
      hosts,
      intervalMs,
      loginCpuMs,
      loginSleepMs,
      goalS,
      converged: c !== undefined,
      allStreamingS: c ? c.atMs / 1000 : null,
      convergedAtTick: c?.tick ?? null,
      sessionsPerHost: sessionCount / hosts,
      sessionsCountedAt: c ? 'convergence' : 'end of run',
      peakLoad1: peakLoad,
      ticks: tracker.ticks.length,
      ticksAfter: tracker.ticksAfter,
      failedHostTicksAfter: tracker.failedAfter,
      ticksMissingHosts: tracker.lost,
      lastTick: tracker.ticks.at(-1) ?? null,
      exit: code,
      goalMet: ok,
    }
    record('fleet-cold-start', result)
    if (!ok) console.error(`goal not met; kay stderr (tail):\n${run.stderr().slice(-2000)}`)
    return ok ? 0 : 1
  } finally {
    if (sampler) clearInterval(sampler)
    await fleet?.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

function progressLine(t: TickView, hosts: number): string {
  const codes = Object.entries(t.byCode)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')
  const p = t.progress
  const where = p
    ? ` | connecting ${p.connecting}, starting ${p.starting}, probing ${p.probing}, exec ${p.exec}, backoff ${p.backoff}`
    : ''
  return (
    `tick ${String(t.tick).padStart(3)} at ${(t.atMs / 1000).toFixed(1).padStart(6)} s: ${t.hosts}/${hosts} reported, ` +
    `${t.ok} ok, ${t.streaming} streaming${codes ? ` | ${codes}` : ''}${where}`
  )
}

runMain(import.meta.url, main)
