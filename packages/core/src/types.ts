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
  /**
   * The host as named before HostName (ssh's `%n`: the command-line argument, or the ProxyJump hop), when it came
   * from ssh_config resolution.
   */
  originalHost?: string
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
  /**
   * The complete list of key files for this host, as ssh would offer them (`-i` files, then IdentityFile entries,
   * expanded); empty when `IdentityFile none` is all there is. Absent: ssh's default keys (the fleet's identity).
   */
  identityFiles?: string[]
  identitiesOnly?: boolean
  /** IdentityAgent socket path, or 'none' (no agent). Absent: SSH_AUTH_SOCK. */
  identityAgent?: string
  /** UserKnownHostsFile paths, expanded (ssh's default: ~/.ssh/known_hosts ~/.ssh/known_hosts2); empty for `none`. */
  userKnownHostsFiles?: string[]
  /** GlobalKnownHostsFile paths (ssh_config), already expanded. */
  globalKnownHostsFiles?: string[]
  /** HostKeyAlias (ssh_config): the name the host key is looked up and pinned under instead of the host's own. */
  hostKeyAlias?: string
  /**
   * CertificateFile paths (ssh_config), already expanded: user certificates offered first, each with the private
   * key it certifies (an identity file's or the agent's).
   */
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
  /**
   * User certificates (blobs) whose private key only the agent holds (a passphrase-protected key file with its
   * `-cert.pub`, or a CertificateFile for an agent key): offered through the agent before its own keys.
   */
  agentCertificates?: readonly Buffer[]
}

/** Where a host key was presented: the alias as named and the resolved address. */
export interface HostKeyTarget {
  id: string
  hostname: string
  port: number
}

/**
 * Why a host key was trusted: a pin in kay's file, an entry of a user or global known_hosts file, or a
 * `@cert-authority` line whose CA signed the host's certificate (never pinned); `policy-no`: not checked.
 */
export type TrustSource =
  | {
      kind: 'pin' | 'known-hosts'
      file: string
      line: number
      hosts: string[]
      keyType: string
      fingerprint: string
    }
  | {
      kind: 'ca'
      file: string
      line: number
      hosts: string[]
      caKeyType: string
      caFingerprint: string
      /** The host certificate's key ID, serial (decimal), principals and validity window. */
      keyId: string
      serial: string
      principals: string[]
      validity: string
    }
  | { kind: 'policy-no' }

/** A host key verdict, as data (x/crypto/ssh/knownhosts: unknown vs mismatch). */
export type HostKeyVerdict =
  | { kind: 'trusted'; source?: TrustSource }
  | { kind: 'pinned'; fingerprint: string }
  | { kind: 'unknown'; fingerprint: string }
  | { kind: 'mismatch'; expected: string[]; offered: string }
  /** `ca`: the fingerprint of the certificate's CA when it is the CA that is revoked. */
  | { kind: 'revoked'; offered: string; ca?: string }
  /**
   * A certificate from a trusted CA failed its checks (`problem`: expired, not-yet-valid, principal,
   * critical-options, signature-algorithm, signature, not-host-certificate) and the plain key is not known.
   */
  | {
      kind: 'certificate'
      problem: string
      offered: string
      ca: string
      keyId: string
      principals: string[]
      validity: string
      /** The name checked against the principals (HostName or HostKeyAlias). */
      name: string
    }

/**
 * Decides whether a host key is acceptable. `key` is the SSH wire-format public key blob.
 * `trusted` and `pinned` (first use, recorded) accept; `unknown` (strict mode), `mismatch` and `revoked` refuse.
 */
export interface HostKeyVerifier {
  verify(target: HostKeyTarget, key: Buffer): Promise<HostKeyVerdict>
  /**
   * The host-key algorithms to offer, in order: what is known for the host first, as OpenSSH orders
   * HostKeyAlgorithms. Without it, a host pinned with ECDSA that also has ED25519 would present ED25519 and look
   * unknown. Absent or empty: the SSH library's defaults.
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
