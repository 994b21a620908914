/**
 * Real OpenSSH `sshd` instances on loopback, for kay's tests and benchmarks.
 *
 * Each instance runs `/usr/sbin/sshd -D -f <own config> -E <own log>` from its own temp dir, with its own
 * ed25519 host key and authorized_keys, and only lets the dedicated user `kaytest` in (made by
 * `.ci/setup-sshd.sh`: shell /bin/sh, password field `*`, no start-up files). It never touches the system sshd
 * or /etc/ssh. See DESIGN.md, "Running real sshd in tests on these machines (measured)".
 *
 * Machine facts this code relies on (OpenSSH 9.2, measured):
 * - `-E` and `-f` must be absolute paths: sshd re-execs itself per connection, and with a relative `-E` the
 *   per-connection lines (`Accepted publickey`, `Starting session`) are silently lost.
 * - sshd opens authorized_keys as the login user, so the temp dir must be traversable by `kaytest` (0711).
 * - SIGTERM to the listener does not end established connections (their processes are re-parented to PID 1);
 *   {@link SshdServer.stop} kills the whole tree by pid, and the cgroup when there is one.
 * - PID 1 here reaps orphans only now and then: `<defunct>` sshd rows linger, so liveness checks skip zombies.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ConfigError, InternalError } from '../errors.js'
import { Cgroup } from './cgroup.js'
import { descendantsOf, isAlive, type ProcessInfo, processTable, pssKb, signal } from './procs.js'

const execFileP = promisify(execFile)

/** Absolute on purpose: sshd refuses to re-exec itself when started by a relative path. */
export const SSHD_PATH = '/usr/sbin/sshd'
export const SSH_KEYGEN_PATH = '/usr/bin/ssh-keygen'
/** The dedicated login user created by `.ci/setup-sshd.sh`. */
export const SSHD_TEST_USER = 'kaytest'
/**
 * The users `.ci/setup-sshd.sh` makes, one per login shell (kaytest's is dash): a test logs in as the user of the
 * shell it wants (and lets it in with `AllowUsers`), so no test changes another's shell.
 */
export const SSHD_SHELL_USERS = {
  dash: SSHD_TEST_USER,
  bash: 'kaytest-bash',
  zsh: 'kaytest-zsh',
  fish: 'kaytest-fish',
  tcsh: 'kaytest-tcsh',
  csh: 'kaytest-csh',
  'busybox sh': 'kaytest-busybox',
} as const

/**
 * Lines OpenSSH 9.2 writes at `LogLevel VERBOSE` (each regex matches one log line). Count them with
 * {@link SshdServer.count} to prove connection reuse (`acceptedPublickey` once per connection) and to count
 * channels (`startingSession` once per exec/shell/subsystem channel).
 */
export const SSHD_LOG = {
  /** The listener is up: `Server listening on 127.0.0.1 port 2222.` */
  listening: /^Server listening on \S+ port \d+\./,
  /** A TCP connection reached sshd (before kex): `Connection from 127.0.0.1 port 5 on 127.0.0.1 port 22 rdomain ""` */
  connection: /^Connection from \S+ port \d+ on \S+ port \d+/,
  /** A connection authenticated with a key: `Accepted publickey for kaytest from 127.0.0.1 port 5 ssh2: ED25519 SHA256:…` */
  acceptedPublickey: /^Accepted publickey for \S+ from /,
  /** One per session channel: `Starting session: command for kaytest from 127.0.0.1 port 5 id 0` (also shell, subsystem, forced-command). */
  startingSession: /^Starting session: /,
  /** A failed auth attempt: `Failed password for kaytest from …` / `Failed publickey for …` */
  failedAuth: /^Failed \S+ for /,
  /**
   * A connection ended before auth succeeded: `Disconnected from authenticating user kaytest 127.0.0.1 port 5 [preauth]`
   * (client disconnected) or `Connection closed by authenticating user … [preauth]` (socket closed).
   */
  closedPreauth: /^(?:Disconnected from|Connection closed by) authenticating user /,
  /** A connection ended after login: `Disconnected from user kaytest 127.0.0.1 port 5` */
  disconnected: /^Disconnected from user /,
  /** MaxStartups dropped a dial: `drop connection #10 from [127.0.0.1]:5 on [127.0.0.1]:22 past MaxStartups` */
  maxStartupsDrop: /^drop connection #\d+ from .* past MaxStartups/,
  /** MaxStartups kicked in (logged once per episode): `beginning MaxStartups throttling` */
  maxStartupsBegin: /^beginning MaxStartups throttling/,
} as const

/** How many sshd instances a fleet starts at once by default. */
export const FLEET_START_CONCURRENCY = 16
const START_TIMEOUT_MS = 5_000
const STOP_TIMEOUT_MS = 3_000
/** Tries for a free port when the port was not fixed (another process may take the probed port first). */
const PORT_ATTEMPTS = 5
const POLL_MIN_MS = 2
const POLL_MAX_MS = 25

export interface SshdOptions {
  /** Listen address; any 127.x.y.z. Default 127.0.0.1. Anything else is refused (tests stay on loopback). */
  address?: string
  /** Listen port. Default: a free port, found by binding port 0 on `address` first (retried if taken). */
  port?: number
  /** OpenSSH public key lines to let in. Default none. */
  authorizedKeys?: readonly string[]
  /**
   * `publickey` (default): keys only. `password`: password only (`kaytest` has no usable password, so every
   * login fails; for auth-failure tests).
   */
  authMethods?: 'publickey' | 'password'
  /** `MaxSessions`: channels per connection. OpenSSH default 10. */
  maxSessions?: number
  /** `MaxStartups`: a number or `start:rate:full`. OpenSSH default `10:30:100`. */
  maxStartups?: number | string
  /** More sshd_config lines, appended last. */
  extraConfig?: readonly string[]
  /**
   * Make every session start late, as a slow login shell does (start-up files on a network home, a loaded host):
   * `sleepMs` of wall time and `cpuLoops` turns of a shell loop (host CPU, ~1.3 M per second here) before the
   * command runs. A ForceCommand wrapper in the instance's dir does it and then runs the original command with
   * `/bin/sh -c`, so the output is the command's own.
   */
  slowLogin?: { sleepMs?: number; cpuLoops?: number }
  /** Parent of the instance's temp dir. Default os.tmpdir(). Must be traversable by `kaytest`. */
  parentDir?: string
  /**
   * Run the instance in its own cgroup v2 group (CPU accounting, leak-proof stop) when the machine allows it.
   * Default true. A fleet passes its shared group instead.
   */
  cgroup?: boolean | Cgroup
  /** How long to wait for the listener, in ms. Default 5000. */
  startTimeoutMs?: number
}

export interface RestartOptions {
  /** Generate a new host key before starting again (the fingerprint changes). */
  newHostKey?: boolean
}

/** An ed25519 key pair made by ssh-keygen. */
export interface ClientKey {
  /** Path of the private key (mode 0600). */
  privateKeyPath: string
  publicKeyPath: string
  /** The private key file's contents (OpenSSH format). */
  privateKey: string
  /** The OpenSSH public key line, `ssh-ed25519 AAAA… comment`. */
  publicKey: string
  /** `SHA256:…` */
  fingerprint: string
}

/** Whether the real-sshd tier can run here: the sshd binary and the `kaytest` user exist. */
export function sshdAvailable(): boolean {
  if (!existsSync(SSHD_PATH) || !existsSync(SSH_KEYGEN_PATH)) return false
  try {
    return readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .some((line) => line.startsWith(`${SSHD_TEST_USER}:`))
  } catch {
    return false
  }
}

/**
 * {@link sshdAvailable}, except that in CI (`process.env.CI` set) a missing sshd is an error, never a skip.
 * Returns false only outside CI.
 */
export function requireSshd(): boolean {
  if (sshdAvailable()) return true
  if (process.env.CI) {
    throw new ConfigError(
      `real-sshd tests need ${SSHD_PATH} and the user ${SSHD_TEST_USER}; run .ci/setup-sshd.sh as root first`,
    )
  }
  return false
}

/** `SHA256:<base64, no padding>` of an OpenSSH public key line, as `ssh-keygen -lf` prints it. */
export function fingerprintOfLine(publicKeyLine: string): string {
  const blob = publicKeyLine.trim().split(/\s+/)[1]
  if (!blob) throw new ConfigError(`not an OpenSSH public key line: ${publicKeyLine.slice(0, 40)}`)
  return `SHA256:${createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64').replace(/=+$/, '')}`
}

/** Make an ed25519 key pair (no passphrase) at `<dir>/<name>` and `<dir>/<name>.pub` with ssh-keygen. */
export async function makeClientKey(dir: string, name = 'id_ed25519'): Promise<ClientKey> {
  await mkdir(dir, { recursive: true })
  const privateKeyPath = join(dir, name)
  await keygen(privateKeyPath, 'kay-test-client')
  await chmod(privateKeyPath, 0o600)
  const publicKey = (await readFile(`${privateKeyPath}.pub`, 'utf8')).trim()
  return {
    privateKeyPath,
    publicKeyPath: `${privateKeyPath}.pub`,
    privateKey: await readFile(privateKeyPath, 'utf8'),
    publicKey,
    fingerprint: fingerprintOfLine(publicKey),
  }
}

async function keygen(path: string, comment: string): Promise<void> {
  await rm(path, { force: true })
  await rm(`${path}.pub`, { force: true })
  await execFileP(SSH_KEYGEN_PATH, ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path])
}

/** Whether `address` is a dotted IPv4 address in 127.0.0.0/8. */
export function isLoopbackAddress(address: string): boolean {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address)
  if (!m) return false
  return m.slice(1).every((o) => Number(o) <= 255)
}

let versionCache: [number, number] | undefined

/** The installed OpenSSH version as [major, minor], from `sshd -V` (cached). */
export async function sshdVersion(): Promise<[number, number]> {
  if (versionCache) return versionCache
  // `sshd -V` prints to stderr; 9.2 exits 0, older ones complain about the unknown option but still print it.
  const out = await execFileP(SSHD_PATH, ['-V']).then(
    (r) => r.stdout + r.stderr,
    (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ''}${err.stderr ?? ''}`,
  )
  const m = /OpenSSH_(\d+)\.(\d+)/.exec(out)
  if (!m) throw new InternalError(`cannot read the OpenSSH version from '${out.trim()}'`)
  versionCache = [Number(m[1]), Number(m[2])]
  return versionCache
}

/** Bind port 0 on `address`, note the port the kernel gave, release it. */
async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen({ host: address, port: 0, exclusive: true }, () => {
      const addr = srv.address()
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))))
    })
  })
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

let janitor: Promise<void> | undefined
/**
 * Once per process: kill sshd instances (and their connections) left behind by earlier test processes that died
 * without stopping them, and remove their dirs and cgroups. Only instances this module started are touched: their
 * config lives under a `kay-sshd-<owner pid>-…` or `kay-fleet-<owner pid>-…` dir and that owner is gone.
 */
function reapOrphans(): Promise<void> {
  janitor ??= (async () => {
    const table = await processTable()
    const re = /^sshd: \/usr\/sbin\/sshd -D -f (\/\S*\/kay-(?:sshd|fleet)-(\d+)-[^/\s]+)\//
    for (const p of table) {
      const m = re.exec(p.cmd)
      if (!m || Number(m[2]) === process.pid || (await isAlive(Number(m[2])))) continue
      for (const q of [p, ...descendantsOf(table, p.pid)]) signal(q.pid, 'SIGKILL')
      await rm(m[1]!, { recursive: true, force: true })
    }
    await Cgroup.reapStale()
  })().catch(() => undefined)
  return janitor
}

/** Live listener pids, killed synchronously if the test process exits without stopping them. */
const liveListeners = new Map<number, string>()
let exitHookInstalled = false
function trackListener(pid: number, dir: string): void {
  liveListeners.set(pid, dir)
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const [p, d] of liveListeners) {
      signal(p, 'SIGKILL')
      rmSync(d, { recursive: true, force: true })
    }
  })
}

/**
 * One running sshd. Start it with {@link startSshd}. `port`, `hostKeyPublic`, `fingerprint` and `pid` are
 * read live: restart() can change all but the port.
 */
export class SshdServer {
  readonly host: string
  readonly user = SSHD_TEST_USER
  /** The instance's temp dir (config, host key, authorized_keys, log, pid file). */
  readonly dir: string
  readonly configPath: string
  readonly logPath: string
  readonly hostKeyPath: string
  readonly authorizedKeysPath: string
  /** The cgroup the instance runs in (its own, or its fleet's shared one), or null. */
  readonly cgroup: Cgroup | null
  readonly #ownCgroup: boolean
  readonly #opts: SshdOptions
  #port: number
  #hostKeyPublic = ''
  #child: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()
  #stderr = ''
  #stopped = true

  /** @internal use {@link startSshd}. */
  constructor(dir: string, opts: SshdOptions, cgroup: Cgroup | null, ownCgroup: boolean) {
    this.host = opts.address ?? '127.0.0.1'
    this.dir = dir
    this.configPath = join(dir, 'sshd_config')
    this.logPath = join(dir, 'sshd.log')
    this.hostKeyPath = join(dir, 'ssh_host_ed25519_key')
    this.authorizedKeysPath = join(dir, 'authorized_keys')
    this.cgroup = cgroup
    this.#ownCgroup = ownCgroup
    this.#opts = opts
    this.#port = opts.port ?? 0
  }

  get port(): number {
    return this.#port
  }
  /** The host key as an OpenSSH public key line (`ssh-ed25519 AAAA… comment`). */
  get hostKeyPublic(): string {
    return this.#hostKeyPublic
  }
  /** `SHA256:…` of the host key, as `ssh-keygen -lf` and known_hosts tooling print it. */
  get fingerprint(): string {
    return fingerprintOfLine(this.#hostKeyPublic)
  }
  /** The listener's pid (0 while stopped). */
  get pid(): number {
    return this.#stopped ? 0 : (this.#child?.pid ?? 0)
  }

  /** @internal first start: key, authorized_keys, listener. */
  async init(): Promise<void> {
    await this.#newHostKey()
    await this.setAuthorizedKeys(this.#opts.authorizedKeys ?? [])
    await writeFile(this.logPath, '')
    await this.#launch()
  }

  /** Replace authorized_keys. sshd reads the file on every auth attempt, so this applies to the next login. */
  async setAuthorizedKeys(keys: readonly string[]): Promise<void> {
    const text = keys.map((k) => k.trim()).join('\n')
    await writeFile(this.authorizedKeysPath, text.length > 0 ? `${text}\n` : '', { mode: 0o644 })
    await chmod(this.authorizedKeysPath, 0o644)
  }

  /** The whole log so far (across restarts). */
  async log(): Promise<string> {
    return readFile(this.logPath, 'utf8')
  }

  /** How many log lines match `pattern` (see {@link SSHD_LOG}). */
  async count(pattern: RegExp): Promise<number> {
    const re = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ''))
    return (await this.log()).split('\n').filter((line) => re.test(line)).length
  }

  /**
   * Poll the log until at least `n` lines match `pattern`; resolves with the count. sshd writes some lines
   * after the client already moved on (e.g. `Disconnected from user` after the client closed), so tests wait
   * for them rather than read once. Rejects after `timeoutMs` (default 5000).
   */
  async waitForCount(pattern: RegExp, n: number, timeoutMs = START_TIMEOUT_MS): Promise<number> {
    const deadline = Date.now() + timeoutMs
    let wait = POLL_MIN_MS
    for (;;) {
      const c = await this.count(pattern)
      if (c >= n) return c
      if (Date.now() >= deadline) {
        throw new InternalError(`sshd log has ${c} lines matching ${pattern}, wanted ${n} within ${timeoutMs} ms`)
      }
      await delay(wait)
      wait = Math.min(wait * 2, POLL_MAX_MS)
    }
  }

  /**
   * Live processes below the listener (connection monitors, session children, user commands), not the
   * listener itself. With a cgroup of its own, processes re-parented away from the tree are included too.
   */
  async processes(): Promise<ProcessInfo[]> {
    const table = await processTable()
    const pid = this.pid
    const found = pid === 0 ? [] : descendantsOf(table, pid)
    if (this.cgroup && this.#ownCgroup) {
      const members = new Set(await this.cgroup.pids())
      const have = new Set(found.map((p) => p.pid))
      for (const p of table) if (members.has(p.pid) && p.pid !== pid && !have.has(p.pid)) found.push(p)
    }
    return found
  }

  /**
   * Poll {@link processes} until `predicate` holds for the list (e.g. "a `sleep 30` runs" or "no `sh -c` is
   * left"); resolves with that list. `Starting session` is logged before the user's command is spawned, and
   * processes exit a little after their channel closes, so tests wait for either rather than read once.
   */
  async waitForProcesses(
    predicate: (procs: ProcessInfo[]) => boolean,
    timeoutMs = START_TIMEOUT_MS,
  ): Promise<ProcessInfo[]> {
    const deadline = Date.now() + timeoutMs
    let wait = POLL_MIN_MS
    for (;;) {
      const procs = await this.processes()
      if (predicate(procs)) return procs
      if (Date.now() >= deadline) {
        const cmds = procs.map((p) => p.cmd).join(' | ')
        throw new InternalError(`sshd processes did not reach the expected state within ${timeoutMs} ms: ${cmds}`)
      }
      await delay(wait)
      wait = Math.min(wait * 2, POLL_MAX_MS)
    }
  }

  /** CPU used by this instance's processes since start, in µs; null without a cgroup of its own. */
  async cpuUsageUsec(): Promise<number | null> {
    return this.cgroup && this.#ownCgroup ? this.cgroup.cpuUsageUsec() : null
  }

  /** PSS of the listener and everything below it, in KiB. */
  async pssKb(): Promise<number> {
    const pids = [this.pid, ...(await this.processes()).map((p) => p.pid)].filter((p) => p !== 0)
    return (await Promise.all(pids.map(pssKb))).reduce((a, b) => a + b, 0)
  }

  /**
   * Stop the listener and every process below it (established connections included), keeping the dir.
   * Resolves once none of them is alive. Idempotent. `table`: a process table snapshot to reuse (a fleet
   * stopping hundreds of instances takes one).
   */
  async halt(table?: readonly ProcessInfo[]): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    const child = this.#child!
    const pid = child.pid!
    // Snapshot the tree first: once the listener is gone its children are re-parented and untraceable.
    const tree = descendantsOf(table ?? (await processTable()), pid).map((p) => p.pid)
    const all = [pid, ...tree, ...(this.cgroup && this.#ownCgroup ? await this.cgroup.pids() : [])]
    for (const p of all) signal(p, 'SIGTERM')
    const deadline = Date.now() + STOP_TIMEOUT_MS
    let wait = POLL_MIN_MS
    let killed = false
    // Bounded by the deadline; escalate to SIGKILL halfway.
    for (;;) {
      const alive = (await Promise.all(all.map(async (p) => ((await isAlive(p)) ? p : 0)))).filter((p) => p !== 0)
      if (alive.length === 0) break
      if (Date.now() >= deadline) {
        throw new InternalError(`sshd ${this.host}:${this.#port}: pids ${alive.join(',')} survived SIGKILL`)
      }
      if (!killed && Date.now() >= deadline - STOP_TIMEOUT_MS / 2) {
        killed = true
        for (const p of alive) signal(p, 'SIGKILL')
      }
      await delay(wait)
      wait = Math.min(wait * 2, POLL_MAX_MS)
    }
    await this.#exited
    liveListeners.delete(pid)
  }

  /** Stop the instance, remove its cgroup (if its own) and its temp dir. Idempotent. */
  async stop(): Promise<void> {
    await this.halt()
    if (this.cgroup && this.#ownCgroup) await this.cgroup.destroy()
    await rm(this.dir, { recursive: true, force: true })
  }

  /** Stop, then start again on the same address and port; optionally with a new host key. The log is kept. */
  async restart(opts: RestartOptions = {}): Promise<void> {
    await this.halt()
    if (opts.newHostKey) await this.#newHostKey()
    await this.#launch()
  }

  async #newHostKey(): Promise<void> {
    await keygen(this.hostKeyPath, `kay-test-host-${this.host}`)
    this.#hostKeyPublic = (await readFile(`${this.hostKeyPath}.pub`, 'utf8')).trim()
  }

  async #config(port: number): Promise<string> {
    const o = this.#opts
    const lines = [
      `ListenAddress ${this.host}:${port}`,
      `HostKey ${this.hostKeyPath}`,
      `PidFile ${join(this.dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${this.authorizedKeysPath}`,
      'StrictModes no',
      'UsePAM no',
      'KbdInteractiveAuthentication no',
      ...(o.authMethods === 'password'
        ? ['PasswordAuthentication yes', 'PubkeyAuthentication no', 'AuthenticationMethods password']
        : ['PasswordAuthentication no', 'PubkeyAuthentication yes']),
      'LogLevel VERBOSE',
      `AllowUsers ${SSHD_TEST_USER}`,
      'PermitRootLogin no',
      'UseDNS no',
      'ClientAliveInterval 0',
      'PrintMotd no',
      'PrintLastLog no',
      'X11Forwarding no',
      'Subsystem sftp internal-sftp',
    ]
    if (o.maxSessions !== undefined) lines.push(`MaxSessions ${o.maxSessions}`)
    if (o.maxStartups !== undefined) lines.push(`MaxStartups ${o.maxStartups}`)
    if (o.slowLogin) lines.push(`ForceCommand ${await this.#slowLoginWrapper(o.slowLogin)}`)
    // 9.8+ penalises sources that fail auth or crash the session child; tests dial from 127.0.0.1 a lot.
    const [major, minor] = await sshdVersion()
    if (major > 9 || (major === 9 && minor >= 8)) lines.push('PerSourcePenalties no')
    lines.push(...(o.extraConfig ?? []))
    return `${lines.join('\n')}\n`
  }

  async #slowLoginWrapper(slow: NonNullable<SshdOptions['slowLogin']>): Promise<string> {
    const path = join(this.dir, 'slow-login')
    const loops = Math.max(0, Math.floor(slow.cpuLoops ?? 0))
    const sleep = Math.max(0, slow.sleepMs ?? 0) / 1000
    const script = [
      '#!/bin/sh',
      `i=0; while [ "$i" -lt ${loops} ]; do i=$((i + 1)); done`,
      ...(sleep > 0 ? [`sleep ${sleep}`] : []),
      'if [ -n "$SSH_ORIGINAL_COMMAND" ]; then exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"; fi',
      'exec /bin/sh',
      '',
    ].join('\n')
    await writeFile(path, script, { mode: 0o755 })
    await chmod(path, 0o755)
    return path
  }

  async #launch(): Promise<void> {
    const fixedPort = this.#opts.port !== undefined || this.#port !== 0
    const timeoutMs = this.#opts.startTimeoutMs ?? START_TIMEOUT_MS
    for (let attempt = 1; ; attempt++) {
      const port = fixedPort ? this.#port : await freePort(this.host)
      await writeFile(this.configPath, await this.#config(port))
      const result = await this.#spawnAndWait(timeoutMs)
      if (result === 'ready') {
        this.#port = port
        return
      }
      const bindFailed = /Bind to port \d+ on \S+ failed|Cannot bind any address/.test(result)
      if (!bindFailed || fixedPort || attempt >= PORT_ATTEMPTS) {
        throw new InternalError(`sshd on ${this.host}:${port} did not start: ${result.trim()}`, {
          details: { dir: this.dir, attempt },
        })
      }
    }
  }

  /** Spawn the listener and wait for `Server listening` in the log; 'ready', or why not. */
  async #spawnAndWait(timeoutMs: number): Promise<string> {
    if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 })
    const logStart = (await stat(this.logPath)).size
    const argv = [SSHD_PATH, '-D', '-f', this.configPath, '-E', this.logPath]
    // With a cgroup, a shell joins it and then execs sshd (same pid), so no sshd process ever runs outside it.
    const child = this.cgroup
      ? spawn('/bin/sh', ['-c', 'echo $$ >"$0" && exec "$@"', this.cgroup.procsPath, ...argv], {
          stdio: ['ignore', 'ignore', 'pipe'],
          detached: true,
        })
      : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
    // detached: its own process group, so a signal sent to its group can never reach the test runner.
    this.#child = child
    this.#stopped = false
    this.#stderr = ''
    let exitCode: number | null | undefined
    this.#exited = new Promise((resolve) => {
      child.once('exit', (code, sig) => {
        exitCode = code ?? (sig ? -1 : null)
        resolve()
      })
      child.once('error', (err) => {
        this.#stderr += String(err)
        exitCode = -1
        resolve()
      })
    })
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (d: string) => {
      if (this.#stderr.length < 8192) this.#stderr += d
    })
    child.unref()
    ;(child.stderr as unknown as { unref?: () => void } | null)?.unref?.()
    if (child.pid !== undefined) trackListener(child.pid, this.dir)

    const deadline = Date.now() + timeoutMs
    let wait = POLL_MIN_MS
    // Bounded by the deadline. The log line is written right after listen(), so the port accepts connections;
    // polling the log rather than dialing keeps probe connections out of the log and out of MaxStartups.
    for (;;) {
      const fresh = await readFrom(this.logPath, logStart)
      if (fresh.split('\n').some((l) => SSHD_LOG.listening.test(l))) return 'ready'
      if (exitCode !== undefined) {
        this.#stopped = true
        if (child.pid !== undefined) liveListeners.delete(child.pid)
        return `exited (${exitCode}): ${fresh}${this.#stderr}`
      }
      if (Date.now() >= deadline) {
        await this.halt()
        return `no 'Server listening' line within ${timeoutMs} ms: ${fresh}${this.#stderr}`
      }
      await delay(wait)
      wait = Math.min(wait * 2, POLL_MAX_MS)
    }
  }
}

async function readFrom(path: string, offset: number): Promise<string> {
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    if (size <= offset) return ''
    const buf = Buffer.alloc(size - offset)
    await fh.read(buf, 0, buf.length, offset)
    return buf.toString('utf8')
  } finally {
    await fh.close()
  }
}

function checkOptions(opts: SshdOptions): void {
  const address = opts.address ?? '127.0.0.1'
  if (!isLoopbackAddress(address)) {
    throw new ConfigError(`sshd test address must be in 127.0.0.0/8, got '${address}'`)
  }
  if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535)) {
    throw new ConfigError(`sshd port must be 1..65535, got ${opts.port}`)
  }
  if (opts.maxSessions !== undefined && (!Number.isInteger(opts.maxSessions) || opts.maxSessions < 0)) {
    throw new ConfigError(`maxSessions must be an integer >= 0, got ${opts.maxSessions}`)
  }
  if (opts.maxStartups !== undefined && !/^\d+(:\d+:\d+)?$/.test(String(opts.maxStartups))) {
    throw new ConfigError(`maxStartups must be N or start:rate:full, got '${opts.maxStartups}'`)
  }
  for (const line of opts.extraConfig ?? []) {
    if (line.includes('\n')) throw new ConfigError('extraConfig lines must not contain newlines')
  }
}

/**
 * Start one sshd on loopback and wait until it listens. Remember to `stop()` it (an exit hook kills forgotten
 * listeners, but not their connections).
 */
export async function startSshd(opts: SshdOptions = {}): Promise<SshdServer> {
  checkOptions(opts)
  if (!sshdAvailable()) throw new ConfigError(`${SSHD_PATH} or user ${SSHD_TEST_USER} missing; run .ci/setup-sshd.sh`)
  await reapOrphans()
  const dir = await mkdtemp(join(opts.parentDir ?? tmpdir(), `kay-sshd-${process.pid}-`))
  // sshd opens authorized_keys as the login user: the dir must be traversable (not listable) by it.
  await chmod(dir, 0o711)
  const shared = opts.cgroup instanceof Cgroup ? opts.cgroup : null
  const own = shared === null && opts.cgroup !== false ? Cgroup.create('sshd') : null
  const server = new SshdServer(dir, opts, shared ?? own, own !== null)
  try {
    await server.init()
  } catch (err) {
    await server.stop().catch(() => undefined)
    throw err
  }
  return server
}

export interface FleetOptions extends Omit<SshdOptions, 'address' | 'cgroup'> {
  /** How many instances. */
  count: number
  /**
   * The first two octets, e.g. `127.77.` (default): instance i listens on 127.77.⌊i/254⌋.(i mod 254 + 1),
   * so host parts 0 and 255 are never used.
   */
  addressBase?: string
  /**
   * One port for every instance (each has its own address). Default: a free port probed on the first address.
   * Port 22 works as root when nothing listens on a wildcard address.
   */
  port?: number
  /** Instances started at once. Default {@link FLEET_START_CONCURRENCY}. */
  concurrency?: number
  /** Put the fleet in one cgroup v2 group when possible. Default true. */
  cgroup?: boolean
}

/** Many sshd instances, one per loopback address, each with its own host key. Start with {@link startSshdFleet}. */
export interface SshdFleet {
  readonly servers: readonly SshdServer[]
  /** Where the instances' dirs live. */
  readonly dir: string
  /** The fleet's cgroup dir, or null when the machine has no writable cgroup v2. */
  readonly cgroupPath: string | null
  /** Total CPU of every fleet process since start, in µs (all sshd processes and user commands); null without cgroup. */
  cpuUsageUsec(): Promise<number | null>
  /** Sum of PSS over every fleet process, in KiB. */
  pssKb(): Promise<number>
  /** Replace authorized_keys on every instance. */
  setAuthorizedKeys(keys: readonly string[]): Promise<void>
  /** Kill every fleet process, remove the cgroup and the dirs. Idempotent. */
  stop(): Promise<void>
}

/** The address of fleet instance `i` (0-based). */
export function fleetAddress(addressBase: string, i: number): string {
  return `${addressBase}${Math.floor(i / 254)}.${(i % 254) + 1}`
}

/** Start `count` sshd instances on 127.77.x.y (by default), `concurrency` at a time, in one cgroup if possible. */
export async function startSshdFleet(opts: FleetOptions): Promise<SshdFleet> {
  const { count, addressBase = '127.77.', concurrency = FLEET_START_CONCURRENCY, cgroup: wantCgroup = true } = opts
  if (!/^127\.\d{1,3}\.$/.test(addressBase) || Number(addressBase.split('.')[1]) > 255) {
    throw new ConfigError(`addressBase must look like '127.77.', got '${addressBase}'`)
  }
  if (!Number.isInteger(count) || count < 1 || count > 254 * 256) {
    throw new ConfigError(`fleet count must be 1..${254 * 256}, got ${count}`)
  }
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new ConfigError(`concurrency must be an integer >= 1, got ${concurrency}`)
  }
  if (!sshdAvailable()) throw new ConfigError(`${SSHD_PATH} or user ${SSHD_TEST_USER} missing; run .ci/setup-sshd.sh`)
  await reapOrphans()
  const dir = await mkdtemp(join(opts.parentDir ?? tmpdir(), `kay-fleet-${process.pid}-`))
  await chmod(dir, 0o711)
  const group = wantCgroup ? Cgroup.create('bench') : null
  const port = opts.port ?? (await freePort(fleetAddress(addressBase, 0)))
  const servers: SshdServer[] = new Array(count)
  const { count: _c, addressBase: _a, concurrency: _n, cgroup: _g, ...rest } = opts

  const stopAll = async (): Promise<void> => {
    const table = await processTable()
    await Promise.all(servers.filter(Boolean).map((s) => s.halt(table).catch(() => undefined)))
    if (group) await group.destroy()
    await rm(dir, { recursive: true, force: true })
  }

  let next = 0
  let failure: unknown
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < count) {
      const i = next++
      const sub = join(dir, String(i))
      await mkdir(sub, { mode: 0o711 })
      await chmod(sub, 0o711)
      const address = fleetAddress(addressBase, i)
      const server = new SshdServer(sub, { ...rest, address, port }, group, false)
      servers[i] = server
      try {
        await server.init()
      } catch (err) {
        failure ??= err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  if (failure !== undefined) {
    await stopAll()
    throw failure
  }

  let stopped: Promise<void> | undefined
  return {
    servers,
    dir,
    cgroupPath: group?.path ?? null,
    cpuUsageUsec: async () => (group ? group.cpuUsageUsec() : null),
    pssKb: async () => {
      const table = await processTable()
      const pids = group
        ? await group.pids()
        : servers.flatMap((s) => [s.pid, ...descendantsOf(table, s.pid).map((p) => p.pid)])
      return (await Promise.all(pids.map(pssKb))).reduce((a, b) => a + b, 0)
    },
    setAuthorizedKeys: async (keys) => {
      await Promise.all(servers.map((s) => s.setAuthorizedKeys(keys)))
    },
    stop: () => {
      stopped ??= stopAll()
      return stopped
    },
  }
}
