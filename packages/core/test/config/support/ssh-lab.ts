/**
 * A private world for the real `ssh` (OpenSSH client): a mount, UTS and network namespace whose /etc/passwd,
 * /etc/group, /etc/hosts, /etc/services, /etc/nsswitch.conf (files only) and /etc/ssh are the test's own, whose host
 * name is fixed, and which has no network at all (not even loopback up). `ssh` runs in it as the unprivileged
 * `kaytest` account (uid 1001), so `~`, `%d`, `%u`, `%i`, the default config files and name resolution all come
 * from tables the test controls — and gives kay the very same tables. Nothing in it can reach a real DNS server.
 *
 * The namespace is held by one `sleep` started through `unshare`; each `ssh` enters it with `nsenter`. Needs root
 * (CI runs as root), util-linux (unshare, nsenter, setpriv) and bash.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

export const LAB_UID = 1001
export const LAB_USER = 'kaytest'
export const LAB_HOSTNAME = 'kaybox.lab.example'
const SSH = '/usr/bin/ssh'

/** Files bound over the namespace's /etc (paths on the real file system). */
export interface LabEtc {
  passwd: string
  group: string
  hosts: string
  services: string
  nsswitch: string
  /** A directory bound over /etc/ssh (its `ssh_config` is the system-wide file). */
  sshDir: string
}

export function labAvailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'the ssh_config conformance lab needs root (CI runs as root)'
  for (const tool of ['/usr/bin/unshare', '/usr/bin/nsenter', '/usr/bin/setpriv', '/bin/bash', SSH]) {
    if (!existsSync(tool)) return `the ssh_config conformance lab needs ${tool}`
  }
  return undefined
}

/** Bounds the `ssh` processes in flight across all labs (the machine has two cores). */
export class Limiter {
  #active = 0
  readonly #waiting: Array<() => void> = []
  constructor(readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.max) await new Promise<void>((r) => this.#waiting.push(r))
    this.#active++
    try {
      return await fn()
    } finally {
      this.#active--
      this.#waiting.shift()?.()
    }
  }
}

export interface SshRun {
  status: number | null
  stdout: string
  stderr: string
}

export class SshLab {
  readonly #holder: ChildProcess
  readonly #pid: number

  private constructor(holder: ChildProcess) {
    this.#holder = holder
    this.#pid = holder.pid as number
  }

  static async start(etc: LabEtc): Promise<SshLab> {
    const binds: Array<[string, string]> = [
      [etc.passwd, '/etc/passwd'],
      [etc.group, '/etc/group'],
      [etc.hosts, '/etc/hosts'],
      [etc.services, '/etc/services'],
      [etc.nsswitch, '/etc/nsswitch.conf'],
      [etc.sshDir, '/etc/ssh'],
    ]
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
    const script = [
      ...binds.map(([from, to]) => `mount --bind ${q(from)} ${q(to)}`),
      `hostname ${LAB_HOSTNAME}`,
      'echo ready',
      'exec sleep 3600',
    ].join(' && ')
    const holder = spawn(
      '/usr/bin/unshare',
      ['--mount', '--uts', '--net', '--propagation', 'private', '/bin/sh', '-c', script],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let err = ''
    holder.stderr?.on('data', (d: Buffer) => {
      err += d.toString()
    })
    await new Promise<void>((resolve, reject) => {
      let out = ''
      holder.stdout?.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('ready')) resolve()
      })
      holder.once('exit', (code) => reject(new Error(`ssh lab did not start (exit ${code}): ${err.trim()}`)))
    })
    return new SshLab(holder)
  }

  /**
   * Run `ssh args` in the lab as kaytest with exactly `env`. `argv0` replaces ssh's argv[0] (ssh builds the
   * ProxyJump command from it).
   */
  async ssh(args: readonly string[], env: Readonly<Record<string, string>>, argv0?: string): Promise<SshRun> {
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`)
    const inner =
      argv0 === undefined ? [SSH, ...args] : ['/bin/bash', '-c', 'exec -a "$0" /usr/bin/ssh "$@"', argv0, ...args]
    const cmd = [
      '--target',
      String(this.#pid),
      '--mount',
      '--uts',
      '--net',
      '--',
      '/usr/bin/setpriv',
      `--reuid=${LAB_UID}`,
      `--regid=${LAB_UID}`,
      '--clear-groups',
      '--',
      '/usr/bin/env',
      '-i',
      ...envArgs,
      ...inner,
    ]
    try {
      const { stdout, stderr } = await execFileP('/usr/bin/nsenter', cmd, { timeout: 20_000, maxBuffer: 1 << 20 })
      return { status: 0, stdout, stderr }
    } catch (e) {
      const err = e as { code?: number | string; stdout?: string; stderr?: string; killed?: boolean }
      if (err.killed) throw new Error(`ssh ${args.join(' ')} timed out in the lab`)
      return {
        status: typeof err.code === 'number' ? err.code : null,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      }
    }
  }

  /** Run any command in the lab as root (for tools other than ssh). */
  async run(argv: readonly string[], opts: { cwd?: string } = {}): Promise<SshRun> {
    const wd = opts.cwd === undefined ? [] : [`--wd=${opts.cwd}`]
    const cmd = ['--target', String(this.#pid), '--mount', '--uts', '--net', ...wd, '--', ...argv]
    try {
      const { stdout, stderr } = await execFileP('/usr/bin/nsenter', cmd, { timeout: 30_000 })
      return { status: 0, stdout, stderr }
    } catch (e) {
      const err = e as { code?: number | string; stdout?: string; stderr?: string }
      return {
        status: typeof err.code === 'number' ? err.code : null,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      }
    }
  }

  async stop(): Promise<void> {
    if (this.#holder.exitCode !== null || this.#holder.signalCode !== null) return
    const gone = new Promise((r) => this.#holder.once('exit', r))
    this.#holder.kill('SIGTERM')
    await gone
  }
}
