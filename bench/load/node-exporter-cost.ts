/**
 * What a host pays per tick for kay's node_exporter families, against node_exporter itself, in the same run, at the
 * operator's interval: each subject in its own cgroup v2 group on this machine, all paced at `--interval-ms`
 * (default 5 s) and staggered within it so that no two run at once.
 *
 * - `ne-same`: Debian's node_exporter with the collectors kay serves, scraped once per interval;
 * - `ne-default`: node_exporter with its default collectors;
 * - `kay-<loop>`: one real sshd (its own group: sshd and the loop) and a kay collection stream in node mode, one
 *   request per interval, the slow sections every 12th request as the collector asks for them;
 * - `kay-exec`: the exec fallback, a new session per request running the node collect command;
 * - `exec-floor`: a new session per request running `true` on the same kind of sshd and connection: what the
 *   exec fallback cannot go below;
 * - `floor-bash`: a bash loop that only reads the files the bash loop reads (mapfile, the cheapest read bash has),
 *   forks `stat -f /` on the slow requests and answers an empty frame: what a bash loop cannot go below;
 * - `floor-sh`: a sh loop that forks an awk doing nothing per request: what the sh loop cannot go below (sh's
 *   `read` costs a system call per byte, so it reads nothing itself);
 * - `kay-perl-table`: the perl loop answering the table's requests (what `kay fleet` costs), for reference.
 *
 * Both node_exporter instances run as kaytest (unprivileged, as node_exporter is meant to run; kay logs in as
 * kaytest). Client CPU and frame size per request are reported too (the client's parse is measured separately).
 *
 *   bash .ci/setup-sshd.sh && bash .ci/setup-tools.sh   # sshd, kaytest, prometheus-node-exporter
 *   node --conditions=kay-source --import tsx bench/load/node-exporter-cost.ts [--interval-ms 5000] [--requests 24]
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { HostActor, LocalDialGate, STREAM_FLAVOURS, type StreamFlavour } from '@kay/core'
import {
  FrameDecoder,
  NODE_EXPORTER_COLLECTORS,
  type NodeRequest,
  NodeSeries,
  nodeCollectCommand,
  randomStreamToken,
  SLOW_EVERY,
  streamCommand,
  streamRequest,
} from '@kay/core/internal'
import { generateClientKey } from '@kay/core/sim'
import { Cgroup, SSHD_TEST_USER, sshdAvailable, startSshd } from '@kay/core/testing'
import { flags, record, runMain, sleep, summarize } from './lib.js'

const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter'
const WARMUP = 2

interface Subject {
  name: string
  /** One request (scrape, frame or exec run), `k` counting from 0 over the whole run. */
  request(k: number): Promise<number>
  cpuUsec(): Promise<number>
  close(): Promise<void>
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

async function nodeExporter(name: string, collectors: readonly string[] | 'defaults'): Promise<Subject> {
  const port = await freePort()
  const args = [`--web.listen-address=127.0.0.1:${port}`, '--log.level=warn']
  if (collectors !== 'defaults') args.push('--collector.disable-defaults', ...collectors.map((c) => `--collector.${c}`))
  const uid = Number(execFileSync('id', ['-u', SSHD_TEST_USER], { encoding: 'utf8' }))
  const gid = Number(execFileSync('id', ['-g', SSHD_TEST_USER], { encoding: 'utf8' }))
  const group = Cgroup.create('bench')
  if (group === null) throw new Error('needs a writable cgroup v2 hierarchy (run as root)')
  const child = spawn(NODE_EXPORTER, args, { uid, gid, cwd: '/', stdio: 'ignore' })
  await group.add(child.pid!)
  const url = `http://127.0.0.1:${port}/metrics`
  for (let i = 0; i < 100; i++) {
    if (
      await fetch(url).then(
        (r) => r.ok,
        () => false,
      )
    )
      break
    await sleep(50)
  }
  return {
    name,
    request: async () => (await (await fetch(url)).arrayBuffer()).byteLength,
    cpuUsec: () => group.cpuUsageUsec(),
    close: async () => {
      child.kill('SIGKILL')
      await group.destroy()
    },
  }
}

/** The floor loops (see the top): `$1` is the token; a request is `<seq>[ node][ slow]`. */
const FLOOR_LOOPS = {
  'floor-bash':
    "exec bash -c 'LC_ALL=C;exec 2>/dev/null;while read -r l;do " +
    'for f in /proc/loadavg /proc/meminfo /proc/stat /proc/uptime /proc/net/dev /proc/vmstat /proc/sys/fs/file-nr ' +
    '/proc/pressure/cpu /proc/pressure/io /proc/pressure/memory /proc/diskstats /sys/class/net/*/statistics/rx_bytes ' +
    '/sys/class/net/*/statistics/tx_bytes /sys/class/net/*/statistics/rx_nohandler;do mapfile -d "" Q <$f;done;' +
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
    '[[ $l == *slow ]]&&x=$(stat -f -c %s /);printf "@@kay-end %s %s\\n" "$0" "${l%% *}";done\'',
  'floor-sh':
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
    'exec sh -c \'while read -r l;do awk "BEGIN{}" </dev/null;printf "@@kay-end %s %s\\n" "$0" "${l%% *}";done\'',
} as const

async function kay(
  name: string,
  how: StreamFlavour | 'exec' | 'exec-floor' | keyof typeof FLOOR_LOOPS,
  node: boolean,
  key: ReturnType<typeof generateClientKey>,
): Promise<Subject> {
  const sshd = await startSshd({ authorizedKeys: [key.publicKey] })
  const actor = new HostActor({
    target: { id: name, hostname: sshd.host, port: sshd.port, user: sshd.user },
    identity: { username: sshd.user, keys: [{ key: key.parsed, source: 'bench' }] },
    verifier: { verify: async () => ({ kind: 'trusted' as const }) },
    dialGate: new LocalDialGate(),
  })
  actor.start()
  while (actor.state !== 'ready') await sleep(20)
  const series = new NodeSeries(name)
  const words = (k: number): NodeRequest => (!node ? 'table' : k % SLOW_EVERY === 0 ? 'node-slow' : 'node')
  const close = async () => {
    await actor.close()
    await sshd.stop()
  }
  const cpuUsec = async () => (await sshd.cpuUsageUsec()) ?? Number.NaN
  if (how === 'exec-floor') {
    return {
      name,
      cpuUsec,
      close,
      request: async () => (await actor.run('true', { timeoutMs: 10_000, maxOutputBytes: 1 << 10 })).stdout.length,
    }
  }
  if (how === 'exec') {
    return {
      name,
      cpuUsec,
      close,
      request: async (k) => {
        const r = await actor.run(nodeCollectCommand(words(k) === 'node-slow'), {
          timeoutMs: 10_000,
          maxOutputBytes: 1 << 20,
        })
        series.update(r.stdout)
        return r.stdout.length
      },
    }
  }
  const token = randomStreamToken()
  const decoder = new FrameDecoder({ token, maxFrameBytes: 1 << 20 })
  let waiting: ((body: string) => void) | undefined
  const command =
    how === 'floor-bash' || how === 'floor-sh' ? `${FLOOR_LOOPS[how]} ${token}` : streamCommand(how, token)
  const channel = await actor.openExec(command, (ch) =>
    ch.on('data', (d: Buffer) => {
      for (const f of decoder.push(d)) waiting?.(f.body)
    }),
  )
  channel.stderr.resume()
  let seq = 0
  return {
    name,
    cpuUsec,
    close: async () => {
      channel.end()
      await close()
    },
    request: (k) =>
      new Promise<number>((resolve) => {
        waiting = (body) => {
          if (node) series.update(body)
          resolve(body.length)
        }
        decoder.expect(++seq)
        channel.write(streamRequest(seq, false, words(k)))
      }),
  }
}

async function main(argv: string[]): Promise<number> {
  if (!sshdAvailable() || !existsSync(NODE_EXPORTER)) {
    console.error(
      'needs sshd, the kaytest user and prometheus-node-exporter: run .ci/setup-sshd.sh and .ci/setup-tools.sh',
    )
    return 2
  }
  const f = flags(argv)
  const intervalMs = Number(f.get('interval-ms') ?? 5000)
  const requests = Number(f.get('requests') ?? 24)
  const key = generateClientKey('bench')
  const subjects: Subject[] = [
    await nodeExporter('ne-same', NODE_EXPORTER_COLLECTORS),
    await nodeExporter('ne-default', 'defaults'),
    ...(await Promise.all(STREAM_FLAVOURS.map((fl) => kay(`kay-${fl}`, fl, true, key)))),
    await kay('kay-exec', 'exec', true, key),
    await kay('exec-floor', 'exec-floor', true, key),
    await kay('floor-bash', 'floor-bash', true, key),
    await kay('floor-sh', 'floor-sh', true, key),
    await kay('kay-perl-table', 'perl', false, key),
  ]
  const cpu = new Map<string, number[]>()
  const bytes = new Map<string, number[]>()
  const slot = intervalMs / subjects.length
  try {
    // Warm-up (the slow sections come on request 0), then measured periods; each subject's request is in its own
    // slot of the period, so no two subjects run at once.
    for (let k = 0; k < WARMUP + requests; k++) {
      const start = Date.now()
      for (let i = 0; i < subjects.length; i++) {
        const s = subjects[i]!
        await sleep(Math.max(0, start + i * slot - Date.now()))
        const before = await s.cpuUsec()
        const n = await s.request(k)
        // The request's host-side work is done when its answer is in; give the processes a moment to go back to
        // sleep (sshd's accounting of the write) before reading the counter.
        await sleep(Math.min(50, slot / 4))
        const used = (await s.cpuUsec()) - before
        if (k >= WARMUP) {
          cpu.set(s.name, [...(cpu.get(s.name) ?? []), used / 1000])
          bytes.set(s.name, [...(bytes.get(s.name) ?? []), n])
        }
      }
      await sleep(Math.max(0, start + intervalMs - Date.now()))
    }
  } finally {
    await Promise.all(subjects.map((s) => s.close().catch(() => undefined)))
  }
  const same = summarize(cpu.get('ne-same') ?? [])
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  const sameMean = mean(cpu.get('ne-same') ?? [])
  console.log(`interval ${intervalMs} ms, ${requests} requests each (the slow sections on every ${SLOW_EVERY}th)`)
  console.log('subject          ms/request: mean | min / median / max      bytes   vs ne-same (mean)')
  for (const s of subjects) {
    const xs = cpu.get(s.name) ?? []
    const sum = summarize(xs)
    const b = Math.round(mean(bytes.get(s.name) ?? []))
    console.log(
      `${s.name.padEnd(16)} ${mean(xs).toFixed(3).padStart(7)} | ${sum.min.toFixed(3)} / ${sum.median.toFixed(3)} / ${sum.max.toFixed(3)}` +
        `${String(b).padStart(10)}   ${(mean(xs) / sameMean).toFixed(2)}`,
    )
    record('node-exporter-cost', {
      subject: s.name,
      intervalMs,
      requests,
      hostMsPerRequest: sum,
      hostMsMean: mean(xs),
      bytes: b,
    })
  }
  if (same.n === 0) return 1
  return 0
}

runMain(import.meta.url, main)
