/**
 * The known_hosts format, read as OpenSSH's hostfile.c reads it: lines (markers, host patterns, hashed names, keys),
 * name matching (match_hostname, HMAC-SHA1 hashed names) and a parsed file indexed by literal name. The trust
 * decision over these files is in known-hosts.ts.
 *
 * Parsing follows hostkeys_foreach_file(): only spaces and tabs separate fields (a byte-order mark is part of the
 * first field, so a line it starts matches no host, as in ssh), a hashed name is the whole host field, a key ssh
 * cannot read makes the line invalid, invalid lines are skipped.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { matchPattern } from '../config/patterns.js'
import { isWellFormedKeyBlob } from './certificates.js'

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

/** Skip spaces and tabs only, as hostfile.c does (a byte-order mark or a form feed is not whitespace there). */
function skipBlanks(s: string, i: number): number {
  while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++
  return i
}

/** The end of a field: the next space or tab. */
function fieldEnd(s: string, i: number): number {
  while (i < s.length && s[i] !== ' ' && s[i] !== '\t') i++
  return i
}

/**
 * Parse one line; undefined for blank/comment, 'malformed' for anything that is not a valid entry. Fields are
 * separated by spaces and tabs only; a trailing CR (a CRLF file) is ignored, as ssh's base64 decoder does.
 */
export function parseKnownHostsLine(raw: string, line = 0): KnownHostsEntry | 'malformed' | undefined {
  const nl = raw.indexOf('\n')
  const oneLine = nl >= 0 ? raw.slice(0, nl) : raw
  const text = oneLine.endsWith('\r') ? oneLine.slice(0, -1) : oneLine
  let i = skipBlanks(text, 0)
  if (i === text.length || text[i] === '#') return undefined
  let marker: KnownHostsMarker | undefined
  if (text[i] === '@') {
    // check_markers(): the marker ends at the first space (else the first tab) of the rest of the line.
    const sp = text.indexOf(' ', i)
    const end = sp >= 0 ? sp : text.indexOf('\t', i)
    if (end < 0) return 'malformed'
    const m = text.slice(i, end)
    if (m === '@revoked') marker = 'revoked'
    else if (m === '@cert-authority') marker = 'cert-authority'
    else return 'malformed'
    i = skipBlanks(text, end)
    // Only one marker is allowed.
    if (text[i] === '@') return 'malformed'
  }
  const hostsEnd = fieldEnd(text, i)
  const hosts = text.slice(i, hostsEnd)
  i = skipBlanks(text, hostsEnd)
  const typeEnd = fieldEnd(text, i)
  const keyType = text.slice(i, typeEnd)
  i = skipBlanks(text, typeEnd)
  const b64End = fieldEnd(text, i)
  const b64 = text.slice(i, b64End)
  const comment = text.slice(skipBlanks(text, b64End)).trimEnd()
  if (hosts === '' || keyType === '' || b64 === '') return 'malformed'
  // A hashed entry is its whole host field (match_maybe_hashed); a list after it never matches.
  const patterns = hosts.startsWith('|') ? [hosts] : hosts.split(',')
  if (patterns.some((p) => p === '') || (hosts.startsWith('|') && !parseHashed(hosts))) return 'malformed'
  const key = decodeBase64Strict(b64)
  if (!key || keyTypeOf(key) !== keyType || !isWellFormedKeyBlob(key)) return 'malformed'
  const entry: KnownHostsEntry = { patterns, keyType, key, line }
  if (marker !== undefined) entry.marker = marker
  if (comment !== '') entry.comment = comment
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

/** A parsed file with an index by literal name; wildcard, negated and hashed entries are scanned. */
export class KnownHostsFile {
  readonly byName = new Map<string, KnownHostsEntry[]>()
  readonly scanned: KnownHostsEntry[] = []
  readonly entries: KnownHostsEntry[] = []
  /** Every @revoked entry, whatever its patterns: checked even on the fast path. */
  readonly revoked: KnownHostsEntry[] = []
  malformed = 0

  constructor(
    readonly path: string,
    text: string,
  ) {
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

  /** Entries for any of the names, in file order. */
  lookup(names: readonly string[]): KnownHostsEntry[] {
    const out = new Set<KnownHostsEntry>()
    this.lookupLiteral(names, out)
    for (const e of this.scanned) if (names.some((n) => entryMatchesName(e, n))) out.add(e)
    return [...out].sort((a, b) => a.line - b.line)
  }

  /** Entries naming a host literally, plus matching @revoked ones: no hashing, no wildcard scan. */
  lookupLiteral(names: readonly string[], out: Set<KnownHostsEntry>): void {
    for (const n of names) for (const e of this.byName.get(n) ?? []) out.add(e)
    for (const e of this.revoked) if (names.some((n) => entryMatchesName(e, n))) out.add(e)
  }
}

/** Does a pattern name one of these hosts literally (or by hash)? Wildcards never do. */
export function namesPattern(pattern: string, names: ReadonlySet<string>): boolean {
  if (pattern.startsWith('|')) {
    const h = parseHashed(pattern)
    return h !== undefined && [...names].some((n) => hashedMatches(h, n))
  }
  return names.has(pattern.toLowerCase())
}
