/**
 * What the `kay serve` end-to-end tests share: `kay serve` and other servers (node_exporter, Prometheus) started
 * as children on free loopback ports, ended by PID; scrapes; and a small parser of the text exposition format
 * good enough to compare two expositions series by series.
 */
import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeClientKey, requireSshd, type SshdServer, startSshd, until } from '@kay/core/testing'
import { expect } from 'vitest'
import { KAY_NODE_ARGS, REPO_ROOT } from './kay.js'

/** A free TCP port on 127.0.0.1 (bound once to port 0, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

export interface Child {
  child: ChildProcess
  port: number
  stderr: () => string
  exited: Promise<number | null>
}

const children: ChildProcess[] = []

/** Starts `command args…` with its stderr kept (bounded) and stdout discarded; stop it with {@link stopChildren}. */
export function startChild(command: string, args: string[], port: number, opts: SpawnOptions = {}): Child {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  children.push(child)
  let err = ''
  child.stderr!.on('data', (d: Buffer) => {
    if (err.length < 64 * 1024) err += d.toString()
  })
  child.stdout!.resume()
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  return { child, port, stderr: () => err, exited }
}

/** Kills every child still running that these helpers started, by PID. */
export function stopChildren(): void {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null && c.pid) c.kill('SIGKILL')
}

/** `kay serve <args…> --listen 127.0.0.1:<free port>` from the repository's sources. */
export async function serve(args: string[]): Promise<Child> {
  const port = await freePort()
  return startChild(process.execPath, [...KAY_NODE_ARGS, 'serve', ...args, '--listen', `127.0.0.1:${port}`], port, {
    cwd: REPO_ROOT,
  })
}

export async function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers })
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') }
}

/** The first /metrics body of `port` for which `pred` holds (polled until `ms`). */
export function metricsWhen(port: number, pred: (text: string) => boolean, ms = 30_000): Promise<string> {
  return until(
    'metrics',
    async () => {
      try {
        const r = await get(port, '/metrics')
        return r.status === 200 && pred(r.body) ? r.body : undefined
      } catch {
        return undefined
      }
    },
    { timeoutMs: ms, everyMs: 50 },
  )
}

/** One series of an exposition: family name, labels, value. */
export interface Sample {
  name: string
  labels: Map<string, string>
  value: number
}

export interface ParsedExposition {
  samples: Sample[]
  /** Per family (as named on its TYPE line): type and help. */
  meta: Map<string, { type: string; help: string }>
}

function unescapeLabel(v: string): string {
  return v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
}

/** Parses the text exposition format (0.0.4): what these tests compare, not a validator (promtool is that). */
export function parseExposition(text: string): ParsedExposition {
  const samples: Sample[] = []
  const meta = new Map<string, { type: string; help: string }>()
  const help = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const h = /^# HELP (\S+) (.*)$/.exec(line)
    if (h) {
      help.set(h[1]!, h[2]!)
      continue
    }
    const t = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (t) {
      meta.set(t[1]!, { type: t[2]!, help: help.get(t[1]!) ?? '' })
      continue
    }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not an exposition line: ${line}`)
    const labels = new Map<string, string>()
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels.set(l[1]!, unescapeLabel(l[2]!))
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return { samples, meta }
}

/** `name{k="v",…}` with the labels sorted and `drop` left out: a series' identity across two expositions. */
export function seriesKey(s: Sample, drop: readonly string[] = []): string {
  const labels = [...s.labels]
    .filter(([k]) => !drop.includes(k))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
  return `${s.name}{${labels.join(',')}}`
}

export interface PromResult {
  metric: Record<string, string>
  value: [number, string]
}

export interface Prometheus extends Child {
  /** An instant query: its status and result vector (status 'error' with the error for a bad query). */
  query(q: string): Promise<{ status: string; error?: string; data?: { result: PromResult[] } }>
  /** GET an API path (e.g. `/api/v1/rules`) as JSON. */
  api<T>(path: string): Promise<T>
}

/** A real Prometheus (Debian's) on a free loopback port, with `config` as prometheus.yml in `dir`. */
export async function startPrometheus(dir: string, config: string): Promise<Prometheus> {
  await writeFile(join(dir, 'prometheus.yml'), config)
  const port = await freePort()
  const prom = startChild(
    '/usr/bin/prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    port,
  )
  const api = async <T>(path: string): Promise<T> =>
    (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as T
  return {
    ...prom,
    api,
    query: (q) => api(`/api/v1/query?query=${encodeURIComponent(q)}`),
  }
}

const sshds: SshdServer[] = []
const sshdDirs: string[] = []

/**
 * Real sshd instances on loopback, one per name, and the files kay needs to reach them by those names: the flags
 * for `kay serve` (a host file of the names, an ssh_config, a pin file). Stop them with {@link stopSshdHosts}.
 */
export async function sshdHosts(names: readonly string[]): Promise<{ args: string[]; dir: string }> {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-real-'))
  sshdDirs.push(dir)
  const key = await makeClientKey(dir)
  let config = ''
  for (const name of names) {
    const server = await startSshd({ authorizedKeys: [key.publicKey] })
    sshds.push(server)
    config += `Host ${name}\n  HostName ${server.host}\n  Port ${server.port}\n  User ${server.user}\n  IdentityFile ${key.privateKeyPath}\n`
  }
  await writeFile(join(dir, 'ssh_config'), config)
  await writeFile(join(dir, 'hosts'), `${names.join('\n')}\n`)
  const args = [
    '--hostfile',
    join(dir, 'hosts'),
    '--ssh-config',
    join(dir, 'ssh_config'),
    '--known-hosts',
    join(dir, 'known_hosts'),
  ]
  return { args, dir }
}

export async function stopSshdHosts(): Promise<void> {
  await Promise.all(sshds.splice(0).map((s) => s.stop()))
  await Promise.all(sshdDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })))
}

/**
 * `promtool check metrics` finds nothing but what it finds in node_exporter's own exposition: its camelCase lint
 * on the meminfo families (`node_memory_MemTotal_bytes`…), whose names are node_exporter's and must stay so for its
 * dashboards and rules. Any parse error, or any other finding, fails.
 */
export function expectPromtoolClean(text: string): void {
  const check = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  const camel = /^node_memory_\w+ metric names should be written in 'snake_case' not 'camelCase'$/
  const findings = (check.stderr + check.stdout).split('\n').filter((l) => l !== '' && !camel.test(l))
  expect(findings).toEqual([])
  // 0: clean; 3: lint findings only (the camelCase ones above); anything else is a parse failure.
  expect([0, 3]).toContain(check.status)
}
