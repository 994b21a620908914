import { createServer, type Server as NetServer, type Socket } from 'node:net'
import ssh2, { type AuthContext, type Connection, type Session } from 'ssh2'
import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import { STREAM_FLAVOURS } from '../collection/commands.js'
import { ClosedError, ConfigError } from '../errors.js'
import { type ExecContext, type RunningCommand, runExec } from './commands.js'
import { type AuthorizedKey, generateHostKey, type HostKey, parseAuthorizedKeys } from './keys.js'
import { hostSeed, junkBytes, ProcModel, seededRandom } from './procfs.js'
import type {
  ResolvedHostSettings,
  RestartOptions,
  SimCounters,
  SimFleet,
  SimFleetOptions,
  SimFleetStats,
  SimHostHandle,
  SimHostInfo,
  SimHostSettings,
  SimHostStats,
} from './types.js'

const SshServer = ssh2.Server
type SshServer = InstanceType<typeof SshServer>

const DEFAULT_SETTINGS: ResolvedHostSettings = {
  refuse: false,
  handshakeDelayMs: 0,
  stallHandshake: false,
  garbageBanner: false,
  halfOpen: false,
  maxStartups: 0,
  maxSessions: 10,
  hostileChannels: false,
  procFault: 'none',
  streamFault: 'none',
  streamFlavours: [...STREAM_FLAVOURS],
  authMethods: ['publickey'],
  passwordOnly: false,
  extraMounts: 0,
  extraDisks: 0,
}

const MAX_HOSTS = 65_000
/** ssh2's server sends its own keepalive pings by default (15 s); sshd's ClientAliveInterval is 0. Push it past any test. */
const NO_SERVER_KEEPALIVE_MS = 2 ** 31 - 1
const IPS_PORT_ATTEMPTS = 5
/** Not an SSH identification: a stray HTTP answer, then binary with a bare CR (clients reject it at once). */
const GARBAGE_BANNER = Buffer.concat([
  Buffer.from('HTTP/1.1 400 Bad Request\r\nServer: not-ssh\r\n\r\n'),
  Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x01]),
  junkBytes(64, seededRandom(7)),
])

function zeroCounters(): SimCounters {
  return {
    accepted: 0,
    refused: 0,
    startupsDropped: 0,
    handshakesStarted: 0,
    handshakesCompleted: 0,
    authFailures: 0,
    passwordAttempts: 0,
    channelsOpened: 0,
    channelsRejected: 0,
    maxConcurrentChannels: 0,
    commands: 0,
    streamRequests: 0,
    globalRequests: 0,
    signalsReceived: 0,
    hostileAccepted: 0,
    hostileRefused: 0,
  }
}

/** Check and fill in a settings patch. Bad values → KAY_CONFIG naming the field. */
function applySettings(base: ResolvedHostSettings, patch: SimHostSettings, where: string): ResolvedHostSettings {
  const out: ResolvedHostSettings = { ...base }
  for (const [k, v] of Object.entries(patch) as Array<[keyof SimHostSettings, unknown]>) {
    if (v === undefined) continue
    if (!(k in DEFAULT_SETTINGS)) throw new ConfigError(`${where}: unknown setting '${k}'`)
    const expected = typeof DEFAULT_SETTINGS[k]
    const ok = Array.isArray(DEFAULT_SETTINGS[k]) ? Array.isArray(v) : typeof v === expected
    if (!ok)
      throw new ConfigError(
        `${where}: setting '${k}' must be ${Array.isArray(DEFAULT_SETTINGS[k]) ? 'an array' : `a ${expected}`}`,
      )
    if (typeof v === 'number' && (!Number.isFinite(v) || v < 0)) {
      throw new ConfigError(`${where}: setting '${k}' must be a finite number >= 0, got ${v}`)
    }
    ;(out as unknown as Record<string, unknown>)[k] = Array.isArray(v) ? [...v] : v
  }
  return out
}

/** One accepted TCP connection. Small on purpose: thousands are held at once. */
interface Conn {
  readonly socket: Socket
  /** 'pre': accepted, not yet handed to ssh2 (delay, stall, garbage, held by halfOpen); 'ssh': handshaking; 'ready': authenticated. */
  phase: 'pre' | 'ssh' | 'ready'
  /** Counted in the unauthenticated (MaxStartups) figures. */
  pending: boolean
  /** Reads and writes stopped by halfOpen. */
  halted: boolean
  /** Waiting in 'pre' only for halfOpen to clear. */
  held: boolean
  channels: number
  delay: TimerHandle | undefined
  cleanups: Set<() => void> | undefined
}

class Fleet implements SimFleet {
  readonly clock: Clock
  readonly seed: number
  readonly authorized: AuthorizedKey[]
  readonly users: ReadonlySet<string> | undefined
  readonly sharedMaxStartups: number
  readonly hostSims: HostSim[] = []
  readonly #byName = new Map<string, HostSim>()
  readonly #timers = new Set<TimerHandle>()
  readonly #sleepers = new Set<() => void>()
  closed = false
  #closing: Promise<void> | undefined
  /** Accepted, not authenticated, not closed, fleet-wide. */
  pending = 0
  maxPending = 0

  constructor(opts: SimFleetOptions) {
    this.clock = opts.clock ?? systemClock
    this.seed = opts.seed ?? 1
    this.authorized = parseAuthorizedKeys(opts.authorizedKeys)
    this.users = opts.users ? new Set(opts.users) : undefined
    this.sharedMaxStartups = opts.sharedMaxStartups ?? 0
  }

  get hosts(): readonly SimHostInfo[] {
    return this.hostSims.map((h) => h.info)
  }

  add(h: HostSim): void {
    this.hostSims.push(h)
    this.#byName.set(h.name, h)
  }

  host(which: number | string): HostSim {
    const h = typeof which === 'number' ? this.hostSims[which] : this.#byName.get(which)
    if (!h) throw new ConfigError(`no simulated host ${JSON.stringify(which)} (fleet has ${this.hostSims.length})`)
    return h
  }

  setFault(which: number | string, settings: SimHostSettings): void {
    this.host(which).setFault(settings)
  }

  drop(which: number | string): void {
    this.host(which).drop()
  }

  restart(which: number | string, opts?: RestartOptions): Promise<SimHostInfo> {
    return this.host(which).restart(opts)
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const handle: TimerHandle = this.clock.setTimeout(() => {
      this.#timers.delete(handle)
      fn()
    }, ms)
    this.#timers.add(handle)
    return handle
  }

  clearTimer(handle: TimerHandle | undefined): void {
    if (handle === undefined) return
    this.#timers.delete(handle)
    this.clock.clearTimeout(handle)
  }

  /** Resolves after `ms`, or at once when the fleet closes (so nothing waits on a cleared timer). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve()
      const wake = (): void => {
        this.#sleepers.delete(wake)
        this.clearTimer(handle)
        resolve()
      }
      const handle = this.setTimer(wake, ms)
      this.#sleepers.add(wake)
    })
  }

  addPending(): void {
    this.pending++
    if (this.pending > this.maxPending) this.maxPending = this.pending
  }

  stats(): SimFleetStats {
    const hosts = this.hostSims.map((h) => h.stats())
    const totals = { ...zeroCounters(), currentConnections: 0 }
    for (const h of hosts) {
      for (const k of Object.keys(totals) as Array<keyof typeof totals>) {
        if (k === 'maxConcurrentChannels') totals[k] = Math.max(totals[k], h[k])
        else totals[k] += h[k]
      }
    }
    return { hosts, totals, currentHandshakes: this.pending, maxConcurrentHandshakes: this.maxPending }
  }

  resetStats(): void {
    for (const h of this.hostSims) h.resetStats()
    this.maxPending = this.pending
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.closed = true
      const closing = this.hostSims.map((h) => h.shutdown())
      for (const t of this.#timers) this.clock.clearTimeout(t)
      this.#timers.clear()
      for (const wake of [...this.#sleepers]) wake()
      await Promise.all(closing)
    })()
    return this.#closing
  }
}

class HostSim implements SimHostHandle {
  readonly index: number
  readonly name: string
  readonly address: string
  port: number
  #fleet: Fleet
  #key: HostKey
  #ssh: SshServer
  #listener: NetServer | undefined
  #settings: ResolvedHostSettings
  readonly #conns = new Set<Conn>()
  /** remote address:port → connection, to find the Conn behind an ssh2 connection event. */
  readonly #byPeer = new Map<string, Conn>()
  #model: ProcModel | undefined
  readonly #counters = zeroCounters()
  #pending = 0
  #restarting: Promise<SimHostInfo> | undefined
  readonly #exec: ExecContext

  constructor(fleet: Fleet, index: number, name: string, address: string, settings: ResolvedHostSettings) {
    this.#fleet = fleet
    this.index = index
    this.name = name
    this.address = address
    this.port = 0
    this.#settings = settings
    this.#key = generateHostKey()
    this.#ssh = this.#makeSsh()
    this.#exec = {
      hostName: name,
      settings: () => this.#settings,
      model: () => this.#procModel(),
      counters: this.#counters,
      clock: fleet.clock,
      setTimer: (fn, ms) => fleet.setTimer(fn, ms),
      clearTimer: (h) => fleet.clearTimer(h),
      onConnectionClose: () => () => {},
    }
  }

  get info(): SimHostInfo {
    return {
      name: this.name,
      host: this.address,
      port: this.port,
      hostKey: this.#key.publicLine,
      fingerprint: this.#key.fingerprint,
    }
  }

  get settings(): Readonly<ResolvedHostSettings> {
    return this.#settings
  }

  #procModel(): ProcModel {
    const now = this.#fleet.clock.now()
    if (this.#model) this.#model.advance(now)
    else {
      const shape = { host: this.name, extraMounts: this.#settings.extraMounts, extraDisks: this.#settings.extraDisks }
      this.#model = new ProcModel(hostSeed(this.#fleet.seed, this.index), now, shape)
    }
    return this.#model
  }

  #makeSsh(): SshServer {
    const ssh = new SshServer({
      hostKeys: [{ key: this.#key.parsed }],
      ident: 'OpenSSH_9.2p1 Debian-2+deb12u3',
      keepaliveInterval: NO_SERVER_KEEPALIVE_MS,
    })
    ssh.on('connection', (client: Connection, info: { ip: string; port: number }) => {
      const conn = this.#byPeer.get(`${info.ip}:${info.port}`)
      if (!conn) {
        client.end()
        return
      }
      this.#onSsh(conn, client)
    })
    ssh.on('error', () => {})
    return ssh
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const srv = createServer({ noDelay: true }, (socket) => this.#onAccept(socket))
      const onError = (err: Error): void => {
        srv.close()
        reject(err)
      }
      srv.once('error', onError)
      srv.listen({ host: this.address, port, exclusive: true }, () => {
        srv.removeListener('error', onError)
        if (this.#fleet.closed) {
          // close() ran while this listen was in flight (start-up or restart): do not leave a listener behind.
          srv.close()
          reject(new ClosedError('simulated fleet is closed'))
          return
        }
        srv.on('error', () => {})
        const addr = srv.address()
        if (addr && typeof addr === 'object') this.port = addr.port
        this.#listener = srv
        resolve()
      })
    })
  }

  #closeListener(): Promise<void> {
    const srv = this.#listener
    this.#listener = undefined
    for (const c of this.#conns) c.socket.destroy()
    if (!srv) return Promise.resolve()
    return new Promise((resolve) => srv.close(() => resolve()))
  }

  shutdown(): Promise<void> {
    return this.#closeListener()
  }

  // --- accept path -----------------------------------------------------------------------------------------

  #onAccept(socket: Socket): void {
    const s = this.#settings
    const fleet = this.#fleet
    this.#counters.accepted++
    socket.setNoDelay(true)
    socket.on('error', () => {})
    if (fleet.closed) {
      socket.destroy()
      return
    }
    if (s.refuse) {
      this.#counters.refused++
      // A reset, always: a plain close would be a FIN or a reset depending on whether the client's banner had
      // arrived yet, and the client's error with it.
      socket.resetAndDestroy()
      return
    }
    if (
      (s.maxStartups > 0 && this.#pending >= s.maxStartups) ||
      (fleet.sharedMaxStartups > 0 && fleet.pending >= fleet.sharedMaxStartups)
    ) {
      // sshd drops past MaxStartups before sending its banner.
      this.#counters.startupsDropped++
      socket.destroy()
      return
    }
    const conn: Conn = {
      socket,
      phase: 'pre',
      pending: true,
      halted: false,
      held: false,
      channels: 0,
      delay: undefined,
      cleanups: undefined,
    }
    this.#pending++
    fleet.addPending()
    this.#conns.add(conn)
    const peer = `${socket.remoteAddress}:${socket.remotePort}`
    this.#byPeer.set(peer, conn)
    socket.once('close', () => this.#onClose(conn, peer))

    if (s.garbageBanner) {
      socket.write(GARBAGE_BANNER)
      socket.resume() // read and discard, so the client's close is seen
      return
    }
    if (s.stallHandshake) {
      socket.resume()
      return
    }
    if (s.halfOpen) {
      this.#hold(conn)
      return
    }
    if (s.handshakeDelayMs > 0) {
      conn.delay = fleet.setTimer(() => {
        conn.delay = undefined
        this.#handOver(conn)
      }, s.handshakeDelayMs)
      return
    }
    this.#handOver(conn)
  }

  #hold(conn: Conn): void {
    conn.held = true
    conn.socket.pause()
  }

  #handOver(conn: Conn): void {
    if (conn.socket.destroyed || this.#fleet.closed) return
    if (this.#settings.halfOpen) {
      this.#hold(conn)
      return
    }
    conn.held = false
    conn.phase = 'ssh'
    this.#counters.handshakesStarted++
    this.#ssh.injectSocket(conn.socket)
  }

  #releasePending(conn: Conn): void {
    if (!conn.pending) return
    conn.pending = false
    this.#pending--
    this.#fleet.pending--
  }

  #onClose(conn: Conn, peer: string): void {
    this.#releasePending(conn)
    this.#conns.delete(conn)
    if (this.#byPeer.get(peer) === conn) this.#byPeer.delete(peer)
    this.#fleet.clearTimer(conn.delay)
    conn.delay = undefined
    if (conn.cleanups) {
      const fns = [...conn.cleanups]
      conn.cleanups = undefined
      for (const fn of fns) fn()
    }
  }

  // --- SSH path --------------------------------------------------------------------------------------------

  #onSsh(conn: Conn, client: Connection): void {
    client.on('error', () => {})
    countGlobalRequests(client, () => this.#counters.globalRequests++)
    client.on('authentication', (ctx) => this.#auth(ctx))
    client.on('ready', () => {
      conn.phase = 'ready'
      this.#releasePending(conn)
      this.#counters.handshakesCompleted++
      if (this.#settings.hostileChannels) this.#hostile(client)
    })
    client.on('session', (accept, reject) => {
      const max = this.#settings.maxSessions
      if (max > 0 && conn.channels >= max) {
        // ssh2 rejects a reserved channel with reason 2 (SSH_OPEN_CONNECT_FAILED), as sshd does past MaxSessions.
        this.#counters.channelsRejected++
        reject()
        return
      }
      const session = accept()
      this.#onSession(conn, session)
    })
  }

  #auth(ctx: AuthContext): void {
    const s = this.#settings
    const counters = this.#counters
    const methods = s.passwordOnly ? (['password'] as const) : s.authMethods
    const fail = (): void => {
      counters.authFailures++
      ctx.reject([...methods])
    }
    if (ctx.method === 'password') counters.passwordAttempts++
    if (ctx.method === 'none') {
      ctx.reject([...methods])
      return
    }
    const users = this.#fleet.users
    if ((users && !users.has(ctx.username)) || !(methods as readonly string[]).includes(ctx.method)) {
      fail()
      return
    }
    if (ctx.method !== 'publickey') {
      // no password ever matches
      fail()
      return
    }
    const key = this.#fleet.authorized.find((k) => k.blob.equals(ctx.key.data))
    if (!key) {
      fail()
      return
    }
    // No signature: the client asks whether this key would do (SSH_MSG_USERAUTH_PK_OK).
    if (!ctx.signature || !ctx.blob) {
      ctx.accept()
      return
    }
    if (key.parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true) {
      ctx.accept()
      return
    }
    fail()
  }

  #hostile(client: Connection): void {
    const c = this.#counters
    const done = (err: Error | undefined, ch?: { end(): void }): void => {
      if (err) c.hostileRefused++
      else {
        c.hostileAccepted++
        ch?.end()
      }
    }
    try {
      client.forwardOut('127.0.0.1', 2222, '127.0.0.1', 40_000, done)
      client.x11('127.0.0.1', 6010, done)
      // An unsolicited global request, want-reply: the client must answer (or ignore) it and carry on.
      const proto = (client as unknown as { _protocol?: { ping?: () => void } })._protocol
      if (typeof proto?.ping === 'function') proto.ping()
    } catch {
      // the connection went away meanwhile
    }
  }

  #onSession(conn: Conn, session: Session): void {
    const c = this.#counters
    conn.channels++
    c.channelsOpened++
    if (conn.channels > c.maxConcurrentChannels) c.maxConcurrentChannels = conn.channels
    let open = true
    session.once('close', () => {
      if (!open) return
      open = false
      conn.channels--
    })
    let running: RunningCommand | undefined
    session.on('signal', (accept, _reject, info) => {
      c.signalsReceived++
      accept?.()
      running?.signal(info.name)
    })
    session.on('shell', (_accept, reject) => reject())
    session.on('exec', (accept, _reject, info) => {
      c.commands++
      const channel = accept()
      const ctx: ExecContext = {
        ...this.#exec,
        onConnectionClose: (fn) => {
          conn.cleanups ??= new Set()
          conn.cleanups.add(fn)
          return () => conn.cleanups?.delete(fn)
        },
      }
      running = runExec(ctx, channel, info.command)
    })
  }

  // --- controls --------------------------------------------------------------------------------------------

  setFault(patch: SimHostSettings): void {
    const before = this.#settings
    this.#settings = applySettings(before, patch, `host ${this.name}`)
    if (before.halfOpen !== this.#settings.halfOpen) {
      if (this.#settings.halfOpen) this.#haltAll()
      else this.#resumeAll()
    }
  }

  #haltAll(): void {
    for (const conn of this.#conns) {
      if (conn.phase === 'pre') continue // held or delayed: #handOver holds it
      if (conn.halted) continue
      conn.halted = true
      conn.socket.pause()
      conn.socket.cork()
    }
  }

  #resumeAll(): void {
    for (const conn of [...this.#conns]) {
      if (conn.halted) {
        conn.halted = false
        conn.socket.uncork()
        conn.socket.resume()
      } else if (conn.held && !conn.delay) {
        this.#handOver(conn)
      }
    }
  }

  drop(): void {
    for (const conn of this.#conns) conn.socket.destroy()
  }

  restart(opts: RestartOptions = {}): Promise<SimHostInfo> {
    if (this.#fleet.closed) return Promise.reject(new ClosedError('simulated fleet is closed'))
    const downMs = opts.downMs ?? 0
    if (!Number.isFinite(downMs) || downMs < 0) {
      return Promise.reject(new ConfigError(`restart downMs must be a finite number >= 0, got ${downMs}`))
    }
    const prev = this.#restarting ?? Promise.resolve(this.info)
    const run = prev.then(async () => {
      const port = this.port
      await this.#closeListener()
      if (opts.newHostKey) {
        this.#key = generateHostKey()
        this.#ssh = this.#makeSsh()
      }
      if (downMs > 0) await this.#fleet.sleep(downMs)
      if (this.#fleet.closed) throw new ClosedError('simulated fleet closed during restart')
      await this.listen(port)
      return this.info
    })
    this.#restarting = run.catch(() => this.info)
    return run
  }

  stats(): SimHostStats {
    return { name: this.name, ...this.#counters, currentConnections: this.#conns.size }
  }

  resetStats(): void {
    // In place: running commands and connections hold a reference to this object.
    Object.assign(this.#counters, zeroCounters())
    for (const conn of this.#conns) {
      if (conn.channels > this.#counters.maxConcurrentChannels) this.#counters.maxConcurrentChannels = conn.channels
    }
  }
}

/**
 * Count global requests (keepalive probes and the like). ssh2 answers unknown ones with REQUEST_FAILURE on its
 * own and emits nothing, so this wraps its per-connection handler table; if that internal ever changes, the
 * counter simply stays at zero.
 */
function countGlobalRequests(client: Connection, count: () => void): void {
  const handlers = (client as unknown as { _protocol?: { _handlers?: Record<string, unknown> } })._protocol?._handlers
  const orig = handlers?.GLOBAL_REQUEST
  if (!handlers || typeof orig !== 'function') return
  handlers.GLOBAL_REQUEST = (...args: unknown[]) => {
    count()
    return (orig as (...a: unknown[]) => unknown)(...args)
  }
}

function hostName(prefix: string, index: number, total: number): string {
  return `${prefix}${String(index + 1).padStart(Math.max(4, String(total).length), '0')}`
}

/** 127.77.x.y for host i (y in 1..254, so no address ends in .0 or .255). */
function ipFor(index: number): string {
  return `127.77.${Math.floor(index / 254)}.${(index % 254) + 1}`
}

/**
 * Start a simulated SSH fleet in this process: `opts.hosts` hosts on loopback, each with its own ed25519 host
 * key, public-key auth for `opts.authorizedKeys`, the collection protocol of docs/collection-protocol.md and
 * run-time fault knobs. Close it with `fleet.close()`.
 */
export async function startSimFleet(opts: SimFleetOptions): Promise<SimFleet> {
  const n = opts.hosts
  if (!Number.isInteger(n) || n < 1 || n > MAX_HOSTS) {
    throw new ConfigError(`hosts must be an integer in 1..${MAX_HOSTS}, got ${n}`)
  }
  if (
    opts.sharedMaxStartups !== undefined &&
    !(Number.isInteger(opts.sharedMaxStartups) && opts.sharedMaxStartups >= 0)
  ) {
    throw new ConfigError(`sharedMaxStartups must be an integer >= 0, got ${opts.sharedMaxStartups}`)
  }
  const mode = opts.bindAddresses ?? 'ports'
  if (mode !== 'ports' && mode !== 'ips')
    throw new ConfigError(`bindAddresses must be 'ports' or 'ips', got ${String(mode)}`)
  if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 0 && opts.port < 65_536)) {
    throw new ConfigError(`port must be an integer in 0..65535, got ${opts.port}`)
  }
  const fleet = new Fleet(opts)
  const defaults = applySettings(DEFAULT_SETTINGS, opts.hostDefaults ?? {}, 'hostDefaults')
  const prefix = opts.namePrefix ?? 'sim'
  for (let i = 0; i < n; i++) {
    const override = opts.hostOverrides?.[i]
    const settings = override ? applySettings(defaults, override, `hostOverrides[${i}]`) : defaults
    fleet.add(new HostSim(fleet, i, hostName(prefix, i, n), mode === 'ips' ? ipFor(i) : '127.0.0.1', settings))
  }
  try {
    if (mode === 'ports') {
      await Promise.all(fleet.hostSims.map((h) => h.listen(0)))
    } else {
      await listenOnOnePort(fleet.hostSims, opts.port ?? 0)
    }
  } catch (err) {
    await fleet.close()
    throw err
  }
  return fleet
}

/** Every host on its own address and one shared port; an OS-assigned port taken on another address is retried. */
async function listenOnOnePort(hosts: HostSim[], port: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const [first, ...rest] = hosts
    if (!first) return
    await first.listen(port)
    try {
      await Promise.all(rest.map((h) => h.listen(first.port)))
      return
    } catch (err) {
      await Promise.all(hosts.map((h) => h.shutdown()))
      const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE'
      if (port !== 0 || !inUse || attempt >= IPS_PORT_ATTEMPTS) throw err
    }
  }
}
