import type { Duplex } from 'node:stream'
import type { ParsedKey } from 'ssh2'

/** Opens the byte stream an SSH connection runs over: TCP by default, a jump host's channel for ProxyJump. */
export type Connector = (target: HostTarget) => Promise<Duplex>

/** A collection-stream loop, by the interpreter it runs under (docs/collection-protocol.md). */
export type StreamFlavour = 'awk' | 'bash' | 'perl' | 'python' | 'sh'

/**
 * One host as kay dials it: what ssh_config / host lists resolve to. `id` is the identity the operator
 * named (alias or `[user@]host[:port]` as given, normalised); it is the key for sharding, pins by alias,
 * results and metrics labels. `hostname`/`port` is where the TCP connection goes.
 */
export interface HostTarget {
  id: string
  hostname: string
  port: number
  user: string
  /** ProxyJump chain, outermost first. Each hop is itself a pooled connection. */
  jump?: HostTarget[]
  /**
   * ProxyCommand (ssh_config), unexpanded: the connection is this command's stdin/stdout (`%h %p %r %n %%` are
   * expanded per connection). Set only when it, not ProxyJump, is the host's proxy setting.
   */
  proxyCommand?: string
  /** Per-host connection settings from ssh_config (override defaults, overridden by explicit options). */
  connectTimeoutMs?: number
  keepaliveIntervalMs?: number
  keepaliveCountMax?: number
  /** IdentityFile paths for this host (already `~`-expanded). */
  identityFiles?: string[]
  identitiesOnly?: boolean
  /** IdentityAgent socket path, or 'none'. */
  identityAgent?: string
  userKnownHostsFiles?: string[]
  /** GlobalKnownHostsFile paths (ssh_config), already expanded. */
  globalKnownHostsFiles?: string[]
  /** HostKeyAlias (ssh_config): the name the host key is looked up and pinned under instead of the host's own. */
  hostKeyAlias?: string
  /** CertificateFile paths (ssh_config), already expanded: user certificates offered with their private keys. */
  certificateFiles?: string[]
  strictHostKeyChecking?: StrictHostKeyChecking
}

export type StrictHostKeyChecking = 'yes' | 'accept-new' | 'no'

/**
 * Credentials for public-key auth. Keys are parsed once (ssh2 re-parses PEM on every signature when given a
 * string; a ParsedKey passed through authHandler is signed with a cached key object).
 */
export interface Identity {
  username: string
  keys: ReadonlyArray<{ key: ParsedKey; source: string }>
  /** ssh-agent socket path. Tried after the keys. */
  agent?: string
  /**
   * IdentitiesOnly: when set, only the agent's keys whose public blob (`getPublicSSH()`) is listed are offered —
   * the public halves of the configured key files (the `.pub` beside a passphrase-protected one). The agent's other
   * keys are never offered, so a full agent cannot exhaust a server's MaxAuthTries. Unset: every agent key.
   */
  agentKeys?: readonly Buffer[]
}

/** Where a host key was presented: the alias as named and the resolved address. */
export interface HostKeyTarget {
  id: string
  hostname: string
  port: number
}

/** A host key verdict, as data (x/crypto/ssh/knownhosts: unknown vs mismatch). */
export type HostKeyVerdict =
  | { kind: 'trusted' }
  | { kind: 'pinned'; fingerprint: string }
  | { kind: 'unknown'; fingerprint: string }
  | { kind: 'mismatch'; expected: string[]; offered: string }
  | { kind: 'revoked'; offered: string }

/**
 * Decides whether a host key is acceptable. `key` is the SSH wire-format public key blob.
 * `trusted` and `pinned` (first use, recorded) accept; `unknown` (strict mode), `mismatch` and `revoked` refuse.
 */
export interface HostKeyVerifier {
  verify(target: HostKeyTarget, key: Buffer): Promise<HostKeyVerdict>
  /**
   * Host-key algorithms to ask for first, because a key of that type is already known for the host (OpenSSH
   * orders HostKeyAlgorithms the same way). Without it, a host pinned with ECDSA that also has ED25519 would
   * present ED25519 and look unknown.
   */
  preferredHostKeyAlgorithms?(target: HostKeyTarget): Promise<string[]>
}

/** The actor's lifecycle. `quarantined`: a terminal refusal (host-key mismatch/revoked) — no automatic redial. */
export type ActorState = 'idle' | 'dialing' | 'ready' | 'backoff' | 'quarantined' | 'closed'

/** How a host's metrics are collected: a persistent stream channel (by loop flavour) or a new exec channel per tick. */
export type CollectMode = `stream-${StreamFlavour}` | 'exec'

/**
 * Where a connected host's collection stands (docs/adr/0008-cold-start-converges.md): `starting` (its stream probe
 * waits for a fleet-wide work slot), `probing` (the stream is being opened), `streaming`, or `exec` (a new channel per
 * collection: the exec collect mode, or no stream loop answered and the stream is probed again later).
 */
export type CollectPhase = 'starting' | 'probing' | 'streaming' | 'exec'

/** An immutable snapshot of one host's connection, for tables, JSON and Prometheus. */
export interface HostStatus {
  id: string
  state: ActorState
  /** Epoch ms of the next dial attempt while in backoff. */
  nextRetryAt?: number
  /** Consecutive failed dials since the last stable connection. */
  attempts: number
  lastError?: import('./errors.js').SerializedError
  /** Last keepalive probe round trip, ms. */
  rttMs?: number
  /** Epoch ms when the current connection became ready. */
  readySince?: number
  /** Handshakes (dials that reached TCP connect) so far. */
  handshakes: number
  collectMode?: CollectMode
  /** While the connection is ready: where its collection stands (absent otherwise). */
  collectPhase?: CollectPhase
  /** Epoch ms of the last successful collection. */
  lastSuccessAt?: number
}
