/**
 * Client identities for public-key auth, and the ssh2 `authHandler` that offers only those.
 *
 * Keys are parsed once per path (ssh2 re-parses a PEM string on every signature; a ParsedKey handed over through
 * `authHandler` signs with a cached key object) and shared by every host that uses them, so 10,000 hosts cost one
 * parse per key file. Never password, never keyboard-interactive: the handler returns `false` rather than fall
 * back to them, and records what the server offered so a failure can say why.
 *
 * User certificates, as ssh loads them (ssh.c load_public_identity_files, sshconnect2.c pubkey_prepare): the
 * CertificateFile certificates come first, each signed by the identity file whose key it certifies (or, when only
 * the agent holds that key, through the agent); without CertificateFile, a `<identity>-cert.pub` beside an
 * identity file is offered right after its key. Certificates the agent holds (`ssh-add` of a key with its
 * `-cert.pub`) are offered as the agent lists them. Only user certificates are used; whether one is valid is the
 * server's to say. ssh2 offers certificates through kay's patch (ADR 0010).
 */
import { createPublicKey } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import type {
  AnyAuthMethod,
  AuthenticationType,
  AuthHandlerMiddleware,
  NextAuthHandler,
  ParsedKey,
  SignCallback,
  SigningRequestOptions,
} from 'ssh2'
import ssh2 from 'ssh2'
import {
  AuthFailedError,
  ConfigError,
  type KayError,
  KeyEncryptedError,
  KeyInvalidError,
  KeyPermissionsError,
} from '../errors.js'
import type { Identity } from '../types.js'
import { parseCertificate } from './certificates.js'

/** Smallest RSA modulus kay accepts (OpenSSH's RequiredRSASize default). */
const MIN_RSA_BITS = 2048

export interface LoadIdentityOptions {
  /** Remote user name. */
  username: string
  /** Explicit key files (CLI `-i`, ssh_config IdentityFile). A missing one is a {@link ConfigError}... */
  identityFiles?: readonly string[]
  /** ...unless this is set: OpenSSH skips a missing ssh_config IdentityFile silently; pass true for those. */
  skipMissing?: boolean
  /**
   * Tried when `identityFiles` is empty or absent; missing ones are skipped silently.
   * Default `~/.ssh/id_ed25519`, `~/.ssh/id_ecdsa`, `~/.ssh/id_rsa`.
   */
  defaultIdentityFiles?: readonly string[]
  /** ssh-agent socket (IdentityAgent), or `'none'`. Default `SSH_AUTH_SOCK` from `env`. */
  agent?: string
  /**
   * IdentitiesOnly (ssh_config): offer only the agent keys that match these key files (see `Identity.agentKeys`).
   * A passphrase-protected file is matched through its `.pub`; without one it cannot be matched.
   */
  identitiesOnly?: boolean
  /**
   * CertificateFile (ssh_config): user certificates, offered first. When set, no `-cert.pub` beside an identity
   * file is looked for (as ssh). A missing one is skipped, as ssh does.
   */
  certificateFiles?: readonly string[]
  /** Private keys loaded elsewhere (the fleet's `-i` keys) that may sign for a CertificateFile certificate. */
  signingKeys?: ReadonlyArray<{ key: ParsedKey; source: string }>
  /** Home directory for the default identity files. Default: the account's (`os.userInfo().homedir`). */
  homeDir?: string
  /** Environment for `SSH_AUTH_SOCK`. Default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>
}

/** What loading one key file produced; cached per path. */
type KeyLoad =
  | { kind: 'key'; key: ParsedKey }
  | { kind: 'missing' }
  /** Passphrase-protected; `publicBlob` from the `.pub` beside it, when there is one. */
  | { kind: 'encrypted'; publicBlob?: Buffer }
  | { kind: 'error'; error: KayError }

const cache = new Map<string, Promise<KeyLoad>>()

/** Forget every parsed key (after the operator fixed a key file, or in tests). */
export function clearKeyCache(): void {
  cache.clear()
  certCache.clear()
}

/**
 * Default identity files, in the order they are offered (ed25519 first: fewest failed attempts on modern hosts),
 * under the account's home directory as ssh's `~/.ssh/id_*` (the password database, not $HOME).
 */
function defaultIdentityFiles(homeDir: string = accountHome()): string[] {
  return ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => join(homeDir, '.ssh', f))
}

function accountHome(): string {
  try {
    return os.userInfo().homedir
  } catch {
    return os.homedir()
  }
}

async function loadKeyFile(path: string): Promise<KeyLoad> {
  let mode: number
  try {
    const st = await stat(path)
    if (st.isDirectory()) {
      return {
        kind: 'error',
        error: new ConfigError(`'${path}' is a directory, not a private key file; give the key file itself to -i`),
      }
    }
    mode = st.mode
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' }
    return { kind: 'error', error: new ConfigError(`cannot read key file '${path}': ${(err as Error).message}`) }
  }
  // As OpenSSH: a private key others can read is refused outright, not used with a warning.
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    const perms = (mode & 0o777).toString(8).padStart(4, '0')
    return {
      kind: 'error',
      error: new KeyPermissionsError(
        `permissions ${perms} for '${path}' are too open; the key must not be readable by group or others (chmod 600)`,
        { details: { path, mode: perms } },
      ),
    }
  }
  let data: Buffer
  try {
    data = await readFile(path)
  } catch (err) {
    return { kind: 'error', error: new ConfigError(`cannot read key file '${path}': ${(err as Error).message}`) }
  }
  const parsed = ssh2.utils.parseKey(data)
  if (parsed instanceof Error) {
    if (/passphrase/i.test(parsed.message)) {
      const blob = await publicBlobOf(`${path}.pub`)
      return blob === undefined ? { kind: 'encrypted' } : { kind: 'encrypted', publicBlob: blob }
    }
    return {
      kind: 'error',
      error: new KeyInvalidError(`cannot parse key '${path}': ${parsed.message}`, { details: { path } }),
    }
  }
  if (!parsed.isPrivateKey()) {
    return {
      kind: 'error',
      error: new KeyInvalidError(`'${path}' is a public key, not a private key`, { details: { path } }),
    }
  }
  const type = parsed.type as string
  if (type === 'ssh-dss') {
    return { kind: 'error', error: new KeyInvalidError(`DSA key '${path}' is not supported`, { details: { path } }) }
  }
  if (type === 'ssh-rsa') {
    const bits = createPublicKey(parsed.getPublicPEM()).asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < MIN_RSA_BITS) {
      return {
        kind: 'error',
        error: new KeyInvalidError(`RSA key '${path}' has ${bits} bits; at least ${MIN_RSA_BITS} are required`, {
          details: { path, bits },
        }),
      }
    }
  }
  return { kind: 'key', key: parsed }
}

/** The public key blob in an OpenSSH `.pub` file, or undefined when it is missing or not a public key. */
async function publicBlobOf(path: string): Promise<Buffer | undefined> {
  try {
    const parsed = ssh2.utils.parseKey(await readFile(path))
    return parsed instanceof Error ? undefined : parsed.getPublicSSH()
  } catch {
    return undefined
  }
}

/** A user certificate read from a `-cert.pub` / CertificateFile: ssh2's view (to offer) and its certified key. */
interface CertLoad {
  parsed: ParsedKey
  blob: Buffer
  /** The certified (plain) public key blob. */
  key: Buffer
}

const certCache = new Map<string, Promise<CertLoad | undefined>>()

/**
 * A user certificate file, or undefined when it is missing or not a user certificate (ssh skips those: "not a
 * certificate", "not a user certificate").
 */
function cachedCertificate(path: string): Promise<CertLoad | undefined> {
  let p = certCache.get(path)
  if (p === undefined) {
    p = readFile(path).then(
      (data) => {
        const parsed = ssh2.utils.parseKey(data)
        if (parsed instanceof Error) return undefined
        const cert = parseCertificate(parsed.getPublicSSH())
        if (cert === undefined || cert.certType !== 'user') return undefined
        return { parsed, blob: cert.blob, key: cert.key }
      },
      () => undefined,
    )
    certCache.set(path, p)
  }
  return p
}

/**
 * A key that signs with `key` and presents `cert`: what ssh2 offers for a certificate (its type and public blob are
 * the certificate's; the signature is the private key's, named by the plain algorithm through kay's patch).
 */
function certifiedKey(key: ParsedKey, cert: CertLoad): ParsedKey {
  return Object.create(key, {
    type: { value: cert.parsed.type, enumerable: true },
    comment: { value: cert.parsed.comment, enumerable: true },
    getPublicSSH: { value: () => cert.blob },
  }) as ParsedKey
}

/** Load (or reuse) one key file. */
function cachedKey(path: string): Promise<KeyLoad> {
  let p = cache.get(path)
  if (p === undefined) {
    p = loadKeyFile(path)
    cache.set(path, p)
  }
  return p
}

async function agentAvailable(sock: string | undefined): Promise<boolean> {
  if (sock === undefined || sock === '' || sock === 'none') return false
  try {
    await stat(sock)
    return true
  } catch {
    return false
  }
}

/**
 * Parse a private key given as text (OpenSSH or PEM, unencrypted), as one of an {@link Identity}'s keys. A text that
 * holds no key, or one that cannot be used without a passphrase, is KAY_KEY_INVALID naming `source`.
 */
export function parsePrivateKey(text: string | Buffer, source: string): Identity['keys'][number] {
  const parsed = ssh2.utils.parseKey(text)
  const key = Array.isArray(parsed) ? parsed[0] : parsed
  if (!key || key instanceof Error) {
    throw new KeyInvalidError(`${source}: ${key instanceof Error ? key.message : 'no key found'}`)
  }
  return { key, source }
}

/**
 * Load the identity for public-key auth. Errors: {@link KeyPermissionsError} (key readable by group/others),
 * {@link KeyInvalidError} (unparsable, public, DSA, RSA < 2048), {@link KeyEncryptedError} (passphrase-protected
 * and no agent to use instead), {@link ConfigError} (an explicitly given file is missing).
 */
export async function loadIdentity(opts: LoadIdentityOptions): Promise<Identity> {
  const env = opts.env ?? process.env
  const agentPath = opts.agent ?? env.SSH_AUTH_SOCK
  const hasAgent = await agentAvailable(agentPath)
  const explicit = opts.identityFiles !== undefined && opts.identityFiles.length > 0
  const paths = explicit
    ? (opts.identityFiles as readonly string[])
    : (opts.defaultIdentityFiles ?? defaultIdentityFiles(opts.homeDir))
  const keys: Array<{ key: ParsedKey; source: string }> = []
  const agentKeys: Buffer[] = []
  /** Certificates whose key only the agent can sign with (passphrase-protected files, keys held in the agent). */
  const agentCertificates: Buffer[] = []
  const certFiles = opts.certificateFiles ?? []
  const seen = new Set<string>()
  /** `<identity>-cert.pub`, when no CertificateFile is configured (ssh's rule). */
  const besideCert = async (path: string): Promise<CertLoad | undefined> =>
    certFiles.length === 0 ? cachedCertificate(`${path}-cert.pub`) : undefined
  for (const path of paths) {
    if (seen.has(path)) continue
    seen.add(path)
    const load = await cachedKey(path)
    switch (load.kind) {
      case 'key': {
        keys.push({ key: load.key, source: path })
        agentKeys.push(load.key.getPublicSSH())
        const cert = await besideCert(path)
        if (cert?.key.equals(load.key.getPublicSSH())) {
          keys.push({ key: certifiedKey(load.key, cert), source: `${path}-cert.pub` })
          agentKeys.push(cert.blob)
        }
        break
      }
      case 'missing':
        if (explicit && opts.skipMissing !== true)
          throw new ConfigError(`identity file '${path}' does not exist`, { details: { path } })
        break
      case 'encrypted': {
        // The agent presumably holds it (ssh-add); kay never prompts for passphrases.
        if (load.publicBlob) agentKeys.push(load.publicBlob)
        const cert = await besideCert(path)
        if (cert && (load.publicBlob === undefined || cert.key.equals(load.publicBlob))) {
          agentKeys.push(cert.blob)
          agentCertificates.push(cert.blob)
        }
        if (!hasAgent) {
          throw new KeyEncryptedError(
            `key '${path}' is passphrase-protected and no ssh-agent is available; add it to an agent (ssh-add)`,
            { details: { path } },
          )
        }
        break
      }
      case 'error':
        throw load.error
    }
  }
  // CertificateFile certificates first, as ssh prefers them; each signed by the key it certifies.
  const signers = [...keys, ...(opts.signingKeys ?? [])]
  const preferred: Array<{ key: ParsedKey; source: string }> = []
  for (const path of certFiles) {
    const cert = await cachedCertificate(path)
    if (cert === undefined) continue
    agentKeys.push(cert.blob)
    const signer = signers.find((k) => k.key.getPublicSSH().equals(cert.key))
    if (signer) preferred.push({ key: certifiedKey(signer.key, cert), source: path })
    else agentCertificates.push(cert.blob)
  }
  const identity: Identity = { username: opts.username, keys: [...preferred, ...keys] }
  if (hasAgent) identity.agent = agentPath as string
  if (hasAgent && opts.identitiesOnly === true) identity.agentKeys = agentKeys
  if (hasAgent && agentCertificates.length > 0) identity.agentCertificates = agentCertificates
  return identity
}

/** What an auth attempt saw, for {@link AuthFailedError} details. */
interface AuthFailureDetails {
  /** Methods the server said can continue (empty if it never answered a failure). */
  methodsOffered: string[]
  /** Key sources offered, in order (`agent:<socket>` for the agent). */
  keysTried: string[]
}

export interface AuthState {
  /** Pass as ssh2 `ConnectConfig.authHandler`. */
  authHandler: AuthHandlerMiddleware
  /** What happened so far: methods offered by the server and keys tried. */
  describeFailure(): AuthFailureDetails
  /** An {@link AuthFailedError} carrying {@link describeFailure} as details. */
  toError(host?: string): KayError
}

/**
 * An ssh-agent as an identity uses it: with IdentitiesOnly it lists only the keys whose public blob is allowed;
 * configured certificates whose key the agent holds are listed first and signed by that key.
 */
class IdentityAgent extends ssh2.OpenSSHAgent {
  readonly #allowed: readonly Buffer[] | undefined
  readonly #certificates: readonly Buffer[]
  /** Our certificate keys → the agent's plain key that signs for them. */
  readonly #signers = new WeakMap<ParsedKey, ParsedKey>()

  constructor(socket: string, allowed: readonly Buffer[] | undefined, certificates: readonly Buffer[]) {
    super(socket)
    this.#allowed = allowed
    this.#certificates = certificates
  }

  override getIdentities(cb: Parameters<ssh2.OpenSSHAgent['getIdentities']>[0]): void {
    super.getIdentities((err, listed) => {
      if (err) return cb(err)
      const keys = (listed ?? []).filter((k): k is ParsedKey => 'getPublicSSH' in k)
      const certs: ParsedKey[] = []
      for (const blob of this.#certificates) {
        if (keys.some((k) => k.getPublicSSH().equals(blob))) continue // the agent holds the certificate itself
        const certified = parseCertificate(blob)?.key
        const signer = certified && keys.find((k) => k.getPublicSSH().equals(certified))
        const parsed = ssh2.utils.parseKey(blob)
        if (signer === undefined || parsed instanceof Error) continue
        certs.push(parsed)
        this.#signers.set(parsed, signer)
      }
      cb(undefined, [...certs, ...keys.filter((k) => this.#allows(k))])
    })
  }

  override sign(
    pubKey: ParsedKey | Buffer | string,
    data: Buffer,
    options?: SigningRequestOptions | SignCallback,
    cb?: SignCallback,
  ): boolean {
    const signer = typeof pubKey === 'object' && !Buffer.isBuffer(pubKey) ? this.#signers.get(pubKey) : undefined
    // A configured certificate is signed by the agent's key it certifies (flags as for that key).
    if (typeof options === 'function') return super.sign(signer ?? pubKey, data, options)
    return super.sign(signer ?? pubKey, data, options, cb)
  }

  #allows(k: ParsedKey): boolean {
    if (this.#allowed === undefined) return true
    const blob = k.getPublicSSH()
    return this.#allowed.some((b) => b.equals(blob))
  }
}

/**
 * A fresh per-connection auth state: offers each key, then the agent (only the keys `agentKeys` allows, when set),
 * and nothing else. A new one is needed for every dial (it counts what was tried).
 */
export function createAuthState(identity: Identity): AuthState {
  const plan: Array<{ method: AnyAuthMethod; source: string }> = identity.keys.map((k) => ({
    method: { type: 'publickey', username: identity.username, key: k.key },
    source: k.source,
  }))
  if (identity.agent !== undefined && identity.agentKeys?.length !== 0) {
    const certs = identity.agentCertificates ?? []
    const agent =
      identity.agentKeys || certs.length > 0
        ? new IdentityAgent(identity.agent, identity.agentKeys, certs)
        : identity.agent
    plan.push({
      method: { type: 'agent', username: identity.username, agent },
      source: identity.agentKeys ? `agent:${identity.agent} (IdentitiesOnly)` : `agent:${identity.agent}`,
    })
  }
  let next = 0
  let methodsOffered: string[] = []
  const keysTried: string[] = []

  const authHandler: AuthHandlerMiddleware = (
    methodsLeft: AuthenticationType[] | null,
    _partialSuccess: boolean | null,
    cb: NextAuthHandler,
  ): void => {
    // ssh2 calls first with null (nothing known yet), then with the server's list after each failure.
    if (Array.isArray(methodsLeft)) methodsOffered = [...methodsLeft]
    const canPublicKey = methodsLeft === null || methodsLeft.includes('publickey')
    const step = canPublicKey ? plan[next++] : undefined
    if (step === undefined) {
      // Never fall back to password or keyboard-interactive.
      ;(cb as (m: AnyAuthMethod | false) => void)(false)
      return
    }
    keysTried.push(step.source)
    cb(step.method)
  }

  const describeFailure = (): AuthFailureDetails => ({ methodsOffered: [...methodsOffered], keysTried: [...keysTried] })
  return {
    authHandler,
    describeFailure,
    toError(host?: string): KayError {
      const d = describeFailure()
      const offered = d.methodsOffered.length > 0 ? d.methodsOffered.join(',') : 'unknown'
      const tried = d.keysTried.length > 0 ? d.keysTried.join(', ') : 'no keys (none found and no agent)'
      return new AuthFailedError(`public-key authentication failed (server offers: ${offered}; tried: ${tried})`, {
        host,
        details: { ...d },
      })
    },
  }
}

/** Just the ssh2 `authHandler` for an identity (see {@link createAuthState} to also get failure details). */
export function authHandlerFor(identity: Identity): AuthHandlerMiddleware {
  return createAuthState(identity).authHandler
}
