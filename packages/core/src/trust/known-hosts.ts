/**
 * OpenSSH known_hosts: parsing, matching and kay's trust-on-first-use pin file.
 *
 * Trust decision for a presented host key (one key per handshake), over every entry whose host patterns match
 * the target's names (the alias as named, and `address` / `[address]:port`):
 *
 * 1. an `@revoked` entry holds the offered key → `revoked` (refused even with policy `no`);
 * 2. policy `no` → `trusted`, nothing written (only behind an explicit operator flag);
 * 3. a plain entry holds the offered key → `trusted` (a host with several key types is fine as long as one pin
 *    matches what it presented);
 * 4. a plain entry of the SAME key type holds a different key → `mismatch` (expected fingerprints + offered);
 * 5. only entries of OTHER key types exist → `unknown`, whatever the policy, and nothing is pinned. This is the
 *    golang/go#49631 case. Pinning a new key type on first sight would let anyone who can answer for the host with
 *    an algorithm we have not pinned yet get trusted, so kay refuses and the operator decides (`kay trust repin`).
 *    Callers avoid hitting this for healthy hosts by offering the pinned types first
 *    ({@link KnownHostsStore.preferredHostKeyAlgorithms}), as OpenSSH orders HostKeyAlgorithms by known keys;
 * 6. no entries at all → policy `yes`: `unknown`; policy `accept-new`: append one line for the alias and the
 *    address to the pin file and return `pinned`.
 *
 * Writes: the pin file is only ever appended to automatically (one write per pin, O_APPEND, serialised through
 * one in-process queue, deduplicated under that queue); it is rewritten only by the explicit {@link
 * KnownHostsStore.repin} / {@link KnownHostsStore.forget} (temp file + rename). `@cert-authority` lines are parsed
 * and kept but not used for trust (kay does not accept host certificates). The pin file is plain (not hashed) so
 * `kay trust list` can show names. The in-memory view of the files is loaded once per store; another process's
 * later edits are not seen until a new store is created.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { appendFile, chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { parseHostSpec } from '../config/hostlist.js'
import { matchPattern } from '../config/patterns.js'
import {
  ConfigError,
  ConnectError,
  HostKeyMismatchError,
  HostKeyRevokedError,
  HostKeyUnknownError,
  type KayError,
} from '../errors.js'
import type { HostKeyTarget, HostKeyVerdict, HostKeyVerifier, HostTarget, StrictHostKeyChecking } from '../types.js'

/** `SHA256:<base64, no padding>` of an SSH wire-format public key blob, as `ssh-keygen -l` prints it. */
export function fingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`
}

/** The key type name inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...), or undefined if malformed. */
export function keyTypeOf(keyBlob: Buffer): string | undefined {
  if (keyBlob.length < 4) return undefined
  const len = keyBlob.readUInt32BE(0)
  if (len === 0 || len > 64 || len > keyBlob.length - 4) return undefined
  const type = keyBlob.toString('latin1', 4, 4 + len)
  return /^[\x21-\x7e]+$/.test(type) ? type : undefined
}

/** The name known_hosts uses for a host: `host` on port 22, `[host]:port` otherwise. Lower-cased. */
export function knownHostsName(host: string, port: number): string {
  const h = host.toLowerCase()
  return port === 22 ? h : `[${h}]:${port}`
}

export type KnownHostsMarker = 'revoked' | 'cert-authority'

/** One parsed known_hosts line. */
export interface KnownHostsEntry {
  marker?: KnownHostsMarker
  /** Host patterns as written (a hashed entry is one `|1|salt|hash` pattern). */
  patterns: string[]
  keyType: string
  key: Buffer
  comment?: string
  /** 1-based line number. */
  line: number
}

export interface ParsedKnownHosts {
  entries: KnownHostsEntry[]
  /** Lines that were neither blank, comment, nor a valid entry (skipped). */
  malformed: number
}

const B64_RE = /^[A-Za-z0-9+/]+={0,2}$/

function decodeBase64Strict(s: string): Buffer | undefined {
  if (!B64_RE.test(s)) return undefined
  const buf = Buffer.from(s, 'base64')
  // Buffer.from is lenient; a round trip catches truncated or garbage input.
  if (buf.toString('base64').replace(/=+$/, '') !== s.replace(/=+$/, '')) return undefined
  return buf
}

interface HashedPattern {
  salt: Buffer
  hash: Buffer
}

function parseHashed(pattern: string): HashedPattern | undefined {
  const m = /^\|1\|([^|]+)\|([^|]+)$/.exec(pattern)
  if (!m) return undefined
  const salt = decodeBase64Strict(m[1] as string)
  const hash = decodeBase64Strict(m[2] as string)
  if (!salt || !hash || salt.length !== 20 || hash.length !== 20) return undefined
  return { salt, hash }
}

/** Parse one line; undefined for blank/comment, 'malformed' for anything that is not a valid entry. */
export function parseKnownHostsLine(raw: string, line = 0): KnownHostsEntry | 'malformed' | undefined {
  const text = raw.trim()
  if (text === '' || text.startsWith('#')) return undefined
  const fields = text.split(/[ \t]+/)
  let marker: KnownHostsMarker | undefined
  if (fields[0]?.startsWith('@')) {
    const m = fields.shift()
    if (m === '@revoked') marker = 'revoked'
    else if (m === '@cert-authority') marker = 'cert-authority'
    else return 'malformed'
  }
  const [hosts, keyType, b64, ...rest] = fields
  if (hosts === undefined || keyType === undefined || b64 === undefined) return 'malformed'
  const patterns = hosts.split(',')
  if (patterns.some((p) => p === '' || (p.startsWith('|') && (patterns.length > 1 || !parseHashed(p))))) {
    return 'malformed'
  }
  const key = decodeBase64Strict(b64)
  if (!key || keyTypeOf(key) !== keyType) return 'malformed'
  const entry: KnownHostsEntry = { patterns, keyType, key, line }
  if (marker !== undefined) entry.marker = marker
  if (rest.length > 0) entry.comment = rest.join(' ')
  return entry
}

/** Parse a whole known_hosts file. Never throws: bad lines are counted and skipped. */
export function parseKnownHosts(text: string): ParsedKnownHosts {
  const entries: KnownHostsEntry[] = []
  let malformed = 0
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const e = parseKnownHostsLine(lines[i] as string, i + 1)
    if (e === 'malformed') malformed++
    else if (e !== undefined) entries.push(e)
  }
  return { entries, malformed }
}

/*
 * Hashed entries cost one HMAC-SHA1 per (entry, name): salts differ per entry, so nothing can be indexed. With a
 * big hashed ~/.ssh/known_hosts and thousands of hosts that is millions of HMACs, and node:crypto's createHmac
 * costs ~8 µs each (object set-up, not hashing). So the HMAC is done here in plain JS over precomputed state:
 * per entry the SHA-1 states after the ipad and opad blocks are computed once; per name the padded message block
 * is built once; a check is then two compressions (~0.3 µs). Names longer than one block use createHmac.
 */
const SHA1_IV = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0]
const W = new Int32Array(80)

/** One SHA-1 compression of a 16-word block into `h` (in place). */
function sha1Compress(h: Int32Array, block: Int32Array): void {
  for (let t = 0; t < 16; t++) W[t] = block[t] as number
  for (let t = 16; t < 80; t++) {
    const x = (W[t - 3] as number) ^ (W[t - 8] as number) ^ (W[t - 14] as number) ^ (W[t - 16] as number)
    W[t] = (x << 1) | (x >>> 31)
  }
  let a = h[0] as number
  let b = h[1] as number
  let c = h[2] as number
  let d = h[3] as number
  let e = h[4] as number
  for (let t = 0; t < 80; t++) {
    let f: number
    let k: number
    if (t < 20) {
      f = (b & c) | (~b & d)
      k = 0x5a827999
    } else if (t < 40) {
      f = b ^ c ^ d
      k = 0x6ed9eba1
    } else if (t < 60) {
      f = (b & c) | (b & d) | (c & d)
      k = 0x8f1bbcdc
    } else {
      f = b ^ c ^ d
      k = 0xca62c1d6
    }
    const tmp = (((a << 5) | (a >>> 27)) + f + e + k + (W[t] as number)) | 0
    e = d
    d = c
    c = (b << 30) | (b >>> 2)
    b = a
    a = tmp
  }
  h[0] = ((h[0] as number) + a) | 0
  h[1] = ((h[1] as number) + b) | 0
  h[2] = ((h[2] as number) + c) | 0
  h[3] = ((h[3] as number) + d) | 0
  h[4] = ((h[4] as number) + e) | 0
}

/** 64 bytes → 16 big-endian words. */
function toWords(bytes: Buffer): Int32Array {
  const w = new Int32Array(16)
  for (let i = 0; i < 16; i++) w[i] = bytes.readInt32BE(i * 4)
  return w
}

interface HmacState {
  inner: Int32Array
  outer: Int32Array
  expected: Int32Array
}

const hmacStates = new WeakMap<HashedPattern, HmacState>()
/** The parsed hashed pattern of an entry (hashed entries have exactly one pattern), kept as long as the entry. */
const entryHashes = new WeakMap<KnownHostsEntry, HashedPattern | null>()

function hashedOf(entry: KnownHostsEntry, pattern: string): HashedPattern | undefined {
  let h = entryHashes.get(entry)
  if (h === undefined) {
    h = parseHashed(pattern) ?? null
    entryHashes.set(entry, h)
  }
  return h ?? undefined
}

function hmacState(h: HashedPattern): HmacState {
  let st = hmacStates.get(h)
  if (st === undefined) {
    // Salts are 20 bytes (checked by parseHashed), shorter than the 64-byte block: no pre-hashing of the key.
    const key = Buffer.alloc(64)
    h.salt.copy(key)
    const ipad = Buffer.alloc(64)
    const opad = Buffer.alloc(64)
    for (let i = 0; i < 64; i++) {
      ipad[i] = (key[i] as number) ^ 0x36
      opad[i] = (key[i] as number) ^ 0x5c
    }
    const inner = Int32Array.from(SHA1_IV)
    sha1Compress(inner, toWords(ipad))
    const outer = Int32Array.from(SHA1_IV)
    sha1Compress(outer, toWords(opad))
    const expected = new Int32Array(5)
    for (let i = 0; i < 5; i++) expected[i] = h.hash.readInt32BE(i * 4)
    st = { inner, outer, expected }
    hmacStates.set(h, st)
  }
  return st
}

/** The padded inner message block for a name (after the 64-byte ipad block), or undefined if it needs two. */
const nameBlocks = new Map<string, Int32Array | null>()
function nameBlock(name: string): Int32Array | undefined {
  let b = nameBlocks.get(name)
  if (b === undefined) {
    const bytes = Buffer.from(name, 'utf8')
    if (bytes.length > 55) b = null
    else {
      const block = Buffer.alloc(64)
      bytes.copy(block)
      block[bytes.length] = 0x80
      block.writeUInt32BE((64 + bytes.length) * 8, 60)
      b = toWords(block)
    }
    // Bounded: names repeat across lookups, but a long-running process must not grow without limit.
    if (nameBlocks.size >= 65_536) nameBlocks.clear()
    nameBlocks.set(name, b)
  }
  return b ?? undefined
}

const scratch = new Int32Array(5)
const outerBlock = new Int32Array(16)

/** HMAC-SHA1 of the name keyed by the salt equals the stored hash? (as `ssh-keygen -H` writes it) */
function hashedMatches(h: HashedPattern, name: string): boolean {
  const block = nameBlock(name)
  if (block === undefined) return createHmac('sha1', h.salt).update(name).digest().equals(h.hash)
  const st = hmacState(h)
  scratch.set(st.inner)
  sha1Compress(scratch, block)
  outerBlock.fill(0)
  outerBlock.set(scratch)
  outerBlock[5] = 0x80000000 | 0
  outerBlock[15] = (64 + 20) * 8
  scratch.set(st.outer)
  sha1Compress(scratch, outerBlock)
  for (let i = 0; i < 5; i++) if (scratch[i] !== st.expected[i]) return false
  return true
}

/** Hash a name the way `ssh-keygen -H` does (useful for tests and for `kay trust` tooling). */
export function hashKnownHostsName(name: string, salt: Buffer = randomBytes(20)): string {
  const hash = createHmac('sha1', salt).update(name).digest()
  return `|1|${salt.toString('base64')}|${hash.toString('base64')}`
}

/**
 * Does an entry apply to a (lower-cased) name? OpenSSH match_hostname: a matching negated pattern excludes the
 * entry whatever else matches; otherwise any matching pattern includes it.
 */
export function entryMatchesName(entry: KnownHostsEntry, name: string): boolean {
  let matched = false
  for (const p of entry.patterns) {
    if (p.startsWith('|')) {
      const h = hashedOf(entry, p)
      if (h && hashedMatches(h, name)) matched = true
      continue
    }
    const neg = p.startsWith('!')
    if (matchPattern(name, (neg ? p.slice(1) : p).toLowerCase())) {
      if (neg) return false
      matched = true
    }
  }
  return matched
}

/** The names a target is known by: its alias (as named) and its address with port. */
export function targetNames(target: HostKeyTarget): string[] {
  const names: string[] = []
  try {
    const spec = parseHostSpec(target.id)
    names.push(spec.port === undefined ? spec.host.toLowerCase() : knownHostsName(spec.host, spec.port))
  } catch {
    // An id that is not a host spec (should not happen): pin by address only.
  }
  const addr = knownHostsName(target.hostname, target.port)
  if (!names.includes(addr)) names.push(addr)
  return names
}

/** A verdict with, for `unknown`, the key types already pinned for the host (the golang/go#49631 case). */
export type KnownHostsVerdict = HostKeyVerdict | { kind: 'unknown'; fingerprint: string; pinnedTypes: string[] }

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
      return new HostKeyRevokedError(`host key ${verdict.offered} of ${host} is marked @revoked`, {
        host,
        details: { offered: verdict.offered },
      })
  }
}

/** A parsed file with an index by literal name; wildcard, negated and hashed entries are scanned. */
class KnownHostsFile {
  readonly byName = new Map<string, KnownHostsEntry[]>()
  readonly scanned: KnownHostsEntry[] = []
  readonly entries: KnownHostsEntry[] = []
  /** Every @revoked entry, whatever its patterns: checked even on the fast path. */
  readonly revoked: KnownHostsEntry[] = []
  malformed = 0

  constructor(text: string) {
    const parsed = parseKnownHosts(text)
    this.malformed = parsed.malformed
    for (const e of parsed.entries) this.add(e)
  }

  add(e: KnownHostsEntry): void {
    this.entries.push(e)
    if (e.marker === 'revoked') this.revoked.push(e)
    if (e.patterns.some((p) => /[*?!|]/.test(p))) {
      this.scanned.push(e)
      return
    }
    for (const p of e.patterns) {
      const k = p.toLowerCase()
      const list = this.byName.get(k)
      if (list) list.push(e)
      else this.byName.set(k, [e])
    }
  }

  lookup(names: readonly string[], out: Set<KnownHostsEntry>): void {
    this.lookupLiteral(names, out)
    for (const e of this.scanned) if (names.some((n) => entryMatchesName(e, n))) out.add(e)
  }

  /** Entries naming a host literally, plus matching @revoked ones: no hashing, no wildcard scan. */
  lookupLiteral(names: readonly string[], out: Set<KnownHostsEntry>): void {
    for (const n of names) for (const e of this.byName.get(n) ?? []) out.add(e)
    for (const e of this.revoked) if (names.some((n) => entryMatchesName(e, n))) out.add(e)
  }
}

export interface KnownHostsStoreOptions {
  /** kay's pin file. Default `~/.config/kay/known_hosts`. */
  path?: string
  /** Read-only user files, replaced per host by `HostTarget.userKnownHostsFiles`. Default ~/.ssh/known_hosts{,2}. */
  userFiles?: readonly string[]
  /** Read-only global files, always read. Default /etc/ssh/ssh_known_hosts{,2}. */
  globalFiles?: readonly string[]
  /** Policy when the target does not carry its own `strictHostKeyChecking`. Default `accept-new`. */
  policy?: StrictHostKeyChecking
  /** Called after a first-use pin was written. */
  onPinned?: (target: HostKeyTarget, fingerprint: string) => void
  /** Home directory for the defaults. Default `os.homedir()`. */
  homeDir?: string
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

/** The target as the store reads it: a HostKeyTarget, optionally with the host's ssh_config trust settings. */
export type KnownHostsTarget = HostKeyTarget &
  Partial<Pick<HostTarget, 'strictHostKeyChecking' | 'userKnownHostsFiles'>>

/** Default location of kay's pin file. */
export function defaultPinFile(homeDir: string = os.homedir()): string {
  return join(homeDir, '.config', 'kay', 'known_hosts')
}

/**
 * kay's {@link HostKeyVerifier}: OpenSSH-format known_hosts files, TOFU pinning into kay's own file.
 * See the module comment for the exact decision rules.
 */
export class KnownHostsStore implements HostKeyVerifier {
  readonly path: string
  readonly #userFiles: readonly string[]
  readonly #globalFiles: readonly string[]
  readonly #policy: StrictHostKeyChecking
  readonly #onPinned: KnownHostsStoreOptions['onPinned']
  /** Read-only files, loaded once each. */
  readonly #readOnly = new Map<string, Promise<KnownHostsFile>>()
  #pins: Promise<{ file: KnownHostsFile; endsWithNewline: boolean }> | undefined
  /** The write queue: every append and rewrite runs after the previous one settled. */
  #tail: Promise<unknown> = Promise.resolve()

  constructor(opts: KnownHostsStoreOptions = {}) {
    const home = opts.homeDir ?? os.homedir()
    this.path = opts.path ?? defaultPinFile(home)
    this.#userFiles = opts.userFiles ?? [join(home, '.ssh', 'known_hosts'), join(home, '.ssh', 'known_hosts2')]
    this.#globalFiles = opts.globalFiles ?? ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2']
    this.#policy = opts.policy ?? 'accept-new'
    this.#onPinned = opts.onPinned
  }

  async verify(target: KnownHostsTarget, key: Buffer): Promise<KnownHostsVerdict> {
    const names = targetNames(target)
    const policy = target.strictHostKeyChecking ?? this.#policy
    const readOnly = await this.#readOnlyFiles(target)
    const pins = await this.#loadPins()
    const decision = decide(names, key, policy, [pins.file, ...readOnly])
    if (decision !== 'pin') return decision
    return this.#serialize(async () => {
      // Re-decide under the queue: a concurrent verify may have pinned this host meanwhile. Only the pin file can
      // have changed; the read-only files held nothing for these names (or we would not be pinning).
      const current = await this.#loadPins()
      const again = decide(names, key, policy, [current.file])
      if (again !== 'pin') return again
      const line = `${names.join(',')} ${keyTypeOf(key)} ${key.toString('base64')}\n`
      await this.#append(current, line)
      const entry = parseKnownHostsLine(line, current.file.entries.length + 1)
      if (entry && entry !== 'malformed') current.file.add(entry)
      const fp = fingerprint(key)
      this.#onPinned?.(target, fp)
      return { kind: 'pinned', fingerprint: fp } as const
    })
  }

  /**
   * ssh2 host key algorithm names for the key types pinned for this target (empty when none), to put first in
   * `algorithms.serverHostKey` so a host with several keys presents the pinned one.
   */
  async preferredHostKeyAlgorithms(target: KnownHostsTarget): Promise<string[]> {
    const names = targetNames(target)
    const found = new Set<KnownHostsEntry>()
    for (const f of [(await this.#loadPins()).file, ...(await this.#readOnlyFiles(target))]) f.lookup(names, found)
    const out: string[] = []
    for (const e of found) {
      if (e.marker !== undefined) continue
      const algs = e.keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [e.keyType]
      for (const a of algs) if (!out.includes(a)) out.push(a)
    }
    return out
  }

  /** Entries of the pin file (and, with `all`, of the read-only default files too). */
  async list(opts: { all?: boolean } = {}): Promise<KnownHostsListing[]> {
    const files: Array<[string, KnownHostsFile]> = [[this.path, (await this.#loadPins()).file]]
    if (opts.all) {
      for (const p of [...this.#userFiles, ...this.#globalFiles]) files.push([p, await this.#readOnlyFile(p)])
    }
    const out: KnownHostsListing[] = []
    for (const [file, f] of files) {
      for (const e of f.entries) {
        const l: KnownHostsListing = {
          file,
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
   * Strings are `[user@]host[:port]` specs. Returns how many lines were removed. Explicit rewrite: temp + rename.
   */
  async forget(hosts: ReadonlyArray<string | HostKeyTarget>): Promise<number> {
    const names = new Set(hosts.flatMap(namesOf))
    return this.#serialize(async () => this.#rewrite(names, []))
  }

  /** Replace the pins of these hosts with the given keys (forget, then pin), in one atomic rewrite. */
  async repin(entries: ReadonlyArray<{ target: HostKeyTarget; key: Buffer }>): Promise<void> {
    const names = new Set(entries.flatMap((e) => targetNames(e.target)))
    const lines = entries.map((e) => {
      const type = keyTypeOf(e.key)
      if (type === undefined) throw new ConfigError(`repin ${e.target.id}: not an SSH public key blob`)
      return `${targetNames(e.target).join(',')} ${type} ${e.key.toString('base64')}`
    })
    await this.#serialize(async () => this.#rewrite(names, lines))
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
      if (e && e !== 'malformed' && e.patterns.some((p) => namesPattern(p, names))) removed++
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
        (text) => ({ file: new KnownHostsFile(text), endsWithNewline: text === '' || text.endsWith('\n') }),
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return { file: new KnownHostsFile(''), endsWithNewline: true }
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
        (t) => new KnownHostsFile(t),
        () => new KnownHostsFile(''),
      )
      this.#readOnly.set(path, p)
    }
    return p
  }

  async #readOnlyFiles(target: KnownHostsTarget): Promise<KnownHostsFile[]> {
    const paths = [...(target.userKnownHostsFiles ?? this.#userFiles), ...this.#globalFiles]
    return Promise.all(paths.filter((p) => p !== this.path).map((p) => this.#readOnlyFile(p)))
  }
}

/** The decision over loaded files; 'pin' means "record it" (accept-new, nothing known for the host). */
function decide(
  names: readonly string[],
  key: Buffer,
  policy: StrictHostKeyChecking,
  files: readonly KnownHostsFile[],
): KnownHostsVerdict | 'pin' {
  // Fast path for the common case (a literal pin holds the key): skip HMAC-ing every hashed entry of big files.
  const quick = new Set<KnownHostsEntry>()
  for (const f of files) f.lookupLiteral(names, quick)
  const quickEntries = [...quick]
  if (
    !quickEntries.some((e) => e.marker === 'revoked' && e.key.equals(key)) &&
    (policy === 'no' || quickEntries.some((e) => e.marker === undefined && e.key.equals(key)))
  ) {
    return { kind: 'trusted' }
  }
  const found = new Set<KnownHostsEntry>()
  for (const f of files) f.lookup(names, found)
  const offered = fingerprint(key)
  const entries = [...found]
  if (entries.some((e) => e.marker === 'revoked' && e.key.equals(key))) return { kind: 'revoked', offered }
  if (policy === 'no') return { kind: 'trusted' }
  const plain = entries.filter((e) => e.marker === undefined)
  if (plain.some((e) => e.key.equals(key))) return { kind: 'trusted' }
  const type = keyTypeOf(key)
  const same = plain.filter((e) => e.keyType === type)
  if (same.length > 0) return { kind: 'mismatch', expected: [...new Set(same.map((e) => fingerprint(e.key)))], offered }
  if (plain.length > 0) {
    return { kind: 'unknown', fingerprint: offered, pinnedTypes: [...new Set(plain.map((e) => e.keyType))] }
  }
  if (type === undefined) return { kind: 'unknown', fingerprint: offered }
  return policy === 'accept-new' ? 'pin' : { kind: 'unknown', fingerprint: offered }
}

function namesOf(h: string | HostKeyTarget): string[] {
  if (typeof h !== 'string') return targetNames(h)
  const spec = parseHostSpec(h)
  return [spec.port === undefined ? spec.host.toLowerCase() : knownHostsName(spec.host, spec.port)]
}

/** Does a pattern name one of these hosts literally (or by hash)? Wildcards never do. */
function namesPattern(pattern: string, names: ReadonlySet<string>): boolean {
  if (pattern.startsWith('|')) {
    const h = parseHashed(pattern)
    return h !== undefined && [...names].some((n) => hashedMatches(h, n))
  }
  return names.has(pattern.toLowerCase())
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
