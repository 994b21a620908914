/**
 * ssh_config(5) resolution, the way ssh(1) (OpenSSH 9.x) does it, for the keywords kay uses.
 *
 * Why an own evaluator instead of `ssh-config`'s `compute()`: that package parses well but its `compute()`
 * runs `Match exec` commands and `nslookup` by default, does not follow `Include`, matches `?` as "zero or one
 * character", and tracks `HostName`/`User` case-sensitively. A fleet tool resolving thousands of hosts must not
 * run shell commands, so this module has a small tokenizer that follows OpenSSH's readconf.c and evaluates:
 *
 * - `Host` patterns (`*`, `?`, `!negation`), matched case-sensitively against the name as given (as ssh does);
 * - `Match` with `all`, `host`, `originalhost`, `user`, `localuser`, `final`, `canonical` and `!criterion`;
 *   `Match exec` (and `localnetwork`, `tagged`, ...) never matches — kay does not run commands from config files;
 * - `Include` (relative to ~/.ssh, `~`, globs, nested up to 16 deep; inside an inactive block nothing in the
 *   included file applies);
 * - first obtained value wins; `IdentityFile` accumulates; unknown keywords are ignored.
 *
 * Tested against `ssh -G` (see test/config/ssh-config.test.ts).
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import os from 'node:os'
import { isAbsolute, join } from 'node:path'
import { ConfigError } from '../errors.js'
import type { HostTarget, StrictHostKeyChecking } from '../types.js'
import { parseHostSpec } from './hostlist.js'
import { matchPattern, matchPatternList } from './patterns.js'

/** OpenSSH's READCONF_MAX_DEPTH. */
const MAX_INCLUDE_DEPTH = 16
/** Longest ProxyJump chain (including hops' own ProxyJump) before we call it a cycle. */
const MAX_JUMP_DEPTH = 10

export interface SshConfigOptions {
  /** Home directory for `~`, `%d` and relative `Include`. Default `os.homedir()`. */
  homeDir?: string
  /** Local user name for `%u` and `Match localuser`. Default `os.userInfo().username`. */
  localUser?: string
  /** Environment for `${VAR}` and `IdentityAgent SSH_AUTH_SOCK`. Default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>
}

export interface ResolveDefaults {
  /** User when neither the spec nor the config names one. Default: the local user. */
  user?: string
  /** Port when neither the spec nor the config names one. Default 22. */
  port?: number
}

type Stmt =
  | { kind: 'kw'; keyword: string; args: string[]; where: string }
  | { kind: 'include'; files: Stmt[][]; where: string }

/** Values obtained while evaluating, first one wins (keys are lower-case keywords). */
interface Obtained {
  values: Map<string, { args: string[]; where: string; order: number }>
  identityFiles: Array<{ path: string; where: string }>
}

interface EvalContext {
  /** What `Host` lines match: the name as given (first pass) or the final hostname (final pass). */
  hostArg: string
  originalHost: string
  localUser: string
  final: boolean
  wantFinal: boolean
  obtained: Obtained
}

/** A loaded ssh_config: resolve hosts, list aliases. */
export interface SshConfig {
  /** Resolve `[user@]host[:port]` (or an alias) into a dialable target. The spec's user and port win. */
  resolve(spec: string, defaults?: ResolveDefaults): HostTarget
  /** Every `Host` alias without wildcards or negation, in file order, deduplicated (for --all-config-hosts). */
  aliases(): string[]
}

/**
 * Split one config line into keyword and arguments, as readconf.c does: the keyword ends at whitespace or one
 * `=`; arguments split on whitespace, honour "double" and 'single' quotes and backslash escapes, and an
 * argument starting with `#` ends the line. ProxyCommand is the exception, as in readconf.c: its one argument is the
 * rest of the line, verbatim (it is a shell command; the shell does the quoting).
 */
export function tokenizeLine(line: string): { keyword: string; args: string[] } | undefined {
  const s = line.replace(/[\s]+$/, '')
  const m = /^[ \t]*([^ \t=]*)[ \t]*=?[ \t]*/.exec(s)
  const keyword = m?.[1] ?? ''
  if (keyword === '' || keyword.startsWith('#')) return undefined
  const rest = s.slice(m?.[0].length ?? 0)
  if (keyword.toLowerCase() === 'proxycommand') return { keyword: 'proxycommand', args: rest === '' ? [] : [rest] }
  const args: string[] = []
  let i = 0
  while (i < rest.length) {
    while (i < rest.length && (rest[i] === ' ' || rest[i] === '\t')) i++
    if (i >= rest.length) break
    if (rest[i] === '#') break
    let arg = ''
    let quote: string | undefined
    for (; i < rest.length; i++) {
      const ch = rest[i] as string
      if (quote !== undefined) {
        if (ch === '\\' && (rest[i + 1] === quote || rest[i + 1] === '\\')) arg += rest[++i]
        else if (ch === quote) quote = undefined
        else arg += ch
        continue
      }
      if (ch === ' ' || ch === '\t') break
      if (ch === '"' || ch === "'") quote = ch
      else if (ch === '\\' && i + 1 < rest.length && ' \t\\"\''.includes(rest[i + 1] as string)) arg += rest[++i]
      else arg += ch
    }
    if (quote !== undefined) throw new ConfigError(`unterminated quote in '${line.trim()}'`)
    args.push(arg)
  }
  return { keyword: keyword.toLowerCase(), args }
}

/** Validate a ProxyCommand's `%` tokens without a target (ssh_config resolution uses this to fail early). */
export function checkProxyCommand(command: string): void {
  for (const m of command.matchAll(PROXY_TOKEN_RE)) {
    if (!'%hnpr'.includes(m[1] as string)) {
      throw new ConfigError(`ProxyCommand: unsupported token '%${m[1]}' (kay expands %h %p %r %n %%)`)
    }
  }
  if (/%$/.test(command.replace(/%%/g, ''))) throw new ConfigError('ProxyCommand: a lone % at the end')
}

/** The tokens ssh expands in ProxyCommand that kay supports. */
const PROXY_TOKEN_RE = /%(.)/g

function hasGlob(s: string): boolean {
  return /[*?[]/.test(s)
}

function globSegmentRegex(seg: string): RegExp {
  let re = '^'
  for (let i = 0; i < seg.length; i++) {
    const ch = seg[i] as string
    if (ch === '*') re += '[^/]*'
    else if (ch === '?') re += '[^/]'
    else if (ch === '[') {
      const close = seg.indexOf(']', i + 1)
      if (close < 0) re += '\\['
      else {
        const body = seg
          .slice(i + 1, close)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')
        re += `[${body}]`
        i = close
      }
    } else re += ch.replace(/[.+^${}()|\\]/g, '\\$&')
  }
  return new RegExp(`${re}$`)
}

/** Expand a path glob (`*`, `?`, `[...]` per component), sorted like glob(3); no match → empty list. */
async function globPath(pattern: string): Promise<string[]> {
  if (!hasGlob(pattern)) {
    try {
      await stat(pattern)
      return [pattern]
    } catch {
      return []
    }
  }
  const segments = pattern.split('/')
  let bases = [segments[0] === '' ? '/' : (segments[0] as string)]
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i] as string
    if (seg === '') continue
    const next: string[] = []
    for (const base of bases) {
      if (!hasGlob(seg)) {
        next.push(join(base, seg))
        continue
      }
      let entries: string[]
      try {
        entries = await readdir(base)
      } catch {
        continue
      }
      const re = globSegmentRegex(seg)
      for (const e of entries.sort())
        if ((seg.startsWith('.') || !e.startsWith('.')) && re.test(e)) next.push(join(base, e))
    }
    bases = next
  }
  const out: string[] = []
  for (const b of bases) {
    try {
      const st = await stat(b)
      if (st.isFile()) out.push(b)
    } catch {
      // a literal component that does not exist: no match, as glob(3)
    }
  }
  return out.sort()
}

function expandEnv(s: string, env: SshConfigOptions['env'], where: string): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env?.[name]
    if (v === undefined) throw new ConfigError(`${where}: environment variable '${name}' is not set`)
    return v
  })
}

function expandTilde(path: string, home: string): string {
  if (path === '~') return home
  if (path.startsWith('~/')) return join(home, path.slice(2))
  return path
}

interface Loader {
  home: string
  env: SshConfigOptions['env']
}

async function loadFile(path: string, loader: Loader, depth: number): Promise<Stmt[]> {
  const text = await readFile(path, 'utf8')
  const stmts: Stmt[] = []
  const lines = text.split('\n')
  for (let n = 0; n < lines.length; n++) {
    const where = `${path}:${n + 1}`
    let tok: ReturnType<typeof tokenizeLine>
    try {
      tok = tokenizeLine(lines[n] as string)
    } catch (err) {
      throw new ConfigError(`${where}: ${(err as Error).message}`, { cause: err })
    }
    if (tok === undefined) continue
    if (tok.keyword !== 'include') {
      if (tok.args.length === 0) throw new ConfigError(`${where}: missing argument for '${tok.keyword}'`)
      stmts.push({ kind: 'kw', keyword: tok.keyword, args: tok.args, where })
      continue
    }
    if (depth >= MAX_INCLUDE_DEPTH) throw new ConfigError(`${where}: Include nested too deeply (${MAX_INCLUDE_DEPTH})`)
    const files: Stmt[][] = []
    for (const arg of tok.args) {
      let p = expandTilde(expandEnv(arg, loader.env, where), loader.home)
      // A relative Include is relative to ~/.ssh for user configs (ssh treats -F files as user configs).
      if (!isAbsolute(p)) p = join(loader.home, '.ssh', p)
      for (const file of await globPath(p)) files.push(await loadFile(file, loader, depth + 1))
    }
    stmts.push({ kind: 'include', files, where })
  }
  return stmts
}

/**
 * Load an ssh_config file (default `~/.ssh/config`) with its Includes. A missing default file is an empty
 * config; a missing explicitly given file is a {@link ConfigError}.
 */
export async function loadSshConfig(path?: string, opts: SshConfigOptions = {}): Promise<SshConfig> {
  const home = opts.homeDir ?? os.homedir()
  const loader: Loader = { home, env: opts.env ?? process.env }
  const file = path ?? join(home, '.ssh', 'config')
  let stmts: Stmt[]
  try {
    stmts = await loadFile(file, loader, 0)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code
    if (path === undefined && code === 'ENOENT') stmts = []
    else throw new ConfigError(`cannot read ssh config '${file}': ${(err as Error).message}`, { cause: err })
  }
  return new LoadedSshConfig(stmts, opts)
}

/** Parse ssh_config text (no file access: `Include` lines are an error here). */
export function parseSshConfig(text: string, opts: SshConfigOptions = {}): SshConfig {
  const stmts: Stmt[] = []
  text.split('\n').forEach((line, n) => {
    const where = `<config>:${n + 1}`
    let tok: ReturnType<typeof tokenizeLine>
    try {
      tok = tokenizeLine(line)
    } catch (err) {
      throw new ConfigError(`${where}: ${(err as Error).message}`, { cause: err })
    }
    if (tok === undefined) return
    if (tok.keyword === 'include') throw new ConfigError(`${where}: Include needs loadSshConfig (file access)`)
    if (tok.args.length === 0) throw new ConfigError(`${where}: missing argument for '${tok.keyword}'`)
    stmts.push({ kind: 'kw', keyword: tok.keyword, args: tok.args, where })
  })
  return new LoadedSshConfig(stmts, opts)
}

/** ssh's convtime: `90`, `1m30s`, `2h` → seconds. */
function parseTime(value: string, where: string): number {
  if (/^\d+$/.test(value)) return Number(value)
  const re = /(\d+)([sSmMhHdDwW])/gy
  let total = 0
  let end = 0
  for (let m = re.exec(value); m !== null; m = re.exec(value)) {
    const mult = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[(m[2] as string).toLowerCase() as 's']
    total += Number(m[1]) * mult
    end = re.lastIndex
  }
  if (end !== value.length || value === '') throw new ConfigError(`${where}: bad time value '${value}'`)
  return total
}

function parseYesNo(value: string, where: string): boolean {
  const v = value.toLowerCase()
  if (v === 'yes' || v === 'true') return true
  if (v === 'no' || v === 'false') return false
  throw new ConfigError(`${where}: expected yes or no, got '${value}'`)
}

function parseStrict(value: string, where: string): StrictHostKeyChecking {
  switch (value.toLowerCase()) {
    case 'yes':
    case 'true':
    case 'ask':
      return 'yes'
    case 'no':
    case 'false':
    case 'off':
      return 'no'
    case 'accept-new':
      return 'accept-new'
    default:
      throw new ConfigError(`${where}: bad StrictHostKeyChecking value '${value}'`)
  }
}

function parsePortValue(value: string, where: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN
  if (!(port >= 1 && port <= 65535)) throw new ConfigError(`${where}: bad port '${value}'`)
  return port
}

/** Percent tokens, as ssh expands them in IdentityFile / UserKnownHostsFile / IdentityAgent. */
interface Tokens {
  C: string
  d: string
  h: string
  i: string
  L: string
  l: string
  n: string
  p: string
  r: string
  u: string
}

function percentExpand(s: string, tokens: Partial<Tokens>, where: string): string {
  return s.replace(/%(.?)/g, (whole, t: string) => {
    if (t === '%') return '%'
    const v = tokens[t as keyof Tokens]
    if (v === undefined) throw new ConfigError(`${where}: unknown or unsupported token '${whole}' in '${s}'`)
    return v
  })
}

class LoadedSshConfig implements SshConfig {
  readonly #stmts: Stmt[]
  readonly #home: string
  readonly #localUser: string
  readonly #env: SshConfigOptions['env']

  constructor(stmts: Stmt[], opts: SshConfigOptions) {
    this.#stmts = stmts
    this.#home = opts.homeDir ?? os.homedir()
    this.#env = opts.env ?? process.env
    this.#localUser = opts.localUser ?? safeLocalUser()
  }

  aliases(): string[] {
    const out = new Set<string>()
    const walk = (stmts: Stmt[]): void => {
      for (const s of stmts) {
        if (s.kind === 'include') s.files.forEach(walk)
        else if (s.keyword === 'host') for (const a of s.args) if (!/[*?!]/.test(a) && a !== '') out.add(a)
      }
    }
    walk(this.#stmts)
    return [...out]
  }

  resolve(spec: string, defaults: ResolveDefaults = {}): HostTarget {
    return this.#resolve(spec, defaults, 0)
  }

  #resolve(spec: string, defaults: ResolveDefaults, depth: number): HostTarget {
    if (depth > MAX_JUMP_DEPTH) throw new ConfigError(`ProxyJump chain too deep or cyclic at '${spec}'`)
    const parsed = parseSpec(spec)
    const ctx = this.#evaluate(parsed.host, parsed)
    const get = (k: string) => ctx.obtained.values.get(k)

    const hostnameRaw = get('hostname')
    const hostname = hostnameRaw
      ? percentExpand(hostnameRaw.args[0] as string, { h: parsed.host }, hostnameRaw.where).toLowerCase()
      : parsed.host.toLowerCase()
    const portV = get('port')
    const port = parsed.port ?? (portV ? parsePortValue(portV.args[0] as string, portV.where) : (defaults.port ?? 22))
    const user = parsed.user ?? get('user')?.args[0] ?? defaults.user ?? this.#localUser

    const id = `${parsed.user === undefined ? '' : `${parsed.user}@`}${formatHost(parsed.host.toLowerCase(), parsed.port)}`
    const target: HostTarget = { id, hostname, port, user }
    const tokens: Partial<Tokens> = {
      d: this.#home,
      h: hostname,
      i: String(typeof process.getuid === 'function' ? process.getuid() : 0),
      l: os.hostname(),
      L: os.hostname().split('.')[0] ?? '',
      n: parsed.host,
      p: String(port),
      r: user,
      u: this.#localUser,
    }
    tokens.C = createHash('sha1').update(`${tokens.l}${hostname}${port}${user}`).digest('hex')
    const path = (raw: string, where: string): string =>
      percentExpand(expandTilde(expandEnv(raw, this.#env, where), this.#home), tokens, where)

    const ct = get('connecttimeout')
    if (ct) {
      const secs = ct.args[0] === 'none' ? 0 : parseTime(ct.args[0] as string, ct.where)
      if (secs > 0) target.connectTimeoutMs = secs * 1000
    }
    const sai = get('serveraliveinterval')
    if (sai) {
      const secs = parseTime(sai.args[0] as string, sai.where)
      if (secs > 0) target.keepaliveIntervalMs = secs * 1000
    }
    const sac = get('serveralivecountmax')
    if (sac) {
      if (!/^\d+$/.test(sac.args[0] as string)) throw new ConfigError(`${sac.where}: bad ServerAliveCountMax`)
      target.keepaliveCountMax = Number(sac.args[0])
    }
    if (ctx.obtained.identityFiles.length > 0) {
      target.identityFiles = ctx.obtained.identityFiles.map((f) => path(f.path, f.where))
    }
    const io = get('identitiesonly')
    if (io) target.identitiesOnly = parseYesNo(io.args[0] as string, io.where)
    const ia = get('identityagent')
    if (ia) {
      const v = ia.args[0] as string
      const agent =
        v === 'none'
          ? 'none'
          : v === 'SSH_AUTH_SOCK'
            ? this.#env?.SSH_AUTH_SOCK
            : v.startsWith('$')
              ? this.#env?.[v.slice(1)]
              : path(v, ia.where)
      if (agent !== undefined) target.identityAgent = agent
    }
    const ukh = get('userknownhostsfile')
    if (ukh) target.userKnownHostsFiles = ukh.args[0] === 'none' ? [] : ukh.args.map((a) => path(a, ukh.where))
    const shk = get('stricthostkeychecking')
    if (shk) target.strictHostKeyChecking = parseStrict(shk.args[0] as string, shk.where)

    const proxyCommand = get('proxycommand')
    const proxyJump = get('proxyjump')
    // ssh: ProxyCommand and ProxyJump are one setting; the first obtained wins.
    if (proxyCommand && (!proxyJump || proxyCommand.order < proxyJump.order) && proxyCommand.args[0] !== 'none') {
      const command = proxyCommand.args[0] as string
      try {
        checkProxyCommand(command)
      } catch (err) {
        throw new ConfigError(`${proxyCommand.where}: ${(err as Error).message}`, { host: id, cause: err })
      }
      target.proxyCommand = command
    }
    if (proxyJump && (!proxyCommand || proxyJump.order < proxyCommand.order) && proxyJump.args[0] !== 'none') {
      const hops = (proxyJump.args[0] as string).split(',').map((h) => h.replace(/^ssh:\/\//, '').replace(/\/$/, ''))
      if (hops.some((h) => h === '')) throw new ConfigError(`${proxyJump.where}: empty ProxyJump hop`, { host: id })
      const chain: HostTarget[] = []
      hops.forEach((hop, i) => {
        const t = this.#resolve(hop, defaults, depth + 1)
        // Like `ssh -J a,b c`: only the outermost hop keeps its own ProxyJump; later hops go through earlier ones.
        if (i === 0 && t.jump) chain.push(...t.jump)
        delete t.jump
        chain.push(t)
      })
      target.jump = chain
    }
    return target
  }

  #evaluate(host: string, parsed: { user?: string }): EvalContext & { obtained: Obtained } {
    const obtained: Obtained = { values: new Map(), identityFiles: [] }
    if (parsed.user !== undefined) obtained.values.set('user', { args: [parsed.user], where: '<spec>', order: -1 })
    const ctx: EvalContext = {
      hostArg: host,
      originalHost: host,
      localUser: this.#localUser,
      final: false,
      wantFinal: false,
      obtained,
    }
    this.#run(this.#stmts, ctx, false)
    if (ctx.wantFinal) {
      const hn = obtained.values.get('hostname')
      ctx.hostArg = (hn ? percentExpand(hn.args[0] as string, { h: host }, hn.where) : host).toLowerCase()
      ctx.final = true
      this.#run(this.#stmts, ctx, false)
    }
    return ctx
  }

  #run(stmts: Stmt[], ctx: EvalContext, neverMatch: boolean): void {
    let active = !neverMatch
    for (const s of stmts) {
      if (s.kind === 'include') {
        for (const f of s.files) this.#run(f, ctx, neverMatch || !active)
        continue
      }
      if (s.keyword === 'host') {
        active = !neverMatch && hostLineMatches(ctx.hostArg, s.args)
        continue
      }
      if (s.keyword === 'match') {
        const m = this.#matchLine(s.args, ctx, s.where)
        active = !neverMatch && m
        continue
      }
      if (!active) continue
      if (s.keyword === 'identityfile') {
        // ssh ignores a duplicate IdentityFile (a final pass sees the same lines again).
        const path = s.args[0] as string
        if (!ctx.obtained.identityFiles.some((f) => f.path === path))
          ctx.obtained.identityFiles.push({ path, where: s.where })
        continue
      }
      if (!ctx.obtained.values.has(s.keyword)) {
        ctx.obtained.values.set(s.keyword, { args: s.args, where: s.where, order: ctx.obtained.values.size })
      }
    }
  }

  #matchLine(args: string[], ctx: EvalContext, where: string): boolean {
    let result = true
    for (let i = 0; i < args.length; i++) {
      let attr = (args[i] as string).toLowerCase()
      const negate = attr.startsWith('!')
      if (negate) attr = attr.slice(1)
      let hit: boolean
      if (attr === 'all') {
        hit = true
      } else if (attr === 'final' || attr === 'canonical') {
        // ssh 9.x matches both in the re-parse pass (which `final` requests); kay never canonicalises names.
        if (attr === 'final') ctx.wantFinal = true
        hit = ctx.final
      } else {
        const arg = args[++i]
        if (arg === undefined) throw new ConfigError(`${where}: Match '${attr}' needs an argument`)
        const hn = ctx.obtained.values.get('hostname')
        switch (attr) {
          case 'host': {
            const h = hn ? percentExpand(hn.args[0] as string, { h: ctx.hostArg }, hn.where) : ctx.hostArg
            hit = matchPatternList(h.toLowerCase(), arg, true)
            break
          }
          case 'originalhost':
            hit = matchPatternList(ctx.originalHost.toLowerCase(), arg, true)
            break
          case 'user':
            hit = matchPatternList((ctx.obtained.values.get('user')?.args[0] as string) ?? ctx.localUser, arg)
            break
          case 'localuser':
            hit = matchPatternList(ctx.localUser, arg)
            break
          default:
            // exec, localnetwork, tagged, ...: kay never runs commands from config; treat as not matching.
            hit = false
        }
      }
      if (negate) hit = !hit
      if (!hit) result = false
    }
    return result
  }
}

/** `Host` line: any positive pattern matches and no negated one does (case-sensitive, like ssh 9.x). */
function hostLineMatches(host: string, patterns: string[]): boolean {
  let matched = false
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (matchPattern(host, p.slice(1))) return false
    } else if (matchPattern(host, p)) {
      matched = true
    }
  }
  return matched
}

function formatHost(host: string, port: number | undefined): string {
  if (port === undefined) return host
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function parseSpec(spec: string): { user?: string; host: string; port?: number } {
  const trimmed = spec.trim()
  // Keep the name's case for Host matching (ssh matches the argument as typed); parseHostSpec lower-cases it.
  const parsed = parseHostSpec(trimmed)
  const at = trimmed.lastIndexOf('@')
  const rest = trimmed.slice(at + 1)
  const original = rest.startsWith('[') ? rest.slice(1, rest.indexOf(']')) : rest.replace(/:\d+$/, '')
  const out: { user?: string; host: string; port?: number } = {
    host: parsed.host.includes(':') ? parsed.host : original,
  }
  if (parsed.user !== undefined) out.user = parsed.user
  if (parsed.port !== undefined) out.port = parsed.port
  return out
}

function safeLocalUser(): string {
  try {
    return os.userInfo().username
  } catch {
    return process.env.USER ?? process.env.LOGNAME ?? 'root'
  }
}
