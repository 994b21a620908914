/**
 * End-to-end helpers: a simulated fleet in the test process plus the files the `kay` CLI needs to reach it
 * (key, ssh_config, pin file), a bounded runner for the CLI as a child process, and a tmux driver for the TTY UI.
 * Every wait is a poll with a deadline; every process started here is ended by its PID.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateClientKey, type SimFleet, type SimFleetOptions, startSimFleet } from '@kay/core/sim'
import { until } from '@kay/core/testing'

/** The repository root (the CLI runs with this as its working directory). */
export const REPO_ROOT = resolve(fileURLToPath(new URL('../../../../../', import.meta.url)))

/** The command line that `pnpm kay` runs, without pnpm's start-up cost. */
export const KAY_NODE_ARGS = ['--conditions=kay-source', '--import', 'tsx', 'packages/cli/src/cli.ts']

/** A temporary directory with a client key, an ssh_config naming every sim host, and a pin file path. */
export interface FleetFixture {
  fleet: SimFleet
  dir: string
  keyFile: string
  sshConfig: string
  knownHosts: string
  /** Host names in fleet order (`sim0001`, …). */
  names: string[]
  /** Flags that point kay at this fixture's key, config and pins. */
  connArgs: string[]
  close(): Promise<void>
}

/** Start `hosts` simulated hosts and write the files kay needs to reach them as `sim0001`… aliases. */
export async function startFixture(
  hosts: number,
  opts: Omit<SimFleetOptions, 'hosts' | 'authorizedKeys'> = {},
): Promise<FleetFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'kay-e2e-'))
  const key = generateClientKey('kay-e2e')
  const keyFile = join(dir, 'id_ed25519')
  await writeFile(keyFile, key.privateKey, { mode: 0o600 })
  const fleet = await startSimFleet({ ...opts, hosts, authorizedKeys: [key.publicKey] })
  const sshConfig = join(dir, 'ssh_config')
  await writeFile(sshConfig, sshConfigText(fleet), { mode: 0o600 })
  const knownHosts = join(dir, 'known_hosts')
  let closed = false
  return {
    fleet,
    dir,
    keyFile,
    sshConfig,
    knownHosts,
    names: fleet.hosts.map((h) => h.name),
    connArgs: ['--ssh-config', sshConfig, '-i', keyFile, '--known-hosts', knownHosts],
    async close() {
      if (closed) return
      closed = true
      await fleet.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** `Host simNNNN / HostName / Port / User` for every host of the fleet. */
export function sshConfigText(fleet: SimFleet): string {
  return fleet.hosts.map((h) => `Host ${h.name}\n  HostName ${h.host}\n  Port ${h.port}\n  User kay\n`).join('\n')
}

export interface KayRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
}

const running = new Set<ChildProcess>()

export interface KayRunOptions {
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
  /** Written to kay's stdin, then EOF (default: no stdin at all). */
  stdin?: string
}

/** A running `kay`: its process, what it printed so far, and its end. */
export interface KayChild {
  child: ChildProcess
  stdout(): string
  stderr(): string
  /** Resolves when it exited; rejects (after killing it by PID) if it outlives `timeoutMs`. */
  done: Promise<KayRun>
}

/** Start `kay args…` as a child process (cwd: the repo root), collecting its output. */
export function startKay(args: string[], opts: KayRunOptions = {}): KayChild {
  const timeoutMs = opts.timeoutMs ?? 30_000
  const started = Date.now()
  const child = spawn(process.execPath, [...KAY_NODE_ARGS, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, NO_COLOR: '1', ...opts.env },
    stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  })
  running.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d
  })
  if (opts.stdin !== undefined) child.stdin!.end(opts.stdin)
  const done = new Promise<KayRun>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
      reject(
        new Error(`kay ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`),
      )
    }, timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      running.delete(child)
      reject(err)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      running.delete(child)
      resolvePromise({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
  return { child, stdout: () => stdout, stderr: () => stderr, done }
}

/**
 * Run `kay args…` as a child process (cwd: the repo root) and collect its output. The child is killed (by PID)
 * if it outlives `timeoutMs`; the promise rejects in that case, with what it printed.
 */
export function runKay(args: string[], opts: KayRunOptions = {}): Promise<KayRun> {
  return startKay(args, opts).done
}

/** Kill (by PID) any CLI child still running; for afterAll hooks. */
export function killRunning(): void {
  for (const c of running) if (c.pid !== undefined && c.exitCode === null) process.kill(c.pid, 'SIGKILL')
  running.clear()
}

/** Parse NDJSON output: one object per non-empty line. */
export function ndjson(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** Run a command with a bounded timeout; resolves with stdout (rejects on a non-zero exit). */
export function run(file: string, args: string[], timeoutMs = 5000): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout) => {
      if (err) reject(err)
      else resolvePromise(stdout)
    })
  })
}

export const TMUX = '/usr/bin/tmux'

/** One detached tmux session with its own server socket, so nothing here touches the user's tmux. */
export class TmuxSession {
  readonly name: string
  readonly socket: string

  private constructor(name: string, socket: string) {
    this.name = name
    this.socket = socket
  }

  /** Start a session running an interactive `sh` in `cwd`, `cols`×`rows`. */
  static async start(dir: string, cwd: string, cols = 160, rows = 50): Promise<TmuxSession> {
    const name = `kay-e2e-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
    const s = new TmuxSession(name, join(dir, `${name}.sock`))
    await s.tmux(['new-session', '-d', '-s', name, '-x', String(cols), '-y', String(rows), '-c', cwd, 'sh'])
    return s
  }

  tmux(args: string[]): Promise<string> {
    return run(TMUX, ['-S', this.socket, ...args])
  }

  /** Type a shell line and press Enter. */
  async typeLine(line: string): Promise<void> {
    await this.tmux(['send-keys', '-t', this.name, '-l', line])
    await this.tmux(['send-keys', '-t', this.name, 'Enter'])
  }

  /** Send tmux key names (`Down`, `Enter`, `Escape`, `C-c`) or, with `literal`, text. */
  async keys(keys: string[], literal = false): Promise<void> {
    await this.tmux(['send-keys', '-t', this.name, ...(literal ? ['-l'] : []), ...keys])
  }

  /** The visible screen as plain text, or with `escapes` with its SGR attributes (inverse video: `\x1b[7m`). */
  capture(escapes = false): Promise<string> {
    return this.tmux(['capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', this.name])
  }

  /** Poll the screen until `pred` holds; returns that screen. On timeout the error shows the last screen. */
  async waitScreen(
    what: string,
    pred: (screen: string) => boolean,
    timeoutMs = 15_000,
    escapes = false,
  ): Promise<string> {
    let last = ''
    try {
      return await until(
        what,
        async () => {
          last = await this.capture(escapes)
          return pred(last) ? last : undefined
        },
        { timeoutMs: timeoutMs, everyMs: 100 },
      )
    } catch (err) {
      throw new Error(`${(err as Error).message}\nlast screen:\n${JSON.stringify(last)}`)
    }
  }

  /** The PID of the pane's shell. */
  async panePid(): Promise<number> {
    return Number((await this.tmux(['display-message', '-p', '-t', this.name, '#{pane_pid}'])).trim())
  }

  /** Kill this session's tmux server (only ours: it has its own socket). */
  async kill(): Promise<void> {
    await this.tmux(['kill-server']).catch(() => undefined)
  }
}
