/**
 * kay's errors. One module, one base class, a stable literal `code` on every error.
 *
 * Match on `err.code`, not on `instanceof`: errors cross worker-thread boundaries as plain
 * data ({@link SerializedError}) and are re-created here by {@link errorFromJSON}, so the code
 * is the only identity that survives every hop.
 */

export type ErrorCode =
  | 'KAY_NOT_READY'
  | 'KAY_TIMEOUT'
  | 'KAY_OUTPUT_LIMIT'
  | 'KAY_AUTH_FAILED'
  | 'KAY_HOST_KEY_MISMATCH'
  | 'KAY_HOST_KEY_UNKNOWN'
  | 'KAY_HOST_KEY_REVOKED'
  | 'KAY_HOST_CERT_EXPIRED'
  | 'KAY_HOST_CERT_PRINCIPAL'
  | 'KAY_HOST_CERT_INVALID'
  | 'KAY_HOST_CA_REVOKED'
  | 'KAY_CLOSED'
  | 'KAY_SHARD_RESTARTED'
  | 'KAY_SUPERVISOR_FATAL'
  | 'KAY_QUEUE_FULL'
  | 'KAY_CHANNEL_OPEN_FAILED'
  | 'KAY_CONNECT_FAILED'
  | 'KAY_HANDSHAKE_TIMEOUT'
  | 'KAY_PROTOCOL_ERROR'
  | 'KAY_RESOLVE_FAILED'
  | 'KAY_UNEXPECTED_OUTPUT'
  | 'KAY_KEEPALIVE_TIMEOUT'
  | 'KAY_CONNECTION_LOST'
  | 'KAY_PARSE_ERROR'
  | 'KAY_STREAM_FAILED'
  | 'KAY_CONFIG'
  | 'KAY_KEY_PERMISSIONS'
  | 'KAY_KEY_ENCRYPTED'
  | 'KAY_KEY_INVALID'
  | 'KAY_EXPANSION_LIMIT'
  | 'KAY_ABORTED'
  | 'KAY_SKIPPED'
  | 'KAY_COPY_FAILED'
  | 'KAY_UNKNOWN_HOST'
  | 'KAY_INTERNAL'

/** The plain-data form of an error: what crosses threads and goes into `--json` output. */
export interface SerializedError {
  code: ErrorCode
  message: string
  host?: string
  /** Extra data, specific to the code (fingerprints, retry time, methods offered, ...). */
  details?: Record<string, unknown>
}

export interface KayErrorOptions {
  host?: string | undefined
  cause?: unknown
  details?: Record<string, unknown> | undefined
}

export class KayError extends Error {
  readonly code: ErrorCode
  readonly host: string | undefined
  readonly details: Record<string, unknown>

  constructor(code: ErrorCode, message: string, opts: KayErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'KayError'
    this.code = code
    this.host = opts.host
    this.details = opts.details ?? {}
  }

  toJSON(): SerializedError {
    const out: SerializedError = { code: this.code, message: this.message }
    if (this.host !== undefined) out.host = this.host
    if (Object.keys(this.details).length > 0) out.details = this.details
    return out
  }
}

function defineError<C extends ErrorCode>(code: C, name: string, opts: { stack?: boolean } = {}) {
  const withStack = opts.stack ?? true
  const cls = class extends KayError {
    declare readonly code: C
    constructor(message: string, o: KayErrorOptions = {}) {
      if (withStack) {
        super(code, message, o)
      } else {
        // Hot-path answers (fail fast while down, once per host per tick at fleet scale): capturing a stack trace
        // is most of their cost (bench/RESULTS.md, micro benches: dispatch) and says nothing a code, host and state
        // do not.
        const limit = Error.stackTraceLimit
        Error.stackTraceLimit = 0
        try {
          super(code, message, o)
        } finally {
          Error.stackTraceLimit = limit
        }
      }
      this.name = name
    }
  }
  Object.defineProperty(cls, 'name', { value: name })
  registry.set(code, cls)
  return cls
}

const registry = new Map<ErrorCode, new (message: string, opts?: KayErrorOptions) => KayError>()

/**
 * The connection is not ready; answered at once, never after waiting for a dial. details: state, nextRetryAt, and
 * for a host that failed before, `lastError` ({@link LastError}: its code and message, also in the message and as
 * `cause`).
 */
export const NotReadyError = defineError('KAY_NOT_READY', 'NotReadyError', { stack: false })
/** A command (or a collection) passed its deadline. */
export const TimeoutError = defineError('KAY_TIMEOUT', 'TimeoutError')
/** A command produced more output than its cap; the channel was closed, the connection kept. */
export const OutputLimitError = defineError('KAY_OUTPUT_LIMIT', 'OutputLimitError')
/** Public-key authentication failed. details: methodsOffered, keysTried. Never retried fast. */
export const AuthFailedError = defineError('KAY_AUTH_FAILED', 'AuthFailedError')
/** The host offered a key different from its pin. details: expected, offered (SHA256 fingerprints). Terminal. */
export const HostKeyMismatchError = defineError('KAY_HOST_KEY_MISMATCH', 'HostKeyMismatchError')
/** StrictHostKeyChecking yes and no pin for the host. details: offered. */
export const HostKeyUnknownError = defineError('KAY_HOST_KEY_UNKNOWN', 'HostKeyUnknownError')
/** The host offered a key marked @revoked. Terminal. */
export const HostKeyRevokedError = defineError('KAY_HOST_KEY_REVOKED', 'HostKeyRevokedError')
/**
 * The host presented a certificate from a trusted CA (`@cert-authority`) that has expired, and its plain key is not
 * known. details: offered, ca (fingerprints), keyId, validity. Terminal, like a mismatch.
 */
export const HostCertExpiredError = defineError('KAY_HOST_CERT_EXPIRED', 'HostCertExpiredError')
/** A host certificate from a trusted CA does not list the name dialed (or HostKeyAlias). details: name, principals. */
export const HostCertPrincipalError = defineError('KAY_HOST_CERT_PRINCIPAL', 'HostCertPrincipalError')
/**
 * A host certificate from a trusted CA failed another check (not yet valid, critical options, CA signature or its
 * algorithm, not a host certificate). details: problem.
 */
export const HostCertInvalidError = defineError('KAY_HOST_CERT_INVALID', 'HostCertInvalidError')
/** The CA that signed the host's certificate is marked @revoked. details: offered, ca. Terminal. */
export const HostCaRevokedError = defineError('KAY_HOST_CA_REVOKED', 'HostCaRevokedError')
/** The actor or supervisor was closed; in-flight and queued work is rejected with this. */
export const ClosedError = defineError('KAY_CLOSED', 'ClosedError')
/** The shard worker hosting this host died; the request was in flight. The host is being re-created. */
export const ShardRestartedError = defineError('KAY_SHARD_RESTARTED', 'ShardRestartedError')
/** Shard restarts exceeded the supervisor's intensity; the supervisor stopped. */
export const SupervisorFatalError = defineError('KAY_SUPERVISOR_FATAL', 'SupervisorFatalError')
/** A bounded queue is full (channel wait queue, dial wait queue). */
export const QueueFullError = defineError('KAY_QUEUE_FULL', 'QueueFullError')
/** The server refused to open a channel (e.g. MaxSessions). details: reason. The connection is kept. */
export const ChannelOpenError = defineError('KAY_CHANNEL_OPEN_FAILED', 'ChannelOpenError')
/** TCP connect or the SSH handshake failed (refused, reset, banner garbage). details: level, pressure. */
export const ConnectError = defineError('KAY_CONNECT_FAILED', 'ConnectError')
/** TCP connect + key exchange + auth did not finish within the handshake deadline. */
export const HandshakeTimeoutError = defineError('KAY_HANDSHAKE_TIMEOUT', 'HandshakeTimeoutError')
/**
 * The peer broke the SSH protocol (a bad packet length, a bad MAC, a garbage or oversized version exchange, channel
 * data past the window kay granted, a peer that stops reading while it keeps sending): the connection was closed
 * at once. details: level (ssh2's), limit (for a bound that was hit).
 */
export const ProtocolError = defineError('KAY_PROTOCOL_ERROR', 'ProtocolError')
/** The host's name did not resolve to an address (or the lookup timed out). details: hostname, cached, errno. */
export const ResolveError = defineError('KAY_RESOLVE_FAILED', 'ResolveError')
/**
 * A command kay sent for itself did not run as sent: the host answered with output that is not kay's (a
 * ForceCommand, a restricted shell, a login shell that could not run it). details: exitCode, stdout, stderr (heads).
 */
export const UnexpectedOutputError = defineError('KAY_UNEXPECTED_OUTPUT', 'UnexpectedOutputError')
/** A keepalive probe got no reply within its deadline; the connection was torn down. */
export const KeepaliveTimeoutError = defineError('KAY_KEEPALIVE_TIMEOUT', 'KeepaliveTimeoutError')
/** The established connection closed or errored. */
export const ConnectionLostError = defineError('KAY_CONNECTION_LOST', 'ConnectionLostError')
/** Collected output did not parse; for that host only. */
export const ParseError = defineError('KAY_PARSE_ERROR', 'ParseError')
/** The persistent collection stream failed; the host falls back to exec for this tick. */
export const StreamError = defineError('KAY_STREAM_FAILED', 'StreamError')
/** Bad input: options, arguments, config files. */
export const ConfigError = defineError('KAY_CONFIG', 'ConfigError')
/** A private key file is readable by group or others. */
export const KeyPermissionsError = defineError('KAY_KEY_PERMISSIONS', 'KeyPermissionsError')
/** A private key is passphrase-protected and no agent can use it. */
export const KeyEncryptedError = defineError('KAY_KEY_ENCRYPTED', 'KeyEncryptedError')
/** A private key could not be parsed or is too weak. */
export const KeyInvalidError = defineError('KAY_KEY_INVALID', 'KeyInvalidError')
/** A host-list expression expands past the limit. */
export const ExpansionLimitError = defineError('KAY_EXPANSION_LIMIT', 'ExpansionLimitError')
/** The caller's AbortSignal fired. */
export const AbortedError = defineError('KAY_ABORTED', 'AbortedError')
/** Not run: a rolling run (`--batch` with `--batch-fail`) stopped before this host's turn. */
export const SkippedError = defineError('KAY_SKIPPED', 'SkippedError')
/** A file copy (SFTP) failed on the host: no such file, permission denied, not a directory… details: path. */
export const CopyError = defineError('KAY_COPY_FAILED', 'CopyError')
/** A request named a host that the supervisor does not manage. */
export const UnknownHostError = defineError('KAY_UNKNOWN_HOST', 'UnknownHostError')
/** A bug: something that must not happen did. */
export const InternalError = defineError('KAY_INTERNAL', 'InternalError')

/**
 * Codes of host-key refusals: terminal for the host (no automatic redial: the key or its trust must change) and
 * exit code 3 from the CLI.
 */
export const HOST_KEY_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'KAY_HOST_KEY_MISMATCH',
  'KAY_HOST_KEY_UNKNOWN',
  'KAY_HOST_KEY_REVOKED',
  'KAY_HOST_CERT_EXPIRED',
  'KAY_HOST_CERT_PRINCIPAL',
  'KAY_HOST_CERT_INVALID',
  'KAY_HOST_CA_REVOKED',
])

/** What a not-ready refusal says about the host's last failure (`details.lastError` of {@link NotReadyError}). */
export interface LastError {
  code: ErrorCode
  message: string
}

/** The last failure a not-ready (or closed) refusal carries, if the host failed before. */
export function lastErrorOf(err: KayError): LastError | undefined {
  const last = err.details.lastError as Partial<LastError> | undefined
  if (typeof last?.code !== 'string' || typeof last.message !== 'string') return undefined
  return { code: last.code, message: last.message }
}

/** Re-create an error from its plain-data form, as the same class (matched by code). */
export function errorFromJSON(data: SerializedError): KayError {
  const cls = registry.get(data.code)
  const opts: KayErrorOptions = { host: data.host, details: data.details }
  const last =
    data.details && typeof data.details.lastError === 'object' ? (data.details.lastError as LastError) : undefined
  // The last failure crosses threads as data; on this side it is the `cause` again.
  if (last && typeof last.code === 'string')
    opts.cause = errorFromJSON({ ...last, ...(data.host === undefined ? {} : { host: data.host }) })
  return cls ? new cls(data.message, opts) : new KayError(data.code, data.message, opts)
}

/** Any thrown value as a KayError (unknown errors become KAY_INTERNAL, keeping the message). */
export function toKayError(err: unknown, host?: string): KayError {
  if (err instanceof KayError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new InternalError(message, { host, cause: err })
}

export function isKayError(err: unknown, code?: ErrorCode): err is KayError {
  return err instanceof KayError && (code === undefined || err.code === code)
}
