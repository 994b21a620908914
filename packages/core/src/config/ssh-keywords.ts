/**
 * Every ssh_config keyword OpenSSH 9.2 knows (as Debian builds it: with GSSAPI key exchange, PKCS#11 and Debian's
 * `ProtocolKeepAlives`/`SetupTimeOut` aliases of ServerAliveInterval), and how ssh checks each one's arguments.
 *
 * A line is checked whether or not its block applies, as readconf.c does: a bad value anywhere refuses the file.
 * Keywords kay does not use are only checked; the ones it uses also produce a {@link Setting} the evaluator applies
 * with ssh's "first obtained value wins" rules.
 */
import { matchPatternListResult } from './patterns.js'
import { argvSplit, type Env, expand, strdelim, validEnvName } from './ssh-lex.js'

/** A refused line; the caller adds file and line. */
export class LineError extends Error {}

export type StrictMode = 'yes' | 'no' | 'ask' | 'accept-new'
export type CanonicalizeMode = 'no' | 'yes' | 'always'

/** A ProxyJump value: `none`, or the last hop (dialled directly) and the hops before it (`extra`, as `-J` gets them). */
export type JumpSetting =
  | { none: true }
  | { none: false; host: string; user?: string; port?: number; extra?: string; raw: string }

export interface PermittedCname {
  source: string
  target: string
}

/** What a line means for the keywords kay uses. Others parse to `{ op: 'checked' }`. */
export type Setting =
  | { op: 'user' | 'hostname' | 'hostkeyalias' | 'ignoreunknown' | 'identityagent'; value: string }
  | { op: 'identityfile' | 'certificatefile'; value: string }
  | { op: 'port'; value: number }
  | { op: 'identitiesonly' | 'canonicalizefallbacklocal' | 'batchmode'; value: boolean }
  | { op: 'proxycommand'; value: string }
  | { op: 'proxyjump'; value: JumpSetting }
  /** Seconds; -1 is `none`, which leaves the option unset (a later line may still set it), as in readconf.c. */
  | { op: 'connecttimeout' | 'serveraliveinterval'; value: number }
  | { op: 'serveralivecountmax' | 'canonicalizemaxdots'; value: number }
  | { op: 'userknownhostsfile' | 'globalknownhostsfile' | 'canonicaldomains'; value: string[] }
  | { op: 'stricthostkeychecking'; value: StrictMode }
  | { op: 'canonicalizehostname'; value: CanonicalizeMode }
  | { op: 'canonicalizepermittedcnames'; value: PermittedCname[] }
  | { op: 'addressfamily'; value: 0 | 4 | 6 }
  /** Algorithm lists: ssh assembles the effective (first) one later and refuses `!` entries or an empty result. */
  | { op: 'algorithms'; keyword: AlgorithmKeyword; value: string }
  /** Expanded by `ssh -G` itself (so a bad token or variable refuses the config): RemoteCommand, ControlPath. */
  | { op: 'remotecommand' | 'controlpath'; value: string }
  | { op: 'checked' }

export type AlgorithmKeyword =
  | 'ciphers'
  | 'macs'
  | 'kexalgorithms'
  | 'hostkeyalgorithms'
  | 'casignaturealgorithms'
  | 'hostbasedacceptedalgorithms'
  | 'pubkeyacceptedalgorithms'

export interface LineContext {
  /** The line after the keyword (and the whitespace or `=` after it), unsplit: commands and ProxyJump use it. */
  rest: string
  /** getservbyname(name, "tcp"), for ports given by service name. */
  servicePort(name: string): number | undefined
  /** The environment, for the `${VAR}` ssh checks while reading IdentityAgent, ForwardAgent and forwardings. */
  env: Env
}

type Handler = (args: Args, ctx: LineContext) => Setting

/** The arguments of one line, consumed as readconf.c consumes them; leftovers are "extra arguments". */
class Args {
  #i = 0
  constructor(
    readonly keyword: string,
    readonly list: readonly string[],
  ) {}
  next(): string | undefined {
    return this.list[this.#i++]
  }
  /** The next argument, which must be present and non-empty ("Missing argument"). */
  required(what = 'argument'): string {
    const a = this.next()
    if (a === undefined || a === '') throw new LineError(`missing ${what}`)
    return a
  }
  remaining(): number {
    return Math.max(0, this.list.length - this.#i)
  }
  peek(): string | undefined {
    return this.list[this.#i]
  }
  consumeAll(): void {
    this.#i = this.list.length
  }
}

const FLAG = { true: 1, false: 0, yes: 1, no: 0 } as const
const YESNOASK = { ...FLAG, ask: 2 } as const

function multistate<T extends Record<string, unknown>>(arg: string | undefined, table: T): T[keyof T] {
  if (arg === undefined || arg === '') throw new LineError('missing argument')
  const key = Object.keys(table).find((k) => k === arg.toLowerCase())
  if (key === undefined) throw new LineError(`unsupported option "${arg}"`)
  return table[key as keyof T]
}

const flag: Handler = (a) => {
  multistate(a.next(), FLAG)
  return { op: 'checked' }
}

function choices(...names: string[]): Handler {
  const table = Object.fromEntries(names.map((n) => [n, n]))
  return (a) => {
    multistate(a.next(), table)
    return { op: 'checked' }
  }
}

/** misc.c convtime: `90`, `1m30s`, `2h`; `none` is -1 (ssh's parse_time). */
function parseTime(arg: string | undefined): number {
  if (arg === undefined || arg === '') throw new LineError('missing time value')
  if (arg === 'none') return -1
  const mult: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }
  let total = 0
  let i = 0
  while (i < arg.length) {
    const m = /^[ \t\n\v\f\r]*[+-]?\d+/.exec(arg.slice(i))
    if (m === null) throw new LineError('invalid time value')
    const secs = Number(m[0].trim())
    if (secs < 0 || secs > 2 ** 31 - 1) throw new LineError('invalid time value')
    i += m[0].length
    const unit = arg[i]
    let k = 1
    if (unit !== undefined) {
      const u = mult[unit.toLowerCase()]
      if (u === undefined) throw new LineError('invalid time value')
      k = u
      i++
    }
    total += secs * k
    if (secs * k > 2 ** 31 - 1 || total > 2 ** 31 - 1) throw new LineError('invalid time value')
  }
  return total
}

/** strtonum(s, 0, max): decimal with optional leading whitespace and sign, the whole string. */
function strtonum(s: string, max: number): number | 'invalid' | 'too small' | 'too large' {
  if (!/^[ \t\n\v\f\r]*[+-]?\d+$/.test(s)) return 'invalid'
  const v = Number(s.trim())
  if (v < 0) return 'too small'
  if (v > max) return 'too large'
  return v
}

function parseInteger(arg: string | undefined): number {
  if (arg === undefined || arg === '') throw new LineError('integer value missing')
  const v = strtonum(arg, 2 ** 31 - 1)
  if (typeof v === 'string') throw new LineError(`integer value ${v}`)
  return v
}

/** misc.c a2port: 0-65535 as a number, else a service name; the caller refuses <= 0. */
function a2port(s: string, servicePort: (name: string) => number | undefined): number {
  const v = strtonum(s, 65535)
  if (typeof v === 'number') return v
  return servicePort(s) ?? -1
}

const time: Handler = (a) => {
  parseTime(a.next())
  return { op: 'checked' }
}
const int: Handler = (a) => {
  parseInteger(a.next())
  return { op: 'checked' }
}
const str: Handler = (a) => {
  a.required()
  return { op: 'checked' }
}
/** A keyword whose argument is the rest of the line, verbatim (a shell command). */
const command: Handler = (a) => {
  a.consumeAll()
  return { op: 'checked' }
}
const ignoreAll: Handler = (a) => {
  a.consumeAll()
  return { op: 'checked' }
}

function stringSetting(op: 'user' | 'hostname' | 'hostkeyalias' | 'ignoreunknown'): Handler {
  return (a) => ({ op, value: a.required() })
}

/** The names `ssh -Q` lists on this build (OpenSSH 9.2, OpenSSL 3): what ssh accepts in algorithm lists. */
const CIPHERS = [
  '3des-cbc',
  'aes128-cbc',
  'aes192-cbc',
  'aes256-cbc',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
]
const MACS = ['hmac-sha1', 'hmac-sha1-96', 'hmac-sha2-256', 'hmac-sha2-512', 'hmac-md5', 'hmac-md5-96']
  .flatMap((m) => [m, `${m}-etm@openssh.com`])
  .concat(['umac-64@openssh.com', 'umac-128@openssh.com', 'umac-64-etm@openssh.com', 'umac-128-etm@openssh.com'])
const KEX = [
  'diffie-hellman-group1-sha1',
  'diffie-hellman-group14-sha1',
  'diffie-hellman-group14-sha256',
  'diffie-hellman-group16-sha512',
  'diffie-hellman-group18-sha512',
  'diffie-hellman-group-exchange-sha1',
  'diffie-hellman-group-exchange-sha256',
  'ecdh-sha2-nistp256',
  'ecdh-sha2-nistp384',
  'ecdh-sha2-nistp521',
  'curve25519-sha256',
  'curve25519-sha256@libssh.org',
  'sntrup761x25519-sha512',
  'sntrup761x25519-sha512@openssh.com',
]
const GSS_KEX = [
  'gss-group1-sha1-',
  'gss-group14-sha1-',
  'gss-gex-sha1-',
  'gss-group14-sha256-',
  'gss-group16-sha512-',
  'gss-nistp256-sha256-',
  'gss-curve25519-sha256-',
]
/** Plain key types, their certificate types, and the signature-only names (`ssh -Q key-sig`). */
const KEY_TYPES_PLAIN = [
  'ssh-ed25519',
  'sk-ssh-ed25519@openssh.com',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ecdsa-sha2-nistp256@openssh.com',
  'ssh-dss',
  'ssh-rsa',
]
const KEY_TYPES_CERT = KEY_TYPES_PLAIN.map((k) => k.replace(/(@openssh\.com)?$/, '-cert-v01@openssh.com'))
const KEY_TYPES_SIG = [
  'webauthn-sk-ecdsa-sha2-nistp256@openssh.com',
  'rsa-sha2-256',
  'rsa-sha2-256-cert-v01@openssh.com',
  'rsa-sha2-512',
  'rsa-sha2-512-cert-v01@openssh.com',
]
const KEY_TYPES_ALL = [...KEY_TYPES_PLAIN, ...KEY_TYPES_CERT, ...KEY_TYPES_SIG]
/** sshkey_type_from_name also takes the short names of plain key types. */
const KEY_SHORT_NAMES = ['RSA', 'DSA', 'ECDSA', 'ED25519', 'ECDSA-SK', 'ED25519-SK']
/** What fill_default_options / dump_client_config assemble each list against. */
export const ALGORITHM_UNIVERSE: Record<AlgorithmKeyword, readonly string[]> = {
  ciphers: CIPHERS,
  macs: MACS,
  kexalgorithms: KEX,
  hostkeyalgorithms: KEY_TYPES_ALL,
  hostbasedacceptedalgorithms: KEY_TYPES_ALL,
  pubkeyacceptedalgorithms: KEY_TYPES_ALL,
  casignaturealgorithms: [...KEY_TYPES_PLAIN, ...KEY_TYPES_SIG.filter((k) => !k.includes('-cert-'))],
}

function algorithmList(keyword: AlgorithmKeyword, valid: (name: string) => boolean, what: string): Handler {
  return (a) => {
    const arg = a.required()
    if (!arg.startsWith('-')) {
      const names = /^[+^]/.test(arg) ? arg.slice(1) : arg
      // strsep-style: an empty element ends the walk (as in OpenSSH's *_valid functions).
      const list = names.split(',')
      const end = list.indexOf('')
      const checked = end < 0 ? list : list.slice(0, end)
      if (names === '' || !checked.every(valid)) throw new LineError(`Bad ${what} '${arg}'`)
    }
    return { op: 'algorithms', keyword, value: arg }
  }
}

function validKeyName(name: string): boolean {
  if (KEY_TYPES_ALL.includes(name) || KEY_SHORT_NAMES.includes(name)) return true
  // A wildcard (or negated) component is accepted when it matches some key type, either way round.
  return KEY_TYPES_ALL.some((k) => matchPatternListResult(k, name, false) !== 0)
}

/** misc.c valid_domain (as CanonicalDomains checks it): lower-cased, a trailing dot dropped. */
function validDomain(name: string): string {
  if (name === '') throw new LineError('empty domain name')
  if (!/^[A-Za-z0-9]/.test(name)) throw new LineError(`domain name "${name}" starts with invalid character`)
  const lower = name.toLowerCase()
  if (lower.includes('..')) throw new LineError(`domain name "${lower}" contains consecutive separators`)
  if (!/^[a-z0-9._-]+$/.test(lower)) throw new LineError(`domain name "${lower}" contains invalid characters`)
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/** A list keyword where `none` may only stand alone (readconf.c's parse_char_array and friends). */
function noneAlone(args: Args): string[] {
  const out: string[] = []
  for (let arg = args.next(); arg !== undefined; arg = args.next()) {
    if (arg === '') throw new LineError(`keyword ${args.keyword} empty argument`)
    if (arg.toLowerCase() === 'none' && (out.length > 0 || args.remaining() > 0)) {
      throw new LineError(`keyword ${args.keyword} "none" argument must appear alone`)
    }
    out.push(arg)
  }
  return out
}

function knownHostsFiles(op: 'userknownhostsfile' | 'globalknownhostsfile'): Handler {
  return (a) => ({ op, value: noneAlone(a) })
}

/** The `${VAR}` and legacy `$VAR` checks ssh makes while reading IdentityAgent and ForwardAgent paths. */
function checkAgentPath(arg: string, env: Env): void {
  try {
    expand(arg, undefined, env)
  } catch (err) {
    throw new LineError(`Invalid environment expansion ${arg} (${(err as Error).message})`)
  }
  if (arg.startsWith('$') && arg[1] !== '{' && !validEnvName(arg.slice(1))) {
    throw new LineError(`Invalid environment name ${arg}`)
  }
}

const LOG_LEVELS = ['quiet', 'fatal', 'error', 'info', 'verbose', 'debug', 'debug1', 'debug2', 'debug3']
const FACILITIES = ['daemon', 'user', 'auth', 'authpriv', ...[0, 1, 2, 3, 4, 5, 6, 7].map((n) => `local${n}`)]
const IPQOS = [
  'none',
  ...['af11', 'af12', 'af13', 'af21', 'af22', 'af23', 'af31', 'af32', 'af33', 'af41', 'af42', 'af43'],
  ...['cs0', 'cs1', 'cs2', 'cs3', 'cs4', 'cs5', 'cs6', 'cs7', 'ef', 'le', 'lowdelay', 'throughput', 'reliability'],
]

function ipqos(arg: string | undefined): void {
  if (arg === undefined) throw new LineError('Bad IPQoS value: (null)')
  if (IPQOS.includes(arg.toLowerCase())) return
  // strtol(…, 0): decimal, 0x hex or 0 octal; 0-255.
  const m = /^[ \t]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$/.exec(arg)
  const v = m
    ? Number.parseInt(m[2] as string, /^0[xX]/.test(m[2] as string) ? 16 : /^0./.test(m[2] as string) ? 8 : 10)
    : Number.NaN
  if (!(v >= 0 && v <= 255) || m?.[1] === '-') throw new LineError(`Bad IPQoS value: ${arg}`)
}

/** misc.c a2tun: `any`, or 0-0x7fffffff-ish unit numbers, `local[:remote]`. */
function tunDevice(arg: string): void {
  const one = (s: string) => s.toLowerCase() === 'any' || typeof strtonum(s, 0x7fffffff - 2) === 'number'
  const parts = arg.split(':')
  const ok = parts.length === 1 ? one(arg) : one(parts[0] as string) && one(parts.slice(1).join(':'))
  if (!ok) throw new LineError('Bad tun device')
}

/** readconf.c parse_forward, enough to refuse what ssh refuses (the forwards themselves are not used by kay). */
function forwardSpec(spec: string, dynamic: boolean, remote: boolean, ctx: LineContext): void {
  let text: string
  try {
    text = expand(spec, undefined, ctx.env)
  } catch {
    throw new LineError('Bad forwarding specification')
  }
  text = text.replace(/^[ \t\n\v\f\r]+/, '')
  const fields: Array<{ arg: string; path: boolean }> = []
  let i = 0
  let ok = true
  while (fields.length < 4 && i < text.length) {
    if (text[i] === '[') {
      const close = text.indexOf(']', i + 1)
      if (close < 0 || (text[close + 1] !== ':' && text[close + 1] !== undefined)) {
        ok = false
        break
      }
      const arg = text.slice(i + 1, close)
      fields.push({ arg, path: arg.includes('/') })
      i = close + 2
      continue
    }
    let arg = ''
    let path = false
    for (; i < text.length; i++) {
      const ch = text[i] as string
      if (ch === '\\') {
        i++
        if (i >= text.length) {
          ok = false
          break
        }
        arg += text[i]
      } else if (ch === ':') {
        i++
        break
      } else {
        if (ch === '/') path = true
        arg += ch
      }
    }
    if (!ok) break
    fields.push({ arg, path })
  }
  if (!ok || i < text.length) throw new LineError('Bad forwarding specification')
  const n = fields.length
  const port = (k: number) => a2port(fields[k]?.arg ?? '', ctx.servicePort)
  let listenPort = -1
  let listenPath = false
  let connectPort = -1
  let connectPath = false
  const f = (k: number) => fields[k] as { arg: string; path: boolean }
  if (n === 1) {
    if (f(0).path) listenPath = true
    else listenPort = port(0)
  } else if (n === 2) {
    if (f(0).path && f(1).path) listenPath = connectPath = true
    else if (f(1).path) {
      listenPort = port(0)
      connectPath = true
    } else listenPort = port(1)
  } else if (n === 3) {
    if (f(0).path) {
      listenPath = true
      connectPort = port(2)
    } else if (f(2).path) {
      listenPort = port(1)
      connectPath = true
    } else {
      listenPort = port(0)
      connectPort = port(2)
    }
  } else if (n === 4) {
    listenPort = port(1)
    connectPort = port(3)
  }
  let good = n >= 1 && n <= 4
  if (dynamic) good &&= n === 1 || n === 2
  else {
    if (!(n === 3 || n === 4) && !connectPath && !listenPath) good = false
    if (connectPort <= 0 && !connectPath) good = false
  }
  if ((listenPort < 0 && !listenPath) || (!remote && listenPort === 0 && !listenPath)) good = false
  if (!good) throw new LineError('Bad forwarding specification')
}

function forward(kind: 'local' | 'remote' | 'dynamic'): Handler {
  return (a, ctx) => {
    const arg = a.required()
    let dynamic = kind === 'dynamic'
    let spec = arg
    if (!dynamic) {
      const arg2 = a.next()
      if (arg2 === undefined || arg2 === '') {
        if (kind === 'remote') dynamic = true
        else throw new LineError('Missing target argument')
      } else spec = `${arg}:${arg2}`
    }
    forwardSpec(spec, dynamic, kind === 'remote', ctx)
    return { op: 'checked' }
  }
}

/** misc.c parse_user_host_port / parse_uri for one ProxyJump hop; `undefined` when ssh refuses it. */
function parseJumpHop(
  s: string,
  servicePort: (name: string) => number | undefined,
): { user?: string; host: string; port?: number } | undefined {
  if (s.startsWith('ssh://')) {
    let rest = s.slice(6)
    let user: string | undefined
    const at = rest.indexOf('@')
    if (at >= 0) {
      let u = rest.slice(0, at)
      const semi = u.indexOf(';')
      if (semi >= 0) u = u.slice(0, semi)
      if (u === '') return undefined
      const decoded = urldecode(u)
      if (decoded === undefined) return undefined
      user = decoded
      rest = rest.slice(at + 1)
    }
    const hp = hpdelim(rest, true)
    if (hp === undefined || hp.host === '') return undefined
    const host = cleanHost(hp.host)
    if (!/^[A-Za-z0-9]/.test(host) || host.includes('..') || !/^[A-Za-z0-9._-]+\.?$/.test(host)) return undefined
    let port: number | undefined
    let tail = hp.rest
    if (tail !== undefined && tail !== '') {
      if (hp.delim === ':') {
        const slash = tail.indexOf('/')
        const p = a2port(slash < 0 ? tail : tail.slice(0, slash), servicePort)
        if (p <= 0) return undefined
        port = p
        tail = slash < 0 ? undefined : tail.slice(slash + 1)
      }
      // A path is not allowed in a ProxyJump URI.
      if (tail !== undefined && tail !== '') return undefined
    }
    return { host, ...(user === undefined ? {} : { user }), ...(port === undefined ? {} : { port }) }
  }
  let rest = s
  let user: string | undefined
  const at = rest.lastIndexOf('@')
  if (at >= 0) {
    if (at === 0) return undefined
    user = rest.slice(0, at)
    rest = rest.slice(at + 1)
  }
  const hp = hpdelim(rest, false)
  if (hp === undefined || hp.host === '') return undefined
  let port: number | undefined
  if (hp.rest !== undefined && hp.rest !== '') {
    const p = a2port(hp.rest, servicePort)
    if (p <= 0) return undefined
    port = p
  }
  return { host: cleanHost(hp.host), ...(user === undefined ? {} : { user }), ...(port === undefined ? {} : { port }) }
}

/** misc.c hpdelim2: host (a `[...]` literal, or up to `:` or `/`) and what follows the delimiter. */
function hpdelim(s: string, allowSlash: boolean): { host: string; rest?: string; delim?: string } | undefined {
  let i: number
  if (s.startsWith('[')) {
    const close = s.indexOf(']')
    if (close < 0) return undefined
    i = close + 1
  } else {
    i = s.search(/[:/]/)
    if (i < 0) i = s.length
  }
  if (i >= s.length) return { host: s }
  const delim = s[i] as string
  if (delim !== ':' && delim !== '/') return undefined
  if (delim === '/' && !allowSlash) return undefined
  return { host: s.slice(0, i), rest: s.slice(i + 1), delim }
}

function cleanHost(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h
}

function urldecode(s: string): string | undefined {
  let out = ''
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string
    if (ch === '+') out += ' '
    else if (ch === '%') {
      const hex = s.slice(i + 1, i + 3)
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) return undefined
      out += String.fromCharCode(Number.parseInt(hex, 16))
      i += 2
    } else out += ch
  }
  return out
}

/**
 * ProxyJump as this ssh reads it: `none` (any case, the whole rest of the line) or, from the first word (up to
 * whitespace or `#`), hops separated by commas, checked right to left; the last hop is the one dialled, the ones
 * before it (`extra`) reach it, as `ssh -J extra last` would.
 */
export function parseJump(rest: string, servicePort: (name: string) => number | undefined): JumpSetting {
  const raw = rest.replace(/^[ \t\r\n=]+/, '')
  if (raw.toLowerCase() === 'none') return { none: true }
  const word = raw.split(/[ \t#]/, 1)[0] as string
  const hops = word.split(',')
  const parsed = hops.map((h) => parseJumpHop(h, servicePort))
  if (parsed.some((p) => p === undefined)) throw new LineError(`Invalid ProxyJump "${raw}"`)
  const last = parsed[parsed.length - 1] as { user?: string; host: string; port?: number }
  const comma = word.lastIndexOf(',')
  return {
    none: false,
    raw: word,
    ...last,
    ...(comma > 0 ? { extra: word.slice(0, comma) } : {}),
  }
}

function addKeysToAgent(a: Args): Setting {
  const arg = a.next()
  const arg2 = a.next()
  const table: Record<string, number> = { true: 1, false: 0, yes: 1, no: 0, ask: 2, confirm: 3 }
  if (arg === undefined || arg === '') throw new LineError('missing argument')
  const v = table[arg.toLowerCase()]
  const t = (s: string) => {
    try {
      return parseTime(s) >= 0
    } catch {
      return false
    }
  }
  if (v === 3 && arg2 !== undefined) {
    if (!t(arg2)) throw new LineError('invalid time value')
  } else if (v === undefined && arg2 === undefined) {
    if (!t(arg)) throw new LineError('unsupported option')
  } else if (v === undefined || arg2 !== undefined) throw new LineError('unsupported option')
  return { op: 'checked' }
}

/** Parse one escape character argument as readconf.c does. */
function escapeChar(a: Args): Setting {
  const arg = a.required()
  const code = arg.charCodeAt(1)
  if (arg === 'none' || arg.length === 1 || (arg.length === 2 && arg[0] === '^' && code >= 64 && code < 128)) {
    return { op: 'checked' }
  }
  throw new LineError('Bad escape character')
}

function rekeyLimit(a: Args): Setting {
  const arg = a.required()
  if (arg !== 'default') {
    // scan_scaled: a number with an optional K/M/G/T/P/E suffix (fractions allowed with a suffix).
    const m = /^[ \t]*([+-]?\d+(?:\.\d+)?)([KMGTPEkmgtpe])?$/.exec(arg)
    const mult: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 }
    if (m === null || (m[1]?.includes('.') && m[2] === undefined))
      throw new LineError(`Bad number '${arg}': Invalid argument`)
    const v = Number(m[1]) * (m[2] ? (mult[m[2].toLowerCase()] as number) : 1)
    if (v !== 0 && v < 16) throw new LineError('RekeyLimit too small')
  }
  const interval = a.peek()
  if (interval !== undefined) {
    a.next()
    if (interval !== 'none') parseTime(interval)
  }
  return { op: 'checked' }
}

function controlPersist(a: Args): Setting {
  const arg = a.next()
  if (arg === undefined || arg === '') throw new LineError('Missing ControlPersist argument')
  if (['no', 'false', 'yes', 'true'].includes(arg)) return { op: 'checked' }
  try {
    parseTime(arg === 'none' ? 'x' : arg)
  } catch {
    throw new LineError('Bad ControlPersist argument')
  }
  return { op: 'checked' }
}

function permitRemoteOpen(a: Args): Setting {
  let n = 0
  for (let arg = a.next(); arg !== undefined; arg = a.next()) {
    const l = arg.toLowerCase()
    if (l === 'none' || l === 'any') {
      if (n > 0 || a.remaining() > 0)
        throw new LineError(`keyword permitremoteopen "${arg}" argument must appear alone`)
    } else {
      const hp = hpdelim(arg, false)
      if (hp === undefined) throw new LineError('missing host in permitremoteopen')
      if (hp.rest === undefined || (hp.rest !== '*' && a2port(hp.rest, () => undefined) <= 0)) {
        throw new LineError('bad port number in permitremoteopen')
      }
    }
    n++
  }
  if (n === 0) throw new LineError('missing permitremoteopen specification')
  return { op: 'checked' }
}

function permittedCnames(a: Args): Setting {
  const out: PermittedCname[] = []
  for (let arg = a.next(); arg !== undefined; arg = a.next()) {
    if (arg.toLowerCase() === 'none') {
      if (out.length > 0 || a.remaining() > 0) {
        throw new LineError('keyword canonicalizepermittedcnames "none" argument must appear alone')
      }
      out.push({ source: arg, target: '' })
    } else if (arg === '*') out.push({ source: '*', target: '*' })
    else {
      const lower = arg.toLowerCase()
      const colon = lower.indexOf(':')
      if (colon < 0 || colon === lower.length - 1) throw new LineError(`Invalid permitted CNAME "${lower}"`)
      out.push({ source: lower.slice(0, colon), target: lower.slice(colon + 1) })
    }
  }
  return { op: 'canonicalizepermittedcnames', value: out }
}

function canonicalDomains(a: Args): Setting {
  const out: string[] = []
  for (let arg = a.next(); arg !== undefined; arg = a.next()) {
    if (arg === '') throw new LineError('keyword canonicaldomains empty argument')
    if (arg.toLowerCase() === 'none' && (out.length > 0 || a.remaining() > 0)) {
      throw new LineError('keyword canonicaldomains "none" argument must appear alone')
    }
    out.push(validDomain(arg))
    if (out.length > 32) throw new LineError('too many hostname suffixes')
  }
  return { op: 'canonicaldomains', value: out }
}

const HANDLERS: Record<string, Handler> = {
  forwardagent: (a, ctx) => {
    const arg = a.required()
    if (!(arg.toLowerCase() in FLAG)) checkAgentPath(arg, ctx.env)
    return { op: 'checked' }
  },
  forwardx11: flag,
  forwardx11trusted: flag,
  forwardx11timeout: time,
  exitonforwardfailure: flag,
  xauthlocation: str,
  gatewayports: flag,
  passwordauthentication: flag,
  kbdinteractiveauthentication: flag,
  kbdinteractivedevices: str,
  pubkeyauthentication: choices('true', 'false', 'yes', 'no', 'unbound', 'host-bound'),
  hostbasedauthentication: flag,
  identityfile: (a) => ({ op: 'identityfile', value: a.required() }),
  identitiesonly: (a) => ({ op: 'identitiesonly', value: multistate(a.next(), FLAG) === 1 }),
  certificatefile: (a) => ({ op: 'certificatefile', value: a.required() }),
  addkeystoagent: addKeysToAgent,
  identityagent: (a, ctx) => {
    const arg = a.required()
    checkAgentPath(arg, ctx.env)
    return { op: 'identityagent', value: arg }
  },
  hostname: stringSetting('hostname'),
  hostkeyalias: stringSetting('hostkeyalias'),
  proxycommand: (a, ctx) => {
    a.consumeAll()
    return { op: 'proxycommand', value: ctx.rest.replace(/^[ \t\r\n=]+/, '') }
  },
  proxyjump: (a, ctx) => {
    a.consumeAll()
    return { op: 'proxyjump', value: parseJump(ctx.rest, ctx.servicePort) }
  },
  port: (a, ctx) => {
    const arg = a.required()
    const port = a2port(arg, ctx.servicePort)
    if (port <= 0) throw new LineError(`Bad port '${arg}'`)
    return { op: 'port', value: port }
  },
  ciphers: algorithmList('ciphers', (n) => CIPHERS.includes(n), 'SSH2 cipher spec'),
  macs: algorithmList('macs', (n) => MACS.includes(n), 'SSH2 MAC spec'),
  kexalgorithms: algorithmList('kexalgorithms', (n) => KEX.includes(n), 'SSH2 KexAlgorithms'),
  hostkeyalgorithms: algorithmList('hostkeyalgorithms', validKeyName, 'key types'),
  casignaturealgorithms: algorithmList('casignaturealgorithms', validKeyName, 'key types'),
  hostbasedacceptedalgorithms: algorithmList('hostbasedacceptedalgorithms', validKeyName, 'key types'),
  pubkeyacceptedalgorithms: algorithmList('pubkeyacceptedalgorithms', validKeyName, 'key types'),
  remoteforward: forward('remote'),
  localforward: forward('local'),
  dynamicforward: forward('dynamic'),
  permitremoteopen: permitRemoteOpen,
  user: stringSetting('user'),
  escapechar: escapeChar,
  globalknownhostsfile: knownHostsFiles('globalknownhostsfile'),
  userknownhostsfile: knownHostsFiles('userknownhostsfile'),
  connectionattempts: int,
  batchmode: (a) => ({ op: 'batchmode', value: multistate(a.next(), FLAG) === 1 }),
  checkhostip: flag,
  stricthostkeychecking: (a) => {
    const v = multistate(a.next(), {
      true: 'yes',
      false: 'no',
      yes: 'yes',
      no: 'no',
      ask: 'ask',
      off: 'no',
      'accept-new': 'accept-new',
    } as const)
    return { op: 'stricthostkeychecking', value: v }
  },
  compression: choices('yes', 'no'),
  tcpkeepalive: flag,
  numberofpasswordprompts: int,
  syslogfacility: (a) => {
    const arg = a.next()
    if (arg === undefined || !FACILITIES.includes(arg.toLowerCase()))
      throw new LineError(`unsupported log facility '${arg}'`)
    return { op: 'checked' }
  },
  loglevel: (a) => {
    const arg = a.next()
    if (arg === undefined || !LOG_LEVELS.includes(arg.toLowerCase()))
      throw new LineError(`unsupported log level '${arg}'`)
    return { op: 'checked' }
  },
  logverbose: (a) => {
    noneAlone(a)
    return { op: 'checked' }
  },
  preferredauthentications: str,
  bindaddress: str,
  bindinterface: str,
  clearallforwardings: flag,
  enablesshkeysign: flag,
  verifyhostkeydns: (a) => {
    multistate(a.next(), YESNOASK)
    return { op: 'checked' }
  },
  nohostauthenticationforlocalhost: flag,
  rekeylimit: rekeyLimit,
  connecttimeout: (a) => ({ op: 'connecttimeout', value: parseTime(a.next()) }),
  addressfamily: (a) => ({ op: 'addressfamily', value: multistate(a.next(), { inet: 4, inet6: 6, any: 0 } as const) }),
  serveraliveinterval: (a) => ({ op: 'serveraliveinterval', value: parseTime(a.next()) }),
  serveralivecountmax: (a) => ({ op: 'serveralivecountmax', value: parseInteger(a.next()) }),
  sendenv: (a) => {
    for (let arg = a.next(); arg !== undefined; arg = a.next()) {
      if (arg === '' || arg.includes('=')) throw new LineError('Invalid environment name')
    }
    return { op: 'checked' }
  },
  setenv: (a) => {
    for (let arg = a.next(); arg !== undefined; arg = a.next()) {
      if (!arg.includes('=')) throw new LineError('Invalid SetEnv')
    }
    return { op: 'checked' }
  },
  controlpath: (a) => ({ op: 'controlpath', value: a.required() }),
  controlmaster: choices('true', 'yes', 'false', 'no', 'auto', 'ask', 'autoask'),
  controlpersist: controlPersist,
  hashknownhosts: flag,
  tunnel: choices('ethernet', 'point-to-point', 'true', 'yes', 'false', 'no'),
  tunneldevice: (a) => {
    tunDevice(a.required())
    return { op: 'checked' }
  },
  localcommand: command,
  permitlocalcommand: flag,
  remotecommand: (a, ctx) => {
    a.consumeAll()
    return { op: 'remotecommand', value: ctx.rest.replace(/^[ \t\r\n=]+/, '') }
  },
  visualhostkey: flag,
  ipqos: (a) => {
    ipqos(a.next())
    const second = a.next()
    if (second !== undefined) ipqos(second)
    return { op: 'checked' }
  },
  requesttty: choices('true', 'yes', 'false', 'no', 'force', 'auto'),
  sessiontype: choices('none', 'subsystem', 'default'),
  stdinnull: flag,
  forkafterauthentication: flag,
  ignoreunknown: stringSetting('ignoreunknown'),
  proxyusefdpass: flag,
  canonicaldomains: canonicalDomains,
  canonicalizefallbacklocal: (a) => ({ op: 'canonicalizefallbacklocal', value: multistate(a.next(), FLAG) === 1 }),
  canonicalizehostname: (a) => ({
    op: 'canonicalizehostname',
    value: multistate(a.next(), { true: 'yes', false: 'no', yes: 'yes', no: 'no', always: 'always' } as const),
  }),
  canonicalizemaxdots: (a) => ({ op: 'canonicalizemaxdots', value: parseInteger(a.next()) }),
  canonicalizepermittedcnames: permittedCnames,
  streamlocalbindmask: (a) => {
    const arg = a.next()
    if (arg === undefined || arg === '') throw new LineError('Missing StreamLocalBindMask argument')
    const m = /^[ \t]*([+-]?)([0-7]+)/.exec(arg)
    const v = m ? Number.parseInt(m[2] as string, 8) * (m[1] === '-' ? -1 : 1) : Number.NaN
    if (!(v >= 0 && v <= 0o777)) throw new LineError('Bad mask')
    return { op: 'checked' }
  },
  streamlocalbindunlink: flag,
  revokedhostkeys: str,
  fingerprinthash: (a) => {
    const arg = a.required()
    if (!['md5', 'sha1', 'sha256', 'sha384', 'sha512'].includes(arg.toLowerCase())) {
      throw new LineError(`Invalid hash algorithm "${arg}"`)
    }
    return { op: 'checked' }
  },
  updatehostkeys: (a) => {
    multistate(a.next(), YESNOASK)
    return { op: 'checked' }
  },
  securitykeyprovider: str,
  knownhostscommand: command,
  requiredrsasize: int,
  enableescapecommandline: flag,
  gssapiauthentication: flag,
  gssapidelegatecredentials: flag,
  gssapikeyexchange: flag,
  gssapitrustdns: flag,
  gssapirenewalforcesrekey: flag,
  gssapiclientidentity: str,
  gssapiserveridentity: str,
  gssapikexalgorithms: (a) => {
    const arg = a.required()
    if (!arg.split(',').every((n) => GSS_KEX.includes(n))) throw new LineError(`Bad GSSAPI KexAlgorithms '${arg}'`)
    return { op: 'checked' }
  },
  pkcs11provider: str,
  ignore: ignoreAll,
}

/** Other spellings ssh accepts for the same keyword. */
const ALIASES: Record<string, string> = {
  challengeresponseauthentication: 'kbdinteractiveauthentication',
  skeyauthentication: 'kbdinteractiveauthentication',
  tisauthentication: 'kbdinteractiveauthentication',
  dsaauthentication: 'pubkeyauthentication',
  identityfile2: 'identityfile',
  keepalive: 'tcpkeepalive',
  hostbasedkeytypes: 'hostbasedacceptedalgorithms',
  pubkeyacceptedkeytypes: 'pubkeyacceptedalgorithms',
  smartcarddevice: 'pkcs11provider',
  // Debian's keepalive-extensions patch: both set ServerAliveInterval.
  protocolkeepalives: 'serveraliveinterval',
  setuptimeout: 'serveraliveinterval',
  // Deprecated, unsupported or ignored: accepted with any arguments.
  protocol: 'ignore',
  cipher: 'ignore',
  fallbacktorsh: 'ignore',
  globalknownhostsfile2: 'ignore',
  rhostsauthentication: 'ignore',
  userknownhostsfile2: 'ignore',
  useroaming: 'ignore',
  usersh: 'ignore',
  useprivilegedport: 'ignore',
  useblacklistedkeys: 'ignore',
  afstokenpassing: 'ignore',
  kerberosauthentication: 'ignore',
  kerberostgtpassing: 'ignore',
  rsaauthentication: 'ignore',
  rhostsrsaauthentication: 'ignore',
  compressionlevel: 'ignore',
}

/** The canonical keyword for `keyword` (already lower-case): structural ones, known ones, or undefined. */
export function lookupKeyword(keyword: string): string | undefined {
  if (keyword === 'host' || keyword === 'match' || keyword === 'include') return keyword
  if (keyword === 'ignore') return undefined
  const k = ALIASES[keyword] ?? keyword
  return k in HANDLERS ? k : undefined
}

/**
 * Check one option line (not Host, Match or Include) and say what it sets. `canonical` is from
 * {@link lookupKeyword}. Throws {@link LineError} when ssh refuses the line.
 */
export function parseOption(canonical: string, keyword: string, ctx: LineContext): Setting {
  const list = argvSplit(ctx.rest)
  if (list === undefined) throw new LineError('invalid quotes')
  const handler = HANDLERS[canonical] as Handler
  const args = new Args(keyword, list)
  const setting = handler(args, ctx)
  if (args.remaining() > 0) throw new LineError(`keyword ${keyword} extra arguments at end of line`)
  return setting
}

/** How a `Match` line's criteria split: readconf.c walks them with strdelim (double quotes only). */
export type Criterion =
  | { kind: 'all'; negate: boolean }
  | { kind: 'canonical' | 'final'; negate: boolean }
  | { kind: 'host' | 'originalhost' | 'user' | 'localuser' | 'exec' | 'localnetwork'; negate: boolean; arg: string }

/**
 * Parse the criteria of a Match line as readconf.c's match_cfg_line does (the syntax part, which ssh checks on every
 * line whether or not it applies). `localnetwork` (OpenSSH 9.4) is accepted as kay's one extension (ADR 0013).
 */
export function parseMatch(rest: string): Criterion[] {
  if (argvSplit(rest) === undefined) throw new LineError('invalid quotes')
  const c = { s: rest, pos: 0 as number | undefined }
  const out: Criterion[] = []
  let attributes = 0
  for (;;) {
    const oattrib = strdelim(c)
    if (oattrib === undefined || oattrib === '') break
    if (oattrib.startsWith('#')) break
    const negate = oattrib.startsWith('!')
    const attrib = (negate ? oattrib.slice(1) : oattrib).toLowerCase()
    if (attrib === 'all') {
      const next = strdelim(c)
      if (attributes > 1 || (next !== undefined && next !== '' && !next.startsWith('#'))) {
        throw new LineError(`'${oattrib}' cannot be combined with other Match attributes`)
      }
      out.push({ kind: 'all', negate })
      return out
    }
    attributes++
    if (attrib === 'canonical' || attrib === 'final') {
      out.push({ kind: attrib, negate })
      continue
    }
    const arg = strdelim(c)
    if (arg === undefined || arg === '' || arg.startsWith('#'))
      throw new LineError(`Missing Match criteria for ${attrib}`)
    if (
      attrib === 'host' ||
      attrib === 'originalhost' ||
      attrib === 'user' ||
      attrib === 'localuser' ||
      attrib === 'exec' ||
      attrib === 'localnetwork'
    ) {
      out.push({ kind: attrib, negate, arg })
    } else throw new LineError(`Unsupported Match attribute ${attrib}`)
  }
  if (attributes === 0) throw new LineError('One or more attributes required for Match')
  return out
}
