/**
 * OpenSSH known_hosts: parsing, matching, the trust decision for a presented host key (plain or certificate), and
 * kay's trust-on-first-use pin file. The decision is OpenSSH 9.2's check_host_key() (sshconnect.c, hostfile.c);
 * tests run it side by side with real `ssh` (test/trust/known-hosts.ssh.test.ts).
 *
 * Names. ssh looks a host up under one name: HostKeyAlias if set, else the lower-case HostName, as
 * `[host]:port` on a port other than 22 (CheckHostIP is off by default since OpenSSH 8.5, so the address is not
 * looked up). The user files (UserKnownHostsFile, default ~/.ssh/known_hosts and known_hosts2) and the global ones
 * (GlobalKnownHostsFile, default /etc/ssh/ssh_known_hosts and ssh_known_hosts2) are read that way. kay's own pin
 * file is read the same way and also under the name the operator gave (the ssh_config alias), which is how kay
 * pins.
 *
 * Decision, over every entry whose host patterns match the name:
 * 1. a plain key: an entry holds it → trusted; else any plain entry for the host (whatever its type) →
 *    changed: refused (`mismatch` when one has the same type, else `unknown` with the types known); none → new;
 * 2. a certificate: a `@cert-authority` entry holds its CA → the certificate is checked (host certificate,
 *    principal = the name dialed or HostKeyAlias, validity window at the injected clock, no critical options, CA
 *    signature and its algorithm) → trusted through the CA, never pinned. No CA, or a failed check: the
 *    certificate is dropped and its plain key decided as in 1 (as ssh does);
 * 3. an `@revoked` entry holding the key, or the certificate's CA or its key → refused, whatever the policy;
 * 4. new on a port other than 22 without HostKeyAlias: the port-less name is tried the same way, and trusts if it
 *    does (ssh's "found matching key w/out port"), so nothing is pinned twice;
 * 5. still new: policy `yes` → unknown; `accept-new` → one line for the alias and the name is appended to the pin
 *    file (`pinned`); `no` → trusted, nothing written.
 *
 * Where kay is stricter than ssh (it says so in the verdict): a certificate from a trusted CA that fails its
 * checks, on a host whose plain key is not known, is refused with the certificate's problem (ssh under
 * accept-new would pin the plain key); a key `@revoked` under the port-less name is refused (ssh under accept-new
 * pins it under `[host]:port`); under policy `no`, ssh would still add new keys to its file, kay writes nothing.
 *
 * Host-key algorithms are ordered as ssh's order_hostkeyalgs(): OpenSSH's default list, verbatim when a plain
 * key of the first algorithm's type is known; otherwise certificate algorithms first when a `@cert-authority`
 * line matches, and the types of known keys before the rest ({@link KnownHostsStore.preferredHostKeyAlgorithms}).
 *
 * The file format (parsing, name matching, hashed names) is in known-hosts-format.ts.
 *
 * Writes: the pin file is only ever appended to automatically (one write per pin, O_APPEND, serialised through
 * one in-process queue, deduplicated under that queue); it is rewritten only by the explicit {@link
 * KnownHostsStore.repin} / {@link KnownHostsStore.forget} (temp file + rename). The pin file is plain (not hashed)
 * so `kay trust list` can show names. Each file is read once per store; another process's later edits are not
 * seen until a new store is created.
 */
import { randomBytes } from 'node:crypto'
import { appendFile, chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import type { Clock } from '../clock.js'
import { parseHostSpec } from '../config/hostlist.js'
import {
  ConfigError,
  ConnectError,
  HostCaRevokedError,
  HostCertExpiredError,
  HostCertInvalidError,
  HostCertPrincipalError,
  HostKeyMismatchError,
  HostKeyRevokedError,
  HostKeyUnknownError,
  type KayError,
} from '../errors.js'
import type {
  HostKeyTarget,
  HostKeyVerdict,
  HostKeyVerifier,
  HostTarget,
  StrictHostKeyChecking,
  TrustSource,
} from '../types.js'
import {
  checkHostCertificate,
  formatValidity,
  isCertificateType,
  isWellFormedKeyBlob,
  keyTypeOfAlgorithm,
  parseCertificate,
  type SshCertificate,
} from './certificates.js'
import {
  fingerprint,
  type KnownHostsEntry,
  KnownHostsFile,
  type KnownHostsMarker,
  keyTypeOf,
  knownHostsName,
  namesPattern,
  parseKnownHostsLine,
} from './known-hosts-format.js'

// The format (parsing, matching, hashing) is part of this module's surface.
export {
  entryMatchesName,
  fingerprint,
  hashKnownHostsName,
  keyTypeOf,
  parseKnownHosts,
  parseKnownHostsLine,
} from './known-hosts-format.js'

/**
 * OpenSSH's default HostKeyAlgorithms (9.2, `ssh -G`), less the security-key types: what kay offers, in this order
 * unless known keys reorder it.
 */
export const DEFAULT_HOST_KEY_ALGORITHMS: readonly string[] = [
  'ssh-ed25519-cert-v01@openssh.com',
  'ecdsa-sha2-nistp256-cert-v01@openssh.com',
  'ecdsa-sha2-nistp384-cert-v01@openssh.com',
  'ecdsa-sha2-nistp521-cert-v01@openssh.com',
  'rsa-sha2-512-cert-v01@openssh.com',
  'rsa-sha2-256-cert-v01@openssh.com',
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
]

/** The target as the store reads it: a HostKeyTarget, optionally with the host's ssh_config trust settings. */
export type KnownHostsTarget = HostKeyTarget &
  Partial<Pick<HostTarget, 'strictHostKeyChecking' | 'userKnownHostsFiles' | 'globalKnownHostsFiles' | 'hostKeyAlias'>>

/** The one name ssh looks the host up under: HostKeyAlias (lower-cased), else `host` / `[host]:port`. */
function hostKeyName(target: KnownHostsTarget): string {
  return target.hostKeyAlias !== undefined && target.hostKeyAlias !== ''
    ? target.hostKeyAlias.toLowerCase()
    : knownHostsName(target.hostname, target.port)
}

/** The name a host certificate must list as a principal: HostKeyAlias, else the host name without port. */
function principalName(target: KnownHostsTarget): string {
  return target.hostKeyAlias !== undefined && target.hostKeyAlias !== ''
    ? target.hostKeyAlias.toLowerCase()
    : target.hostname.toLowerCase()
}

/**
 * The names kay's pin file knows a target by: the name the operator gave (its alias) and {@link hostKeyName}.
 * These are the names a first-use pin is written under.
 */
export function targetNames(target: KnownHostsTarget): string[] {
  const names: string[] = []
  try {
    const spec = parseHostSpec(target.id)
    names.push(spec.port === undefined ? spec.host.toLowerCase() : knownHostsName(spec.host, spec.port))
  } catch {
    // An id that is not a host spec (should not happen): pin by the ssh name only.
  }
  const name = hostKeyName(target)
  if (!names.includes(name)) names.push(name)
  return names
}

/** A verdict, with (for `unknown`) the key types already known for the host (the golang/go#49631 case). */
export type KnownHostsVerdict = HostKeyVerdict | { kind: 'unknown'; fingerprint: string; pinnedTypes: string[] }

const CERT_PROBLEM_TEXT: Record<string, string> = {
  'not-host-certificate': 'it is not a host certificate',
  'not-yet-valid': 'it is not valid yet',
  expired: 'it has expired',
  principal: 'the name is not one of its principals',
  'critical-options': 'it has critical options (none is defined for hosts)',
  'signature-algorithm': 'its CA signed with an algorithm not in CASignatureAlgorithms',
  signature: 'its CA signature does not verify',
}

/** The error a refusing verdict stands for (undefined for `trusted` / `pinned`). */
export function verdictError(target: HostKeyTarget, verdict: KnownHostsVerdict): KayError | undefined {
  const host = target.id
  switch (verdict.kind) {
    case 'trusted':
    case 'pinned':
      return undefined
    case 'unknown': {
      const types = 'pinnedTypes' in verdict ? verdict.pinnedTypes : []
      const why =
        types.length > 0
          ? `it offered a key of a type not pinned (pinned: ${types.join(', ')}); run 'kay trust repin ${host}' if expected`
          : 'no pinned key and StrictHostKeyChecking is yes'
      return new HostKeyUnknownError(`host key for ${host} is not trusted: ${why}`, {
        host,
        details: { offered: verdict.fingerprint, pinnedTypes: types },
      })
    }
    case 'mismatch':
      return new HostKeyMismatchError(
        `HOST KEY MISMATCH for ${host}: offered ${verdict.offered}, pinned ${verdict.expected.join(', ')}. ` +
          `Refusing to connect; if the change is expected run 'kay trust repin ${host}'`,
        { host, details: { expected: verdict.expected, offered: verdict.offered } },
      )
    case 'revoked':
      if (verdict.ca !== undefined) {
        return new HostCaRevokedError(
          `host certificate of ${host} is signed by CA ${verdict.ca}, which is marked @revoked; refusing to connect`,
          { host, details: { offered: verdict.offered, ca: verdict.ca } },
        )
      }
      return new HostKeyRevokedError(`host key ${verdict.offered} of ${host} is marked @revoked`, {
        host,
        details: { offered: verdict.offered },
      })
    case 'certificate': {
      const c = verdict
      const details = {
        offered: c.offered,
        ca: c.ca,
        problem: c.problem,
        keyId: c.keyId,
        principals: c.principals,
        validity: c.validity,
        name: c.name,
      }
      const why = CERT_PROBLEM_TEXT[c.problem] ?? c.problem
      const message =
        `host certificate of ${host} (CA ${c.ca}, ID "${c.keyId}") refused: ${why}` +
        (c.problem === 'principal' ? ` (name ${c.name}; principals: ${c.principals.join(', ')})` : '') +
        (c.problem === 'expired' || c.problem === 'not-yet-valid' ? ` (valid ${c.validity})` : '') +
        '; no pin is written for a host that presents a certificate from a trusted CA'
      if (c.problem === 'expired') return new HostCertExpiredError(message, { host, details })
      if (c.problem === 'principal') return new HostCertPrincipalError(message, { host, details })
      return new HostCertInvalidError(message, { host, details })
    }
  }
}

/** Which files a store reads: its pin file, the user's, the global ones. */
type FileKind = 'pin' | 'user' | 'global'

/** One file as the decision reads it. */
interface LoadedFile {
  kind: FileKind
  file: KnownHostsFile
}

/** An entry found for a host, with where it was found. */
interface Found {
  entry: KnownHostsEntry
  kind: FileKind
  path: string
}

export interface KnownHostsStoreOptions {
  /** kay's pin file. Default `~/.config/kay/known_hosts`. */
  path?: string
  /** Read-only user files, replaced per host by `HostTarget.userKnownHostsFiles`. Default ~/.ssh/known_hosts{,2}. */
  userFiles?: readonly string[]
  /**
   * Read-only global files, replaced per host by `HostTarget.globalKnownHostsFiles`. Default
   * /etc/ssh/ssh_known_hosts{,2}.
   */
  globalFiles?: readonly string[]
  /** Policy when the target does not carry its own `strictHostKeyChecking`. Default `accept-new`. */
  policy?: StrictHostKeyChecking
  /** Called after a first-use pin was written. */
  onPinned?: (target: HostKeyTarget, fingerprint: string) => void
  /** Home directory for the defaults. Default `os.homedir()`. */
  homeDir?: string
  /** Time for certificate validity windows. Default the system clock. */
  clock?: Pick<Clock, 'now'>
  /** CASignatureAlgorithms. Default OpenSSH's (no SHA-1 `ssh-rsa`). */
  caSignatureAlgorithms?: readonly string[]
}

/** One entry as `kay trust list` shows it. */
export interface KnownHostsListing {
  file: string
  line: number
  hosts: string[]
  marker?: KnownHostsMarker
  keyType: string
  fingerprint: string
}

/** An entry that bears on a host's trust, as `kay trust list HOST` explains it. */
export interface TrustExplanation {
  /** `pin` (kay's file), `known-hosts` (a user or global file), `ca` (@cert-authority), `revoked`. */
  source: 'pin' | 'known-hosts' | 'ca' | 'revoked'
  file: string
  line: number
  hosts: string[]
  keyType: string
  /** The key's fingerprint (for `ca`, the CA key's). */
  fingerprint: string
  /** The name it matched: the host's own, or its port-less form (ssh's fallback on ports other than 22). */
  name: string
}

/** Default location of kay's pin file. */
export function defaultPinFile(homeDir: string = os.homedir()): string {
  return join(homeDir, '.config', 'kay', 'known_hosts')
}

/** OpenSSH's default UserKnownHostsFile list. */
export function defaultUserKnownHostsFiles(homeDir: string = os.homedir()): string[] {
  return [join(homeDir, '.ssh', 'known_hosts'), join(homeDir, '.ssh', 'known_hosts2')]
}

/** OpenSSH's default GlobalKnownHostsFile list. */
const DEFAULT_GLOBAL_KNOWN_HOSTS_FILES: readonly string[] = ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2']

/** A presented host key: its blob, and the certificate when it is one. */
interface PresentedKey {
  blob: Buffer
  cert?: SshCertificate
}

/** Names ssh refuses to record (sshconnect.c: a host name with any of these is never written). */
const UNRECORDABLE = /[@?*#[\]|'\\"]/

/**
 * kay's {@link HostKeyVerifier}: OpenSSH-format known_hosts files, certificates through `@cert-authority`, TOFU
 * pinning into kay's own file. See the module comment for the exact decision rules.
 */
export class KnownHostsStore implements HostKeyVerifier {
  readonly path: string
  readonly #userFiles: readonly string[]
  readonly #globalFiles: readonly string[]
  readonly #policy: StrictHostKeyChecking
  readonly #onPinned: KnownHostsStoreOptions['onPinned']
  readonly #clock: Pick<Clock, 'now'>
  readonly #caAlgorithms: readonly string[] | undefined
  /** Read-only files, loaded once each. */
  readonly #readOnly = new Map<string, Promise<KnownHostsFile>>()
  #pins: Promise<{ file: KnownHostsFile; endsWithNewline: boolean }> | undefined
  /** The write queue: every append and rewrite runs after the previous one settled. */
  #tail: Promise<unknown> = Promise.resolve()

  constructor(opts: KnownHostsStoreOptions = {}) {
    const home = opts.homeDir ?? os.homedir()
    this.path = opts.path ?? defaultPinFile(home)
    this.#userFiles = opts.userFiles ?? defaultUserKnownHostsFiles(home)
    this.#globalFiles = opts.globalFiles ?? DEFAULT_GLOBAL_KNOWN_HOSTS_FILES
    this.#policy = opts.policy ?? 'accept-new'
    this.#onPinned = opts.onPinned
    this.#clock = opts.clock ?? { now: () => Date.now() }
    this.#caAlgorithms = opts.caSignatureAlgorithms
  }

  async verify(target: KnownHostsTarget, key: Buffer): Promise<KnownHostsVerdict> {
    const policy = target.strictHostKeyChecking ?? this.#policy
    const files = await this.#filesFor(target)
    const decision = this.#decide(target, key, policy, files)
    if (!('pin' in decision)) return decision
    // What is pinned is a plain key: a certificate no trusted CA vouches for is judged by its key, as in ssh.
    const plain = decision.pin
    return this.#serialize(async () => {
      // Re-decide under the queue: a concurrent verify may have pinned this host meanwhile. Only the pin file can
      // have changed; the read-only files are loaded once.
      const current = await this.#loadPins()
      const again = this.#decide(target, key, policy, [
        { kind: 'pin', file: current.file },
        ...files.filter((f) => f.kind !== 'pin'),
      ])
      if (!('pin' in again)) return again
      const line = `${targetNames(target).join(',')} ${keyTypeOf(plain)} ${plain.toString('base64')}\n`
      await this.#append(current, line)
      const entry = parseKnownHostsLine(line, current.file.entries.length + 1)
      if (entry && entry !== 'malformed') current.file.add(entry)
      const fp = fingerprint(plain)
      this.#onPinned?.(target, fp)
      return { kind: 'pinned', fingerprint: fp } as const
    })
  }

  /**
   * The host-key algorithms to offer, in order, as ssh's order_hostkeyalgs() builds them from what is known for
   * the host (see the module comment). Always the whole list.
   */
  async preferredHostKeyAlgorithms(target: KnownHostsTarget): Promise<string[]> {
    const found = this.#entriesFor(await this.#filesFor(target), target, hostKeyName(target))
    const plain = found.filter((f) => f.entry.marker === undefined).map((f) => f.entry.keyType)
    const hasCa = found.some((f) => f.entry.marker === 'cert-authority')
    const known = (alg: string) => plain.includes(keyTypeOfAlgorithm(alg))
    const all = DEFAULT_HOST_KEY_ALGORITHMS
    if (known(all[0] as string)) return [...all]
    const first = all.filter((a) => (isCertificateType(a) && hasCa) || known(a))
    return [...first, ...all.filter((a) => !first.includes(a))]
  }

  /**
   * Every entry that bears on a host's trust, as `kay trust list HOST` shows it: pins, known_hosts entries and
   * `@cert-authority` lines under the host's names (and, on a port other than 22 without HostKeyAlias, the
   * port-less name ssh falls back to), and `@revoked` lines.
   */
  async explain(target: KnownHostsTarget): Promise<TrustExplanation[]> {
    const files = await this.#filesFor(target)
    const name = hostKeyName(target)
    const names = [name]
    if (this.#portlessAllowed(target)) names.push(target.hostname.toLowerCase())
    const out: TrustExplanation[] = []
    for (const n of names) {
      for (const f of this.#entriesFor(files, target, n)) {
        if (out.some((o) => o.file === f.path && o.line === f.entry.line)) continue
        const e = f.entry
        out.push({
          source:
            e.marker === 'revoked'
              ? 'revoked'
              : e.marker === 'cert-authority'
                ? 'ca'
                : f.kind === 'pin'
                  ? 'pin'
                  : 'known-hosts',
          file: f.path,
          line: e.line,
          hosts: e.patterns,
          keyType: e.keyType,
          fingerprint: fingerprint(e.key),
          name: n,
        })
      }
    }
    return out
  }

  /** Entries of the pin file (and, with `all`, of the default user and global files too). */
  async list(opts: { all?: boolean } = {}): Promise<KnownHostsListing[]> {
    const files: KnownHostsFile[] = [(await this.#loadPins()).file]
    if (opts.all) {
      for (const p of [...this.#userFiles, ...this.#globalFiles]) {
        if (p !== this.path) files.push(await this.#readOnlyFile(p))
      }
    }
    const out: KnownHostsListing[] = []
    for (const f of files) {
      for (const e of f.entries) {
        const l: KnownHostsListing = {
          file: f.path,
          line: e.line,
          hosts: e.patterns,
          keyType: e.keyType,
          fingerprint: fingerprint(e.key),
        }
        if (e.marker !== undefined) l.marker = e.marker
        out.push(l)
      }
    }
    return out
  }

  /**
   * Remove every pin-file line naming one of the hosts (a literal name or a hashed one; wildcard lines are kept).
   * Strings are `[user@]host[:port]` specs (`[host]:port` too). Returns how many lines were removed. Explicit
   * rewrite: temp + rename.
   */
  async forget(hosts: ReadonlyArray<string | KnownHostsTarget>): Promise<number> {
    const names = new Set(hosts.flatMap(namesOf))
    return this.#serialize(async () => this.#rewrite(names, []))
  }

  /** Replace the pins of these hosts with the given keys (forget, then pin), in one atomic rewrite. */
  async repin(entries: ReadonlyArray<{ target: KnownHostsTarget; key: Buffer }>): Promise<void> {
    const names = new Set(entries.flatMap((e) => targetNames(e.target)))
    const lines = entries.map((e) => {
      const type = keyTypeOf(e.key)
      if (type === undefined || !isWellFormedKeyBlob(e.key) || isCertificateType(type)) {
        throw new ConfigError(`repin ${e.target.id}: not a plain SSH public key blob`)
      }
      return `${targetNames(e.target).join(',')} ${type} ${e.key.toString('base64')}`
    })
    await this.#serialize(async () => this.#rewrite(names, lines))
  }

  /** ssh's port-less fallback applies: no HostKeyAlias, a port other than 22. */
  #portlessAllowed(target: KnownHostsTarget): boolean {
    return (target.hostKeyAlias === undefined || target.hostKeyAlias === '') && target.port !== 22
  }

  /** Entries matching `name` (and, in the pin file, the operator's name for the host too), pin file first. */
  #entriesFor(files: readonly LoadedFile[], target: KnownHostsTarget, name: string): Found[] {
    const out: Found[] = []
    for (const f of files) {
      const names = f.kind === 'pin' && name === hostKeyName(target) ? targetNames(target) : [name]
      for (const entry of f.file.lookup(names)) out.push({ entry, kind: f.kind, path: f.file.path })
    }
    return out
  }

  /** The decision over loaded files; `pin` means "record this plain key" (accept-new, nothing known for it). */
  #decide(
    target: KnownHostsTarget,
    blob: Buffer,
    policy: StrictHostKeyChecking,
    files: readonly LoadedFile[],
  ): KnownHostsVerdict | { pin: Buffer } {
    const offered = fingerprint(blob)
    const type = keyTypeOf(blob)
    let key: PresentedKey = { blob }
    if (type !== undefined && isCertificateType(type)) {
      const cert = parseCertificate(blob)
      // A certificate kay cannot read is judged by nothing: unknown (ssh2 already refused to parse such a key).
      if (cert === undefined) return { kind: 'unknown', fingerprint: offered }
      key = { blob, cert }
    } else {
      const quick = this.#quickTrust(target, blob, files)
      if (quick !== undefined) return { kind: 'trusted', source: quick }
    }
    const r = this.#check(target, key, files, hostKeyName(target), false)
    switch (r.status) {
      case 'ok':
        return { kind: 'trusted', source: r.source }
      case 'revoked':
        return r.ca === undefined ? { kind: 'revoked', offered } : { kind: 'revoked', offered, ca: r.ca }
      case 'changed': {
        if (policy === 'no') return { kind: 'trusted', source: { kind: 'policy-no' } }
        const plainType = keyTypeOf(r.key)
        const same = r.known.filter((e) => e.keyType === plainType)
        if (same.length > 0) {
          return {
            kind: 'mismatch',
            expected: [...new Set(same.map((e) => fingerprint(e.key)))],
            offered: fingerprint(r.key),
          }
        }
        return {
          kind: 'unknown',
          fingerprint: fingerprint(r.key),
          pinnedTypes: [...new Set(r.known.map((e) => e.keyType))],
        }
      }
      case 'new': {
        if (policy === 'no') return { kind: 'trusted', source: { kind: 'policy-no' } }
        if (r.certProblem !== undefined) return r.certProblem
        if (policy === 'yes' || UNRECORDABLE.test(target.hostname)) {
          return { kind: 'unknown', fingerprint: fingerprint(r.key) }
        }
        return { pin: r.key }
      }
    }
  }

  /**
   * The common case without hashing: a literal entry for the host holds the plain key and no @revoked line
   * matches it. Undefined when the full check is needed.
   */
  #quickTrust(target: KnownHostsTarget, blob: Buffer, files: readonly LoadedFile[]): TrustSource | undefined {
    const name = hostKeyName(target)
    let hit: Found | undefined
    for (const f of files) {
      const found = new Set<KnownHostsEntry>()
      f.file.lookupLiteral(f.kind === 'pin' ? targetNames(target) : [name], found)
      for (const e of found) {
        if (e.marker === 'revoked' && e.key.equals(blob)) return undefined
        if (hit === undefined && e.marker === undefined && e.key.equals(blob)) {
          hit = { entry: e, kind: f.kind, path: f.file.path }
        }
      }
    }
    return hit && sourceOf(hit)
  }

  /**
   * check_host_key() for one name: the status of the presented key (certificate first, then its plain key when the
   * certificate is not trusted), with the port-less retry on a new key. `portless`: this is that retry (quiet:
   * only an `ok` counts).
   */
  #check(
    target: KnownHostsTarget,
    presented: PresentedKey,
    files: readonly LoadedFile[],
    name: string,
    portless: boolean,
  ): CheckResult {
    const entries = this.#entriesFor(files, target, name)
    let key = presented
    let certProblem: CertificateVerdict | undefined
    for (;;) {
      const s = statusOf(entries, key)
      if (s.status === 'ok' && key.cert !== undefined) {
        const problem = checkHostCertificate(key.cert, {
          name: principalName(target),
          nowMs: this.#clock.now(),
          ...(this.#caAlgorithms === undefined ? {} : { caSignatureAlgorithms: this.#caAlgorithms }),
        })
        if (problem === undefined) return { status: 'ok', source: s.source as TrustSource, key: key.blob }
        certProblem ??= certificateVerdict(key.cert, problem, principalName(target))
      } else if (s.status === 'ok') {
        return { status: 'ok', source: s.source as TrustSource, key: key.blob }
      } else if (s.status === 'new' && !portless && this.#portlessAllowed(target)) {
        const r = this.#check(target, key, files, target.hostname.toLowerCase(), true)
        // kay is stricter than ssh here: a key @revoked under the port-less name is refused, not pinned.
        if (r.status === 'ok' || r.status === 'revoked') return r
      }
      if (s.status === 'revoked') return { status: 'revoked', key: key.blob, ...(s.ca ? { ca: s.ca } : {}) }
      if (key.cert !== undefined) {
        // Not trusted as a certificate: judge its plain key (ssh: "No matching CA found. Retry with plain key").
        key = { blob: key.cert.key }
        continue
      }
      if (s.status === 'changed') return { status: 'changed', key: key.blob, known: s.known }
      return certProblem === undefined
        ? { status: 'new', key: key.blob }
        : { status: 'new', key: key.blob, certProblem }
    }
  }

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn)
    this.#tail = run.catch(() => undefined)
    return run
  }

  async #rewrite(names: ReadonlySet<string>, add: readonly string[]): Promise<number> {
    let text = ''
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw pinFileError(this.path, err)
    }
    const kept: string[] = []
    let removed = 0
    const lines = text === '' ? [] : text.replace(/\n$/, '').split('\n')
    for (const raw of lines) {
      const e = parseKnownHostsLine(raw)
      if (e && e !== 'malformed' && e.marker === undefined && e.patterns.some((p) => namesPattern(p, names))) removed++
      else kept.push(raw)
    }
    kept.push(...add)
    await ensureDir(dirname(this.path))
    const tmp = `${this.path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
    try {
      await writeFile(tmp, kept.length > 0 ? `${kept.join('\n')}\n` : '', { mode: 0o600, flag: 'wx' })
      await chmod(tmp, 0o600)
      await rename(tmp, this.path)
    } catch (err) {
      await rm(tmp, { force: true })
      throw pinFileError(this.path, err)
    }
    this.#pins = undefined
    return removed
  }

  async #append(pins: { endsWithNewline: boolean }, line: string): Promise<void> {
    await ensureDir(dirname(this.path))
    const data = pins.endsWithNewline ? line : `\n${line}`
    try {
      // One write with O_APPEND: a small append lands whole at the end, even next to another writer.
      await appendFile(this.path, data, { mode: 0o600, flag: 'a' })
    } catch (err) {
      throw pinFileError(this.path, err)
    }
    pins.endsWithNewline = true
  }

  #loadPins(): Promise<{ file: KnownHostsFile; endsWithNewline: boolean }> {
    if (this.#pins === undefined) {
      const p = readFile(this.path, 'utf8').then(
        (text) => ({
          file: new KnownHostsFile(this.path, text),
          endsWithNewline: text === '' || text.endsWith('\n'),
        }),
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return { file: new KnownHostsFile(this.path, ''), endsWithNewline: true }
          throw pinFileError(this.path, err)
        },
      )
      // A failed load is retried next time rather than cached.
      p.catch(() => {
        if (this.#pins === p) this.#pins = undefined
      })
      this.#pins = p
    }
    return this.#pins
  }

  #readOnlyFile(path: string): Promise<KnownHostsFile> {
    let p = this.#readOnly.get(path)
    if (p === undefined) {
      // Unreadable read-only files count as empty: they are the user's, and OpenSSH skips them too.
      p = readFile(path, 'utf8').then(
        (t) => new KnownHostsFile(path, t),
        () => new KnownHostsFile(path, ''),
      )
      this.#readOnly.set(path, p)
    }
    return p
  }

  /** The pin file, then the host's user files, then its global files (each path once). */
  async #filesFor(target: KnownHostsTarget): Promise<LoadedFile[]> {
    const seen = new Set([this.path])
    const files: LoadedFile[] = [{ kind: 'pin', file: (await this.#loadPins()).file }]
    const lists: Array<[FileKind, readonly string[]]> = [
      ['user', target.userKnownHostsFiles ?? this.#userFiles],
      ['global', target.globalKnownHostsFiles ?? this.#globalFiles],
    ]
    for (const [kind, paths] of lists) {
      for (const p of paths) {
        if (seen.has(p)) continue
        seen.add(p)
        files.push({ kind, file: await this.#readOnlyFile(p) })
      }
    }
    return files
  }
}

type CertificateVerdict = Extract<HostKeyVerdict, { kind: 'certificate' }>

type CheckResult =
  | { status: 'ok'; source: TrustSource; key: Buffer }
  | { status: 'revoked'; key: Buffer; ca?: string }
  | { status: 'changed'; key: Buffer; known: KnownHostsEntry[] }
  | { status: 'new'; key: Buffer; certProblem?: CertificateVerdict }

/**
 * check_hostkeys_by_key_or_type() for a key over the entries of one name: a certificate is `ok` when a
 * @cert-authority entry holds its CA (the certificate's own checks come after); a plain key is `ok` when an entry
 * holds it, `changed` when other plain entries exist, else `new`; a matching @revoked entry (the key, the
 * certificate's key or its CA) makes it `revoked`.
 */
function statusOf(
  entries: readonly Found[],
  key: PresentedKey,
):
  | { status: 'ok'; source: TrustSource }
  | { status: 'revoked'; ca?: string }
  | { status: 'changed'; known: KnownHostsEntry[] }
  | { status: 'new' } {
  const cert = key.cert
  const plainBlob = cert ? cert.key : key.blob
  for (const f of entries) {
    if (f.entry.marker !== 'revoked') continue
    const revokedKey = revokedPlainKey(f.entry)
    if (revokedKey.equals(plainBlob)) return { status: 'revoked' }
    if (cert && revokedKey.equals(cert.signatureKey)) return { status: 'revoked', ca: fingerprint(cert.signatureKey) }
  }
  if (cert) {
    const ca = entries.find((f) => f.entry.marker === 'cert-authority' && f.entry.key.equals(cert.signatureKey))
    return ca ? { status: 'ok', source: sourceOf(ca, cert) } : { status: 'new' }
  }
  const plain = entries.filter((f) => f.entry.marker === undefined)
  const hit = plain.find((f) => f.entry.key.equals(key.blob))
  if (hit) return { status: 'ok', source: sourceOf(hit) }
  return plain.length > 0 ? { status: 'changed', known: plain.map((f) => f.entry) } : { status: 'new' }
}

/** The plain key a @revoked entry names (an entry may hold a certificate: its key is what is revoked). */
function revokedPlainKey(e: KnownHostsEntry): Buffer {
  return isCertificateType(e.keyType) ? (parseCertificate(e.key)?.key ?? e.key) : e.key
}

function sourceOf(f: Found, cert?: SshCertificate): TrustSource {
  const where = { file: f.path, line: f.entry.line, hosts: f.entry.patterns }
  if (cert) {
    return {
      kind: 'ca',
      ...where,
      caKeyType: f.entry.keyType,
      caFingerprint: fingerprint(f.entry.key),
      keyId: cert.keyId,
      serial: cert.serial.toString(),
      principals: cert.principals,
      validity: formatValidity(cert),
    }
  }
  return {
    kind: f.kind === 'pin' ? 'pin' : 'known-hosts',
    ...where,
    keyType: f.entry.keyType,
    fingerprint: fingerprint(f.entry.key),
  }
}

function certificateVerdict(cert: SshCertificate, problem: string, name: string): CertificateVerdict {
  return {
    kind: 'certificate',
    problem,
    offered: fingerprint(cert.key),
    ca: fingerprint(cert.signatureKey),
    keyId: cert.keyId,
    principals: cert.principals,
    validity: formatValidity(cert),
    name,
  }
}

function namesOf(h: string | KnownHostsTarget): string[] {
  if (typeof h !== 'string') return targetNames(h)
  // `[host]:port`, as known_hosts writes it, is taken as it is.
  if (/^\[[^\]]+\]:\d+$/.test(h)) return [h.toLowerCase()]
  const spec = parseHostSpec(h)
  return [spec.port === undefined ? spec.host.toLowerCase() : knownHostsName(spec.host, spec.port)]
}

async function ensureDir(dir: string): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode: 0o700 })
  // Only the directories we created get 0700 (umask could have narrowed it); existing ones are the user's.
  if (created !== undefined) await chmod(dir, 0o700)
}

/** errnos that say "not now" (descriptors, memory), not "your configuration is wrong". */
const TRANSIENT_ERRNOS = new Set(['EMFILE', 'ENFILE', 'EAGAIN', 'ENOMEM'])

function pinFileError(path: string, err: unknown): KayError {
  const errno = (err as NodeJS.ErrnoException)?.code
  const message = `cannot use known_hosts pin file '${path}': ${(err as Error).message}`
  // A transient shortage fails this dial (the actor retries with backoff); it must not read as a config error.
  if (errno && TRANSIENT_ERRNOS.has(errno)) return new ConnectError(message, { cause: err, details: { errno } })
  return new ConfigError(message, { cause: err })
}
