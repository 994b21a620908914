/**
 * `kay serve` through the CLI over real OpenSSH sshd hosts (one per host on 127.77.x.y, one cgroup for the fleet),
 * from a cold start: how long until every host's node_exporter families are served over its collection stream, then
 * the hosts' CPU per host-tick (sshd and the loops) and kay's (the CLI process and its threads) over steady ticks,
 * at the operator's interval.
 *
 *   bash .ci/setup-sshd.sh && pnpm build   # sshd and kaytest; the CLI it runs is the built one (bin/kay.js)
 *   node --conditions=kay-source --import tsx bench/load/serve-cli.ts --hosts 100 --interval 5s --ticks 6
 */
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { makeClientKey, sshdAvailable, startSshdFleet } from '@kay/core/testing'
import { flags, record, runMain, sleep, writeFleetConfig } from './lib.js'

const ROOT = resolve(fileURLToPath(new URL('../../', import.meta.url)))

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => res(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

/** utime + stime of a process and its reaped children (ms): the CLI and its threads. */
async function procCpuMs(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100
}

async function main(argv: string[]): Promise<number> {
  if (!sshdAvailable()) {
    console.error('needs sshd and the kaytest user: run .ci/setup-sshd.sh')
    return 2
  }
  const f = flags(argv)
  const n = Number(f.get('hosts') ?? 100)
  const interval = f.get('interval') ?? '5s'
  const intervalMs = Number.parseFloat(interval) * (interval.endsWith('ms') ? 1 : 1000)
  const ticks = Number(f.get('ticks') ?? 6)
  const dir = await mkdtemp(join(tmpdir(), 'kay-serve-cli-'))
  const key = await makeClientKey(dir)
  const fleet = await startSshdFleet({ count: n, authorizedKeys: [key.publicKey] })
  await writeFleetConfig(dir, fleet.servers, key.privateKeyPath)
  const port = await freePort()
  const t0 = performance.now()
  const kay = spawn(
    process.execPath,
    [
      'packages/cli/bin/kay.js',
      'serve',
      '--hostfile',
      join(dir, 'hosts'),
      '--ssh-config',
      join(dir, 'ssh_config'),
      '--known-hosts',
      join(dir, 'known_hosts'),
      '--interval',
      interval,
      '--listen',
      `127.0.0.1:${port}`,
    ],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] },
  )
  const scrape = async (): Promise<string> => {
    try {
      return await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    } catch {
      return ''
    }
  }
  const count = (text: string, re: RegExp) => (text.match(re) ?? []).length
  const ticksOf = (text: string) => Number(/^kay_collect_duration_seconds_count (\d+)$/m.exec(text)?.[1] ?? 0)
  try {
    let text = ''
    for (;;) {
      text = await scrape()
      if (
        count(text, /^kay_host_collect_mode\{[^}]*mode="stream-/gm) === n &&
        count(text, /^node_filesystem_size_bytes\{/gm) >= n
      )
        break
      if (performance.now() - t0 > 300_000) throw new Error('not every host streaming in 5 minutes')
      await sleep(200)
    }
    const convergedMs = performance.now() - t0
    const convergedTicks = ticksOf(text)
    console.log(
      `${n} hosts: every host's families over its stream after ${(convergedMs / 1000).toFixed(1)} s (tick ${convergedTicks})`,
    )
    // Steady state: from the end of one tick to the end of the tick `ticks` later, seen by a scrape every 500 ms
    // (a scrape costs kay CPU too: a handful in the window, as a Prometheus would make).
    const at = async (tick: number) => {
      while (ticksOf(await scrape()) < tick) await sleep(500)
      return { host: (await fleet.cpuUsageUsec()) ?? Number.NaN, kay: await procCpuMs(kay.pid!) }
    }
    const first = convergedTicks + 1
    const a = await at(first)
    await sleep(ticks * intervalMs - 1000)
    const b = await at(first + ticks)
    const hostMs = (b.host - a.host) / 1000 / (n * ticks)
    const kayMs = (b.kay - a.kay) / (n * ticks)
    const sessions = count(await scrape(), /^kay_host_collect_mode\{[^}]*mode="exec"/gm)
    console.log(
      `steady, ${ticks} ticks at ${interval}: host ${hostMs.toFixed(3)} ms per host-tick (sshd + loop), kay ${kayMs.toFixed(3)} ms per host-tick; ${sessions} hosts on exec`,
    )
    record('serve-cli', {
      hosts: n,
      intervalMs,
      ticks,
      convergedMs,
      convergedTicks,
      hostMsPerHostTick: hostMs,
      kayMsPerHostTick: kayMs,
    })
    return 0
  } finally {
    kay.kill('SIGTERM')
    await new Promise((r) => kay.once('exit', r))
    await fleet.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

runMain(import.meta.url, main)
