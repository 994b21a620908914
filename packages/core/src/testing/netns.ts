/**
 * Network namespaces for fault tests: a namespace the test creates, joined to the root namespace by one veth
 * pair with a private /30, so a real sshd can run behind a link the test can cut without closing any socket
 * (a half-open path), and heal again.
 *
 * Traffic on the pair never leaves the machine: it crosses the test's own veth into the test's own namespace.
 * The addresses are link-local (169.254.0.0/16), chosen per process and checked against every address already
 * assigned, so concurrent test processes do not collide. Only namespaces and links this module made are ever
 * touched: names carry the owner pid (`kayt-<pid>-<n>`, links `kyo<pid>n<n>` / `kyi<pid>n<n>`), and leftovers
 * of a dead owner are removed on the next start.
 *
 * Machine facts (kernel 6.18 here, measured): `ip netns` and veth work as root; `tc … netem` may be missing
 * (no sch_netem module), so {@link NetNamespace.netemAvailable} probes it; there is no nft/iptables. Setting
 * the inner end down is the portable way to drop every packet: the outer end loses carrier and drops what it
 * is given, and neither TCP endpoint sees an error or a reset.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ConfigError, InternalError } from '../errors.js'
import { descendantsOf, isAlive, processTable, signal } from './procs.js'
import { SSHD_LOG, SSHD_PATH, type SshdOptions, type SshdServer, startSshd } from './sshd.js'

const execFileP = promisify(execFile)

/** Absolute, as sshd needs for its own re-exec; `ip netns exec` execs in place (the pid is kept). */
export const IP_PATH = existsSync('/usr/sbin/ip') ? '/usr/sbin/ip' : '/sbin/ip'
export const TC_PATH = existsSync('/usr/sbin/tc') ? '/usr/sbin/tc' : '/sbin/tc'
const PREFIX = 'kayt-'
const START_TIMEOUT_MS = 5_000
const STOP_TIMEOUT_MS = 3_000
/** /30 blocks tried when looking for a free one. */
const SUBNET_ATTEMPTS = 64

/** Whether this process can make namespaces: root, with `ip` installed. */
export function netnsAvailable(): boolean {
  return process.getuid?.() === 0 && existsSync(IP_PATH)
}

async function ip(args: readonly string[]): Promise<string> {
  const { stdout } = await execFileP(IP_PATH, [...args])
  return stdout
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Namespaces still alive, deleted synchronously if the process exits without destroying them. */
const live = new Set<string>()
let exitHook = false
function track(name: string): void {
  live.add(name)
  if (exitHook) return
  exitHook = true
  process.once('exit', () => {
    for (const n of live) {
      try {
        execFileSync(IP_PATH, ['netns', 'del', n], { stdio: 'ignore' })
      } catch {}
    }
  })
}

let janitor: Promise<void> | undefined
/** Once per process: delete `kayt-<pid>-…` namespaces whose owner process is gone (their veth pairs go with them). */
function reapStale(): Promise<void> {
  janitor ??= (async () => {
    const names = (await ip(['netns', 'list'])).split('\n').map((l) => l.split(/\s+/)[0] ?? '')
    for (const n of names) {
      const m = /^kayt-(\d+)-\d+$/.exec(n)
      if (!m || Number(m[1]) === process.pid || (await isAlive(Number(m[1])))) continue
      await ip(['netns', 'del', n]).catch(() => undefined)
    }
  })().catch(() => undefined)
  return janitor
}

let seq = 0

/** Pick a /30 in 169.254.0.0/16 that no interface uses yet; returns the outer and inner addresses. */
async function freeSubnet(): Promise<[string, string]> {
  const used = await ip(['-4', '-o', 'addr', 'show'])
  const start = (process.pid * 7 + seq * 13) % (250 * 64)
  for (let i = 0; i < SUBNET_ATTEMPTS; i++) {
    const block = (start + i) % (250 * 64)
    const third = 1 + Math.floor(block / 64) // 169.254.0.x and .255.x are reserved by RFC 3927
    const base = (block % 64) * 4
    const net = `169.254.${third}.`
    if (!used.includes(` ${net}${base + 1}/`) && !used.includes(` ${net}${base + 2}/`)) {
      return [`${net}${base + 1}`, `${net}${base + 2}`]
    }
  }
  throw new InternalError('no free /30 in 169.254.0.0/16 for a test namespace')
}

/**
 * A namespace made by {@link createNetns}: `outerAddress` (root namespace) and `innerAddress` (inside) are the two
 * ends of one veth pair.
 */
export class NetNamespace {
  readonly name: string
  /** The veth end in the root namespace. */
  readonly outerIf: string
  /** The veth end inside the namespace. */
  readonly innerIf: string
  readonly outerAddress: string
  readonly innerAddress: string
  #destroyed = false
  #netem: boolean | undefined

  /** @internal use {@link createNetns}. */
  constructor(name: string, outerIf: string, innerIf: string, outerAddress: string, innerAddress: string) {
    this.name = name
    this.outerIf = outerIf
    this.innerIf = innerIf
    this.outerAddress = outerAddress
    this.innerAddress = innerAddress
  }

  /** argv that runs `argv` inside the namespace (`ip netns exec` keeps the pid: it execs in place). */
  wrap(argv: readonly string[]): string[] {
    return [IP_PATH, 'netns', 'exec', this.name, ...argv]
  }

  /** Run a command inside the namespace; rejects on a non-zero exit. */
  async exec(argv: readonly string[]): Promise<string> {
    const [cmd, ...args] = this.wrap(argv)
    return (await execFileP(cmd!, args)).stdout
  }

  /**
   * Drop every packet on the path, closing nothing: the inner end goes down, the outer end loses carrier.
   * Sockets on both sides stay ESTABLISHED and see neither a FIN nor a reset.
   */
  async cut(): Promise<void> {
    await this.exec([IP_PATH, 'link', 'set', this.innerIf, 'down'])
  }

  /** Undo {@link cut}: bring the inner end up again and wait until the outer end has carrier. */
  async heal(): Promise<void> {
    await this.exec([IP_PATH, 'link', 'set', this.innerIf, 'up'])
    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      if (!/NO-CARRIER/.test(await ip(['link', 'show', 'dev', this.outerIf]))) return
      if (Date.now() >= deadline)
        throw new InternalError(`${this.outerIf}: no carrier ${START_TIMEOUT_MS} ms after heal`)
      await delay(10)
    }
  }

  /** Whether `tc qdisc … netem` works on this kernel (probed once on the outer end, then removed). */
  async netemAvailable(): Promise<boolean> {
    if (this.#netem !== undefined) return this.#netem
    try {
      await execFileP(TC_PATH, ['qdisc', 'add', 'dev', this.outerIf, 'root', 'netem', 'delay', '0ms'])
      await execFileP(TC_PATH, ['qdisc', 'del', 'dev', this.outerIf, 'root'])
      this.#netem = true
    } catch {
      this.#netem = false
    }
    return this.#netem
  }

  /** Delay every packet leaving the outer end by `ms` (netem; check {@link netemAvailable} first). */
  async setDelay(ms: number): Promise<void> {
    if (!Number.isInteger(ms) || ms < 0) throw new ConfigError(`delay must be an integer >= 0 ms, got ${ms}`)
    await execFileP(TC_PATH, ['qdisc', 'replace', 'dev', this.outerIf, 'root', 'netem', 'delay', `${ms}ms`])
  }

  /** Remove the netem qdisc set by {@link setDelay} (no-op if none). */
  async clearDelay(): Promise<void> {
    await execFileP(TC_PATH, ['qdisc', 'del', 'dev', this.outerIf, 'root']).catch(() => undefined)
  }

  /** Delete the namespace; its veth pair goes with it. Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return
    this.#destroyed = true
    await ip(['netns', 'del', this.name]).catch(() => undefined)
    // The outer end disappears with its peer; delete it explicitly if the kernel has not yet.
    await ip(['link', 'del', this.outerIf]).catch(() => undefined)
    live.delete(this.name)
  }
}

/**
 * Make a namespace `kayt-<pid>-<n>` with `lo` up and a veth pair carrying a free link-local /30. Remember to
 * `destroy()` it (an exit hook deletes forgotten ones).
 */
export async function createNetns(): Promise<NetNamespace> {
  if (!netnsAvailable()) throw new ConfigError(`network namespaces need root and ${IP_PATH}`)
  await reapStale()
  const n = seq++
  const name = `${PREFIX}${process.pid}-${n}`
  const outerIf = `kyo${process.pid}n${n}`
  const innerIf = `kyi${process.pid}n${n}`
  if (outerIf.length > 15) throw new InternalError(`interface name too long: ${outerIf}`)
  const [outerAddress, innerAddress] = await freeSubnet()
  const ns = new NetNamespace(name, outerIf, innerIf, outerAddress, innerAddress)
  await ip(['netns', 'add', name])
  track(name)
  try {
    await ip(['link', 'add', outerIf, 'type', 'veth', 'peer', 'name', innerIf])
    await ip(['link', 'set', innerIf, 'netns', name])
    await ip(['addr', 'add', `${outerAddress}/30`, 'dev', outerIf])
    await ip(['link', 'set', outerIf, 'up'])
    await ns.exec([IP_PATH, 'addr', 'add', `${innerAddress}/30`, 'dev', innerIf])
    await ns.exec([IP_PATH, 'link', 'set', innerIf, 'up'])
    await ns.exec([IP_PATH, 'link', 'set', 'lo', 'up'])
    await ns.heal()
  } catch (err) {
    await ns.destroy()
    throw err
  }
  return ns
}

/** A real sshd listening on a namespace's inner address. */
export interface NetnsSshd {
  /** The instance's files (config, keys, authorized_keys, log); its own loopback listener is stopped. */
  readonly server: SshdServer
  readonly host: string
  readonly port: number
  readonly user: string
  /** The listener's pid inside the namespace. */
  readonly pid: number
  /** How many log lines match `pattern` (see {@link SSHD_LOG}). */
  count(pattern: RegExp): Promise<number>
  /** Kill the listener and every connection below it, remove the instance dir. Idempotent. */
  stop(): Promise<void>
}

/**
 * Start a real sshd inside `ns`, listening on `ns.innerAddress:port`. The instance (dir, host key, config,
 * authorized_keys) is made by {@link startSshd} on loopback, whose listener is then stopped and the same config,
 * with the listen address changed, run again with `ip netns exec`.
 */
export async function startSshdInNetns(
  ns: NetNamespace,
  opts: Omit<SshdOptions, 'address' | 'port' | 'cgroup'> & { port?: number } = {},
): Promise<NetnsSshd> {
  const port = opts.port ?? 2222
  const { port: _p, ...rest } = opts
  const server = await startSshd({ ...rest, cgroup: false })
  let child: ChildProcess | undefined
  try {
    await server.halt()
    const cfg = (await readFile(server.configPath, 'utf8')).replace(
      /^ListenAddress .*$/m,
      `ListenAddress ${ns.innerAddress}:${port}`,
    )
    const configPath = join(server.dir, 'sshd_config.netns')
    await writeFile(configPath, cfg)
    const logStart = (await readFile(server.logPath, 'utf8')).length
    const argv = ns.wrap([SSHD_PATH, '-D', '-f', configPath, '-E', server.logPath])
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
    child = c
    let stderr = ''
    let exited = false
    c.stderr?.setEncoding('utf8')
    c.stderr?.on('data', (d: string) => {
      if (stderr.length < 8192) stderr += d
    })
    c.once('exit', () => {
      exited = true
    })
    c.unref()
    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      const fresh = (await readFile(server.logPath, 'utf8')).slice(logStart)
      if (fresh.split('\n').some((l) => SSHD_LOG.listening.test(l))) break
      if (exited || Date.now() >= deadline) {
        throw new InternalError(`sshd in ${ns.name} did not start: ${fresh}${stderr}`)
      }
      await delay(10)
    }
  } catch (err) {
    if (child?.pid) signal(child.pid, 'SIGKILL')
    await server.stop().catch(() => undefined)
    throw err
  }
  const pid = child.pid!
  let stopped: Promise<void> | undefined
  return {
    server,
    host: ns.innerAddress,
    port,
    user: server.user,
    pid,
    count: (pattern) => server.count(pattern),
    stop: () => {
      stopped ??= (async () => {
        const all = [pid, ...descendantsOf(await processTable(), pid).map((p) => p.pid)]
        for (const p of all) signal(p, 'SIGKILL')
        const deadline = Date.now() + STOP_TIMEOUT_MS
        for (;;) {
          const alive = (await Promise.all(all.map(isAlive))).some(Boolean)
          if (!alive) break
          if (Date.now() >= deadline) throw new InternalError(`sshd in ${ns.name}: pids survived SIGKILL`)
          await delay(10)
        }
        await server.stop()
      })()
      return stopped
    },
  }
}
