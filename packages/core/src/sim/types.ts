import type { ParsedKey } from 'ssh2'
import type { Clock } from '../clock.js'
import type { StreamFlavour } from '../collection/commands.js'

/** The loop flavours of `: kay-stream v1 <flavour> <token>;` (docs/collection-protocol.md). */
export type { StreamFlavour }

/**
 * How the stream loop misbehaves.
 * - `forge-token`: end markers carry a wrong token.
 * - `stale-seq`: end markers replay the previous seq.
 * - `split-marker`: the end marker goes out in 2–3 separate writes (still a valid frame).
 * - `garbage`: random bytes instead of a frame.
 * - `stall`: stops answering, keeps the channel open.
 * - `exit`: the loop exits with status 1 after the next request (no answer).
 */
export type StreamFault = 'none' | 'forge-token' | 'stale-seq' | 'split-marker' | 'garbage' | 'stall' | 'exit'

/**
 * How /proc content is corrupted (collect, stream and detail sections).
 * - `malformed`: fields missing or not numbers.
 * - `huge-line`: meminfo carries one line of 300 KiB (past the 256 KiB frame cap).
 * - `binary`: stat and meminfo are random bytes (NULs, invalid UTF-8).
 * - `absurd`: well-formed but impossible (counters going backwards, MemFree > MemTotal, negative uptime).
 */
export type ProcFault = 'none' | 'malformed' | 'huge-line' | 'binary' | 'absurd'

/** Authentication methods a simulated host can offer. Password attempts are always refused (and recorded). */
export type SimAuthMethod = 'publickey' | 'password'

/**
 * Per-host behaviour: knobs that can be set at start (`hostDefaults`, `hostOverrides`) and changed at run time
 * (`fleet.setFault`). Every field is optional; an absent field keeps its current value.
 */
export interface SimHostSettings {
  /** Close the TCP connection right after accept (the listener stays up). */
  refuse?: boolean
  /** Delay, ms, between TCP accept and handing the socket to the SSH server (before the banner). 0 = none. */
  handshakeDelayMs?: number
  /** Accept TCP and never send a banner; the socket stays open until the client (or a drop) closes it. */
  stallHandshake?: boolean
  /** Write junk instead of an SSH banner and keep the socket open. */
  garbageBanner?: boolean
  /**
   * Stop reading from and writing to every socket of the host (existing and new) without closing them; new
   * connections are held before the banner. Clearing it resumes them all.
   */
  halfOpen?: boolean
  /** Concurrent unauthenticated connections allowed (MaxStartups-like); past it, close right after accept. 0 = no limit (default). */
  maxStartups?: number
  /** Channels allowed per connection (MaxSessions-like); past it the open fails with reason 2. 0 = no limit. Default 10. */
  maxSessions?: number
  /** After auth, open server-to-client channels (forwarded-tcpip, x11) and send an unsolicited global request. */
  hostileChannels?: boolean
  /** Corrupt the /proc sections. Default 'none'. */
  procFault?: ProcFault
  /** Misbehave in the stream loop. Default 'none'. */
  streamFault?: StreamFault
  /** Loop flavours whose interpreter "exists" on the host. Default all of them (STREAM_FLAVOURS). */
  streamFlavours?: StreamFlavour[]
  /** Methods offered. Default ['publickey']. */
  authMethods?: SimAuthMethod[]
  /** Offer only 'password' (overrides `authMethods`). */
  passwordOnly?: boolean
  /** tmpfs mounts the host has besides the usual ones (read when its /proc model is made: set it at start). Default 0. */
  extraMounts?: number
  /** NVMe disks the host has besides the usual ones (read when its /proc model is made: set it at start). Default 0. */
  extraDisks?: number
}

/** The settings with every field present. */
export type ResolvedHostSettings = Required<SimHostSettings>

export interface SimFleetOptions {
  /** Number of hosts. 1..65_000. */
  hosts: number
  /** Public keys accepted for auth: OpenSSH lines (`ssh-ed25519 AAAA… comment`) or parsed keys. */
  authorizedKeys: ReadonlyArray<string | ParsedKey>
  /** Usernames accepted. Default: any. */
  users?: string[]
  /**
   * `'ports'` (default): every host on 127.0.0.1 with its own OS-assigned port. `'ips'`: host i on
   * 127.77.x.y, all on one port (`port`, or one the OS assigns to the first host).
   */
  bindAddresses?: 'ports' | 'ips'
  /** The shared port in `'ips'` mode. Default: OS-assigned. */
  port?: number
  /** Settings for every host. */
  hostDefaults?: SimHostSettings
  /** Settings for single hosts, by index (0-based); applied over `hostDefaults`. */
  hostOverrides?: Record<number, SimHostSettings>
  /** Concurrent unauthenticated connections allowed across all hosts (one bastion sshd). 0 = no limit (default). */
  sharedMaxStartups?: number
  /** Seed for the per-host /proc models (same seed, same fleet). Default 1. */
  seed?: number
  /** Time source for /proc counters and every timer (sleep, handshake delay, restart). Default: the system clock. */
  clock?: Clock
  /** Host name prefix. Default 'sim'. */
  namePrefix?: string
}

/** How to reach one simulated host, and what it will present. */
export interface SimHostInfo {
  /** `sim0001`, `sim0002`, … (zero padded to at least 4 digits). */
  name: string
  host: string
  port: number
  /** The host's public key as an OpenSSH line (`ssh-ed25519 AAAA…`). */
  hostKey: string
  /** `SHA256:<base64, no padding>`, as `ssh-keygen -l` prints it. */
  fingerprint: string
}

/** Counters for one host (or the sum over the fleet). */
export interface SimCounters {
  /** TCP connections accepted (including refused and dropped ones). */
  accepted: number
  /** Connections closed right after accept by `refuse`. */
  refused: number
  /** Connections closed right after accept by `maxStartups` / `sharedMaxStartups`. */
  startupsDropped: number
  /** Sockets handed to the SSH server (TCP accepted, past every pre-banner fault). */
  handshakesStarted: number
  /** Connections that authenticated. */
  handshakesCompleted: number
  /** Refused auth requests (publickey or password; the `none` probe does not count). */
  authFailures: number
  /** Password auth requests seen. kay must never make one. */
  passwordAttempts: number
  /** Session channels accepted. */
  channelsOpened: number
  /** Session channel opens refused by `maxSessions`. */
  channelsRejected: number
  /** The most session channels open at once on one connection. */
  maxConcurrentChannels: number
  /** Exec requests. */
  commands: number
  /** Requests answered (or faulted) by stream loops. */
  streamRequests: number
  /** Global requests received after auth (keepalive probes and the like). */
  globalRequests: number
  /** Signal requests received on channels. */
  signalsReceived: number
  /** Hostile server-to-client channels the client accepted (it should accept none). */
  hostileAccepted: number
  /** Hostile server-to-client channels the client refused. */
  hostileRefused: number
}

export interface SimHostStats extends SimCounters {
  name: string
  /** TCP connections open now. */
  currentConnections: number
}

export interface SimFleetStats {
  hosts: SimHostStats[]
  totals: SimCounters & { currentConnections: number }
  /**
   * Connections accepted and not yet authenticated or closed, across the fleet. Counted from TCP accept
   * (a socket held in a handshake delay or stall counts, as sshd's MaxStartups counts it): this is what a
   * client's dial cap bounds.
   */
  currentHandshakes: number
  /** The most `currentHandshakes` seen at once since start or `resetStats()`. */
  maxConcurrentHandshakes: number
}

export interface RestartOptions {
  /** Generate a new host key (the fingerprint changes). Default false. */
  newHostKey?: boolean
  /** Time, ms, with no listener before listening again on the same port. Default 0. */
  downMs?: number
}

/** One host's controls. */
export interface SimHostHandle {
  readonly index: number
  readonly info: SimHostInfo
  readonly settings: Readonly<ResolvedHostSettings>
  setFault(settings: SimHostSettings): void
  /** Destroy every current connection of the host now. */
  drop(): void
  /** Close the listener and all connections, then listen again on the same port after `downMs`. */
  restart(opts?: RestartOptions): Promise<SimHostInfo>
  stats(): SimHostStats
}

/** A running in-process fleet. */
export interface SimFleet {
  readonly hosts: readonly SimHostInfo[]
  /** A host by index (0-based) or name. Throws KAY_CONFIG for an unknown one. */
  host(which: number | string): SimHostHandle
  setFault(which: number | string, settings: SimHostSettings): void
  drop(which: number | string): void
  restart(which: number | string, opts?: RestartOptions): Promise<SimHostInfo>
  stats(): SimFleetStats
  resetStats(): void
  /** Close every listener and socket and clear every timer. Idempotent. */
  close(): Promise<void>
}
