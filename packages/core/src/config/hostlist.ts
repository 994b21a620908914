/**
 * pdsh / ClusterShell style host lists.
 *
 * Grammar (informal):
 *
 * ```
 * list    := item ( (',' | whitespace) item )*      commas inside [...] belong to the range, not the list
 * item    := [user '@'] host [':' port]             host may hold any number of range groups
 * host    := ( text | '[' ranges ']' )+  |  '[' ipv6 ']'
 * ranges  := range ( ',' range )*
 * range   := N | N '-' M [ '/' step ]  |  a | a '-' z   (digits keep the lower bound's width: [01-10] → 01..10)
 * ```
 *
 * Several groups expand as a cartesian product, left to right (`db[1-2]-[a-b]` → db1-a, db1-b, db2-a, db2-b).
 * Expansion is counted before anything is generated, so `web[1-999999999]` fails fast with
 * {@link ExpansionLimitError} instead of exhausting memory.
 */
import { readFile } from 'node:fs/promises'
import { ConfigError, ExpansionLimitError } from '../errors.js'

/** Default cap on the number of hosts one expression (or host file) may expand to. */
const DEFAULT_EXPANSION_LIMIT = 1_000_000

/** A `[user@]host[:port]` spec, split. */
export interface HostSpec {
  user?: string
  host: string
  port?: number
}

export interface ExpandOptions {
  /** Most hosts the whole expansion may produce (before exclusion and dedupe). Default 1,000,000. */
  limit?: number
  /**
   * `-x` exclusions: expressions themselves. An exclusion with a user or port removes only that exact spec;
   * a bare host removes that host whatever its user or port.
   */
  exclude?: string | readonly string[]
}

/** One `[...]` group: the generated strings are produced lazily from these segments. */
type Segment =
  | { kind: 'num'; lo: bigint; hi: bigint; step: bigint; width: number }
  | { kind: 'chr'; lo: number; hi: number }

type Part = string | Segment[]

interface ParsedItem {
  user: string | undefined
  port: number | undefined
  /** Text pieces and range groups making up the host. */
  parts: Part[]
  /** True for an IPv6 literal written as `[addr]` / `[addr]:port`. */
  ipv6: boolean
  count: number
}

const RANGE_NUM = /^(\d+)(?:-(\d+)(?:\/(\d+))?)?$/
const RANGE_CHR = /^([a-zA-Z])(?:-([a-zA-Z]))?$/
const USER_RE = /^[A-Za-z0-9._][A-Za-z0-9._-]*\$?$/
const HOST_TEXT_RE = /^[A-Za-z0-9._-]*$/

/** Split a list at top-level commas and whitespace; commas inside brackets stay. */
function splitTopLevel(expr: string): string[] {
  const out: string[] = []
  let depth = 0
  let cur = ''
  for (const ch of expr) {
    if (ch === '[') depth++
    else if (ch === ']') depth--
    if (depth < 0) throw new ConfigError(`unbalanced ']' in host expression '${expr}'`)
    if (depth === 0 && (ch === ',' || ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r')) {
      if (cur !== '') out.push(cur)
      cur = ''
      continue
    }
    cur += ch
  }
  if (depth !== 0) throw new ConfigError(`unbalanced '[' in host expression '${expr}'`)
  if (cur !== '') out.push(cur)
  return out
}

function parsePort(text: string, token: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new ConfigError(`bad port '${text}' in host spec '${token}'`)
  const port = Number(text)
  if (port < 1 || port > 65535) throw new ConfigError(`port ${port} out of range in host spec '${token}'`)
  return port
}

function parseGroup(body: string, token: string): { segments: Segment[]; count: number } {
  if (body === '') throw new ConfigError(`empty range '[]' in host expression '${token}'`)
  const segments: Segment[] = []
  let count = 0
  for (const raw of body.split(',')) {
    const piece = raw.trim()
    const num = RANGE_NUM.exec(piece)
    if (num) {
      const loText = num[1] as string
      const lo = BigInt(loText)
      const hi = num[2] === undefined ? lo : BigInt(num[2])
      const step = num[3] === undefined ? 1n : BigInt(num[3])
      if (hi < lo) throw new ConfigError(`descending range '${piece}' in host expression '${token}'`)
      if (step < 1n) throw new ConfigError(`bad step in range '${piece}' in host expression '${token}'`)
      segments.push({ kind: 'num', lo, hi, step, width: loText.length })
      // Clamp: anything past the safe range is past any sane limit anyway.
      const n = (hi - lo) / step + 1n
      count += n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n)
      continue
    }
    const chr = RANGE_CHR.exec(piece)
    if (chr) {
      const lo = (chr[1] as string).charCodeAt(0)
      const hi = chr[2] === undefined ? lo : chr[2].charCodeAt(0)
      const sameCase = lo >= 97 === hi >= 97
      if (hi < lo || !sameCase) throw new ConfigError(`bad letter range '${piece}' in host expression '${token}'`)
      segments.push({ kind: 'chr', lo, hi })
      count += hi - lo + 1
      continue
    }
    throw new ConfigError(`bad range '${piece}' in host expression '${token}'`)
  }
  return { segments, count }
}

/** Parse one top-level item (no top-level commas) without expanding it. */
function parseItem(token: string): ParsedItem {
  let rest = token
  let user: string | undefined
  const at = rest.lastIndexOf('@')
  if (at >= 0) {
    user = rest.slice(0, at)
    rest = rest.slice(at + 1)
    if (!USER_RE.test(user)) throw new ConfigError(`bad user '${user}' in host spec '${token}'`)
  }
  // IPv6 literal: `[addr]` or `[addr]:port` — a bracket body containing ':' is never a range.
  const v6 = /^\[([0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*)\](?::(\d+))?$/.exec(rest)
  if (v6) {
    const port = v6[2] === undefined ? undefined : parsePort(v6[2], token)
    return { user, port, parts: [(v6[1] as string).toLowerCase()], ipv6: true, count: 1 }
  }
  let port: number | undefined
  const colon = rest.lastIndexOf(':')
  if (colon >= 0 && rest.indexOf(']', colon) < 0) {
    port = parsePort(rest.slice(colon + 1), token)
    rest = rest.slice(0, colon)
  }
  if (rest === '') throw new ConfigError(`empty host in host spec '${token}'`)
  const parts: Part[] = []
  let count = 1
  let i = 0
  while (i < rest.length) {
    const open = rest.indexOf('[', i)
    const text = open < 0 ? rest.slice(i) : rest.slice(i, open)
    if (!HOST_TEXT_RE.test(text)) throw new ConfigError(`bad character in host '${rest}' of host spec '${token}'`)
    if (text !== '') parts.push(text)
    if (open < 0) break
    const close = rest.indexOf(']', open)
    if (close < 0) throw new ConfigError(`unbalanced '[' in host expression '${token}'`)
    const group = parseGroup(rest.slice(open + 1, close), token)
    parts.push(group.segments)
    count *= group.count
    i = close + 1
  }
  if (!Number.isFinite(count) || count > Number.MAX_SAFE_INTEGER) count = Number.MAX_SAFE_INTEGER
  return { user, port, parts, ipv6: false, count }
}

function* segmentValues(segments: Segment[]): Generator<string> {
  for (const s of segments) {
    if (s.kind === 'chr') {
      for (let c = s.lo; c <= s.hi; c++) yield String.fromCharCode(c)
    } else if (s.hi <= BigInt(Number.MAX_SAFE_INTEGER)) {
      const lo = Number(s.lo)
      const hi = Number(s.hi)
      const step = Number(s.step)
      for (let n = lo; n <= hi; n += step) yield String(n).padStart(s.width, '0')
    } else {
      for (let n = s.lo; n <= s.hi; n += s.step) yield n.toString().padStart(s.width, '0')
    }
  }
}

function formatSpec(user: string | undefined, host: string, port: number | undefined, ipv6: boolean): string {
  const h = ipv6 && port !== undefined ? `[${host}]` : host
  return `${user === undefined ? '' : `${user}@`}${h}${port === undefined ? '' : `:${port}`}`
}

function expandItem(item: ParsedItem, out: string[]): void {
  const rec = (idx: number, prefix: string): void => {
    if (idx === item.parts.length) {
      out.push(formatSpec(item.user, prefix, item.port, item.ipv6))
      return
    }
    const part = item.parts[idx] as Part
    if (typeof part === 'string') rec(idx + 1, prefix + part)
    else for (const v of segmentValues(part)) rec(idx + 1, prefix + v)
  }
  rec(0, '')
}

/**
 * Parses the top-level tokens of `text` onto `items` and returns the running host count, which must stay within
 * `limit` (`what` names the input in the error).
 */
function pushItems(items: ParsedItem[], text: string, total: number, limit: number, what: string): number {
  for (const token of splitTopLevel(text)) {
    const item = parseItem(token)
    total += item.count
    if (total > limit) {
      throw new ExpansionLimitError(`${what} expands to more than ${limit} hosts (at '${token}')`, {
        details: { limit, token },
      })
    }
    items.push(item)
  }
  return total
}

function parseList(exprs: readonly string[], limit: number): ParsedItem[] {
  const items: ParsedItem[] = []
  let total = 0
  for (const expr of exprs) total = pushItems(items, expr, total, limit, 'host expression')
  return items
}

/**
 * Expand one or more host expressions into `[user@]host[:port]` specs, in order, deduplicated (first seen wins),
 * minus exclusions. Throws {@link ConfigError} naming the bad token, or {@link ExpansionLimitError}.
 */
export function expandHostList(expr: string | readonly string[], opts: ExpandOptions = {}): string[] {
  const limit = opts.limit ?? DEFAULT_EXPANSION_LIMIT
  const exprs = typeof expr === 'string' ? [expr] : expr
  const expanded: string[] = []
  for (const item of parseList(exprs, limit)) expandItem(item, expanded)
  return applyExclusions(dedupe(expanded), opts.exclude, limit)
}

function applyExclusions(hosts: string[], exclude: ExpandOptions['exclude'], limit: number): string[] {
  if (exclude === undefined || exclude.length === 0) return hosts
  const exact = new Set<string>()
  const bare = new Set<string>()
  const excluded: string[] = []
  for (const item of parseList(typeof exclude === 'string' ? [exclude] : exclude, limit)) expandItem(item, excluded)
  for (const spec of excluded) {
    const s = parseHostSpec(spec)
    if (s.user === undefined && s.port === undefined) bare.add(s.host)
    else exact.add(spec)
  }
  return hosts.filter((h) => !exact.has(h) && !bare.has(parseHostSpec(h).host))
}

/** Remove duplicates, keeping the first occurrence's position. */
function dedupe<T>(items: Iterable<T>): T[] {
  return [...new Set(items)]
}

/**
 * Split a single `[user@]host[:port]` spec (IPv6 as `[addr]:port`, or a bare address without a port).
 * Host names are lower-cased. Throws {@link ConfigError} for anything malformed, including range groups.
 */
export function parseHostSpec(spec: string): HostSpec {
  const token = spec.trim()
  if (token === '') throw new ConfigError('empty host spec')
  // A bare IPv6 address without brackets has no port.
  if (!token.includes('[') && (token.match(/:/g)?.length ?? 0) > 1) {
    const at = token.lastIndexOf('@')
    const host = token.slice(at + 1)
    if (!/^[0-9A-Fa-f:.%]+$/.test(host)) throw new ConfigError(`bad host spec '${spec}'`)
    const user = at >= 0 ? token.slice(0, at) : undefined
    if (user !== undefined && !USER_RE.test(user)) throw new ConfigError(`bad user '${user}' in host spec '${spec}'`)
    return user === undefined ? { host: host.toLowerCase() } : { user, host: host.toLowerCase() }
  }
  const item = parseItem(token)
  if (item.parts.length !== 1 || typeof item.parts[0] !== 'string') {
    throw new ConfigError(`host spec '${spec}' is an expression, not a single host`)
  }
  const out: HostSpec = { host: item.parts[0].toLowerCase() }
  if (item.user !== undefined) out.user = item.user
  if (item.port !== undefined) out.port = item.port
  return out
}

/** Format a spec back to `[user@]host[:port]` (IPv6 hosts bracketed when a port is present). */
export function formatHostSpec(spec: HostSpec): string {
  return formatSpec(spec.user, spec.host, spec.port, spec.host.includes(':'))
}

/**
 * Parse a host file: one `[user@]host[:port]` (or expression) per line, `#` comments, blank lines ignored.
 * Errors name the line. The limit applies to the whole file.
 */
export function parseHostFile(text: string, opts: ExpandOptions & { source?: string } = {}): string[] {
  const limit = opts.limit ?? DEFAULT_EXPANSION_LIMIT
  const source = opts.source ?? '<host file>'
  const items: ParsedItem[] = []
  let total = 0
  const lines = text.split(/\r?\n/)
  for (let n = 0; n < lines.length; n++) {
    const hash = (lines[n] as string).indexOf('#')
    const line = (hash >= 0 ? (lines[n] as string).slice(0, hash) : (lines[n] as string)).trim()
    if (line === '') continue
    try {
      total = pushItems(items, line, total, limit, 'host file')
    } catch (err) {
      if (err instanceof ConfigError) {
        throw new ConfigError(`${source}:${n + 1}: ${err.message}`, { cause: err, details: { line: n + 1 } })
      }
      throw err
    }
  }
  const expanded: string[] = []
  for (const item of items) expandItem(item, expanded)
  return applyExclusions(dedupe(expanded), opts.exclude, limit)
}

/** Read and parse a host file. A missing or unreadable file is a {@link ConfigError}. */
export async function readHostFile(path: string, opts: ExpandOptions = {}): Promise<string[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read host file '${path}': ${(err as Error).message}`, { cause: err })
  }
  return parseHostFile(text, { ...opts, source: path })
}

/** A name split around one numeric run (or an already-folded group), for folding. */
interface FoldKey {
  before: string
  after: string
  /** Either a digit run or a folded group body (without brackets). */
  values: string[]
}

/** Tokens in a name: digit runs and `[...]` groups, with their positions. */
function numericTokens(name: string): Array<{ start: number; end: number; group: boolean }> {
  const out: Array<{ start: number; end: number; group: boolean }> = []
  const re = /\[[^\]]*\]|\d+/g
  for (let m = re.exec(name); m !== null; m = re.exec(name)) {
    out.push({ start: m.index, end: m.index + m[0].length, group: m[0].startsWith('[') })
  }
  return out
}

/** Fold digit strings into range text: consecutive numbers whose padding round-trips merge. */
function foldNumbers(values: string[]): string {
  const uniq = [...new Set(values)].sort((a, b) => {
    const d = BigInt(a) - BigInt(b)
    return d < 0n ? -1 : d > 0n ? 1 : a.length - b.length
  })
  const ranges: string[] = []
  let start = uniq[0] as string
  let prev = start
  for (let i = 1; i <= uniq.length; i++) {
    const cur = uniq[i]
    if (
      cur !== undefined &&
      BigInt(cur) === BigInt(prev) + 1n &&
      cur === BigInt(cur).toString().padStart(start.length, '0')
    ) {
      prev = cur
      continue
    }
    ranges.push(start === prev ? start : `${start}-${prev}`)
    if (cur !== undefined) {
      start = cur
      prev = cur
    }
  }
  return ranges.join(',')
}

/**
 * Fold host names into a compact expression, the inverse of {@link expandHostList}
 * (`web01 web02 web03 web05` → `web[01-03,05]`; `rack1-n1 rack1-n2 rack2-n1 rack2-n2` → `rack[1-2]-n[1-2]`).
 * Folding is exact: expanding the result gives back the same set of names. Groups keep first-seen order.
 */
export function foldHosts(names: readonly string[]): string {
  let current = dedupe(names)
  // Fold one numeric position per pass, from the last one backwards, so multi-dimensional names fold too.
  const maxTokens = Math.min(8, Math.max(0, ...current.map((n) => numericTokens(n).length)))
  for (let pass = 0; pass < maxTokens; pass++) {
    const groups = new Map<string, FoldKey>()
    const order: Array<string | FoldKey> = []
    for (const name of current) {
      const toks = numericTokens(name)
      const tok = toks[toks.length - 1 - pass]
      if (tok === undefined || tok.group) {
        order.push(name)
        continue
      }
      const before = name.slice(0, tok.start)
      const after = name.slice(tok.end)
      const key = `${before}\u0000${after}`
      let g = groups.get(key)
      if (!g) {
        g = { before, after, values: [] }
        groups.set(key, g)
        order.push(g)
      }
      g.values.push(name.slice(tok.start, tok.end))
    }
    current = order.map((g) => {
      if (typeof g === 'string') return g
      if (new Set(g.values).size === 1) return `${g.before}${g.values[0]}${g.after}`
      return `${g.before}[${foldNumbers(g.values)}]${g.after}`
    })
  }
  return current.join(',')
}
