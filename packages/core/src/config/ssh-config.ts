/**
 * ssh_config(5) resolution equal to `ssh -G` (OpenSSH 9.2 as Debian ships it) for every keyword kay uses.
 *
 * The shape follows ssh(1): options are "first obtained value wins", filled from the command line (kay's flags),
 * then the user's file, then the system file; a first pass evaluates Host and Match against the name as given,
 * then HostName is applied, the name is canonicalised (CanonicalizeHostname & co.), and a second ("final") pass runs
 * when canonicalisation is on or a `Match final` asked for it. Tokens (`%h`, `%C`, ...), `${VAR}` and `~` expand per
 * keyword exactly where ssh expands them, and everything ssh refuses (a bad value anywhere in a file, an unknown
 * keyword not covered by IgnoreUnknown, an unparseable ProxyJump, a bad token) is a {@link ConfigError} naming file
 * and line. `Match exec` runs the command as ssh does (`$SHELL -c`), once per distinct command per resolution.
 *
 * kay's one extension: `Match localnetwork` (OpenSSH 9.4), see docs/adr/0013-ssh-config-conformance.md.
 * Held to real `ssh -G` by test/config/ssh-config.conformance.test.ts.
 */
import { createHash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, statSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { ConfigError } from '../errors.js'
import type { HostTarget, StrictHostKeyChecking } from '../types.js'
import { addressInCidrList } from './cidr.js'
import { parseHostSpec } from './hostlist.js'
import { matchPattern, matchPatternListResult } from './patterns.js'
import { type CanonicalizeSettings, canonicalize, isAddr, type NameResolver, systemResolver } from './ssh-canonical.js'
import {
  ALGORITHM_UNIVERSE,
  type AlgorithmKeyword,
  type CanonicalizeMode,
  type Criterion,
  type JumpSetting,
  LineError,
  lookupKeyword,
  type PermittedCname,
  parseJump,
  parseMatch,
  parseOption,
  type Setting,
  type StrictMode,
} from './ssh-keywords.js'
import { argvSplit, type Env, ExpandError, expand, splitLine, tildeExpand, validEnvName } from './ssh-lex.js'
import {
  defaultSystemDb,
  localAddresses,
  type MatchExecRunner,
  runMatchExec,
  type SystemDb,
  securePermissions,
} from './ssh-system.js'

export type { ExecOutcome } from './ssh-system.js'
export { filesSystemDb } from './ssh-system.js'

/** readconf.c READCONF_MAX_DEPTH. */
const MAX_INCLUDE_DEPTH = 16
/** Config files read for one load, Includes counted: a bound on self-including globs (ssh has none). */
const MAX_FILES = 10_000
/** Longest ProxyJump chain (hops' own ProxyJump included) before kay calls it a loop (ssh would recurse forever). */
const MAX_JUMP_DEPTH = 10
/** readconf.h SSH_MAX_IDENTITY_FILES / SSH_MAX_CERTIFICATE_FILES. */
const MAX_IDENTITY_FILES = 100
/** The system-wide file ssh reads after the user's (only when no file is given explicitly). */
const SYSTEM_SSH_CONFIG = '/etc/ssh/ssh_config'

export interface SshConfigOptions {
  /** The account's home directory (getpwuid's pw_dir): `~`, `%d`, the default files. Default: from the account database. */
  homeDir?: string
  /** Local user name (`%u`, `Match localuser`, the default User). Default: the account's. */
  localUser?: string
  /** Local uid (`%i`, who may own config files). Default: `process.getuid()`. */
  uid?: number
  /** Environment: `${VAR}`, IdentityAgent's SSH_AUTH_SOCK, HOME for `~` in Include globs, SHELL for Match exec. */
  env?: Env
  /** The local host name (`%l`; `%L` is its first label). Default `os.hostname()`. */
  localHostname?: string
  /** System-wide file read after the user's when no file is given. Default /etc/ssh/ssh_config; null: none. */
  systemConfig?: string | null
  /** Name resolution for canonicalisation. Default: the system resolver (NSS). */
  resolver?: NameResolver
  /** Accounts, groups and services. Default: this machine's. */
  system?: SystemDb
  /** How `Match exec` commands run. Default {@link runMatchExec}. */
  matchExec?: MatchExecRunner
  /** Local addresses for `Match localnetwork`. Default: the up interfaces' addresses. */
  localAddresses?: () => readonly string[]
}

/** What the command line says, ssh-style: these win over every config file. */
export interface ResolveOverrides {
  /** `-l`: the remote user, unless the spec names one. */
  user?: string
  /** `-p`: the port, unless the spec names one. */
  port?: number
  /** `-i`: identity files, offered before the config's IdentityFile entries. */
  identityFiles?: readonly string[]
  /** `-o`: option lines (`Keyword value` or `Keyword=value`), read as ssh reads `-o`. */
  options?: readonly string[]
  /** `--connect-timeout`: replaces ConnectTimeout (kay's flag takes milliseconds). */
  connectTimeoutMs?: number
}

/** A loaded ssh_config: resolve hosts, list aliases. */
export interface SshConfig {
  /**
   * Resolve `[user@]host[:port]` (or an alias) into a dialable target, as `ssh -G [-l user] [-p port] host` would.
   * The spec's user and port win over everything; then `overrides`; then the config files.
   */
  resolve(spec: string, overrides?: ResolveOverrides): Promise<HostTarget>
  /** Every `Host` alias without wildcards or negation, in file order, deduplicated (for --all-config-hosts). */
  aliases(): string[]
}

// ---------------------------------------------------------------------------------------------------------------
// Reading files into statements

type IncludePart = { file: string; stmts: Stmt[] } | { error: string }

type Stmt =
  | { kind: 'host'; args: string[]; where: string }
  | { kind: 'match'; criteria: Criterion[]; where: string }
  | { kind: 'include'; parts: IncludePart[]; where: string }
  | { kind: 'set'; setting: Setting; keyword: string; where: string }
  /** A keyword ssh does not know: refused unless IgnoreUnknown (as set when the line is reached) covers it. */
  | { kind: 'unknown'; keyword: string; badQuotes: boolean; where: string }
  /** A line ssh refuses whatever the host. */
  | { kind: 'error'; message: string; where: string }

interface Source {
  path: string
  /** A user file (Include may use `~`, relative Includes are under ~/.ssh) rather than the system file. */
  user: boolean
  stmts: Stmt[]
}

interface Loader {
  env: Env
  /** Where a relative Include in the system file points (ssh's SSHDIR, /etc/ssh): the system file's directory. */
  systemDir: string
  home: string
  uid: number
  system: SystemDb
  files: number
}

function homeOf(loader: Pick<Loader, 'home' | 'system'>) {
  return (user: string | undefined) => (user === undefined ? loader.home : loader.system.userByName(user)?.home)
}

function parseLines(text: string, path: string, user: boolean, loader: Loader, depth: number): Stmt[] {
  const stmts: Stmt[] = []
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  for (let n = 0; n < lines.length; n++) {
    const where = `${path}:${n + 1}`
    const split = splitLine(lines[n] as string)
    if (split.kind === 'blank') continue
    if (split.kind === 'no-argument') {
      stmts.push({ kind: 'error', message: `no argument after keyword "${split.keyword}"`, where })
      continue
    }
    const { keyword, rest } = split
    const canonical = lookupKeyword(keyword)
    try {
      if (canonical === undefined) {
        stmts.push({ kind: 'unknown', keyword, badQuotes: argvQuotesBad(rest), where })
      } else if (canonical === 'host') {
        const args = hostArgs(rest)
        stmts.push({ kind: 'host', args, where })
      } else if (canonical === 'match') {
        stmts.push({ kind: 'match', criteria: parseMatch(rest), where })
      } else if (canonical === 'include') {
        stmts.push({ kind: 'include', parts: includeParts(rest, user, loader, depth), where })
      } else {
        const setting = parseOption(canonical, keyword, {
          rest,
          servicePort: (name) => loader.system.servicePort(name),
          env: loader.env,
        })
        stmts.push({ kind: 'set', setting, keyword, where })
      }
    } catch (err) {
      if (!(err instanceof LineError)) throw err
      stmts.push({ kind: 'error', message: err.message, where })
    }
  }
  return stmts
}

function argvQuotesBad(rest: string): boolean {
  return argvSplit(rest) === undefined
}

function hostArgs(rest: string): string[] {
  const args = argvSplit(rest)
  if (args === undefined) throw new LineError('invalid quotes')
  return args
}

/** Expand one Include argument to the files it names (glob(3) with GLOB_TILDE: `~` is $HOME there). */
function includeParts(rest: string, user: boolean, loader: Loader, depth: number): IncludePart[] {
  const args = argvSplit(rest)
  if (args === undefined) throw new LineError('invalid quotes')
  const parts: IncludePart[] = []
  for (const arg of args) {
    if (arg === '') {
      parts.push({ error: 'keyword include empty argument' })
      break
    }
    if (arg.startsWith('~') && !user) {
      parts.push({ error: `bad include path ${arg}` })
      break
    }
    const pattern = arg.startsWith('/') || arg.startsWith('~') ? arg : `${user ? '~/.ssh' : loader.systemDir}/${arg}`
    const globHome = loader.env.HOME !== undefined && loader.env.HOME !== '' ? loader.env.HOME : loader.home
    let expanded = pattern
    if (pattern.startsWith('~')) {
      const slash = pattern.indexOf('/')
      const who = slash < 0 ? pattern.slice(1) : pattern.slice(1, slash)
      const home = who === '' ? globHome : loader.system.userByName(who)?.home
      if (home !== undefined) expanded = home + (slash < 0 ? '' : pattern.slice(slash))
    }
    for (const file of glob(expanded)) {
      if (depth + 1 > MAX_INCLUDE_DEPTH) {
        parts.push({ error: 'Too many recursive configuration includes' })
        return parts
      }
      parts.push(readConfigFile(file, user, loader, depth + 1, true))
      const last = parts[parts.length - 1]
      if (last && 'error' in last) return parts
    }
  }
  return parts
}

/** read_config_file: a missing file is empty; a file ssh may not trust, or cannot read, is refused. */
function readConfigFile(path: string, user: boolean, loader: Loader, depth: number, checkPerm: boolean): IncludePart {
  if (++loader.files > MAX_FILES) return { error: `more than ${MAX_FILES} configuration files included` }
  let st: ReturnType<typeof statSync>
  try {
    st = statSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return { file: path, stmts: [] }
    return { error: `Can't open user config file ${path}: ${(err as Error).message}` }
  }
  if (checkPerm && !securePermissions(st, loader.uid, loader.system)) {
    return { error: `Bad owner or permissions on ${path}` }
  }
  // A directory opens but reads as empty, as with fopen(3)/getline(3).
  if (st.isDirectory()) return { file: path, stmts: [] }
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return { file: path, stmts: [] }
    return { error: `Can't open user config file ${path}: ${(err as Error).message}` }
  }
  return { file: path, stmts: parseLines(text, path, user, loader, depth) }
}

/** glob(3) without GLOB_NOCHECK: `*`, `?`, `[...]` (and `\` escapes) per path component, sorted; no match: none. */
function glob(pattern: string): string[] {
  const magic = (s: string) => /[*?[]/.test(s)
  const unbackslash = (s: string) => s.replace(/\\(.)/g, '$1')
  if (!magic(pattern)) {
    const p = unbackslash(pattern)
    try {
      // lstat, as glob(3) checks: a dangling symlink is listed (and then reads as a missing file).
      lstatSync(p)
      return [p]
    } catch {
      return []
    }
  }
  const segments = pattern.split('/')
  let bases = [segments[0] === '' ? '/' : unbackslash(segments[0] as string)]
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i] as string
    if (seg === '') continue
    const next: string[] = []
    for (const base of bases) {
      if (!magic(seg)) {
        next.push(join(base, unbackslash(seg)))
        continue
      }
      let entries: string[]
      try {
        entries = readdirSync(base)
      } catch {
        continue
      }
      const re = globSegment(seg)
      for (const e of entries.sort())
        if ((seg.startsWith('.') || !e.startsWith('.')) && re.test(e)) next.push(join(base, e))
    }
    bases = next
  }
  return bases
    .filter((b) => {
      try {
        statSync(b)
        return true
      } catch {
        return false
      }
    })
    .sort()
}

function globSegment(seg: string): RegExp {
  let re = '^'
  for (let i = 0; i < seg.length; i++) {
    const ch = seg[i] as string
    if (ch === '\\' && i + 1 < seg.length) re += (seg[++i] as string).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
    else if (ch === '*') re += '[^/]*'
    else if (ch === '?') re += '[^/]'
    else if (ch === '[') {
      let j = i + 1
      if (seg[j] === '!' || seg[j] === '^') j++
      if (seg[j] === ']') j++
      const close = seg.indexOf(']', j)
      if (close < 0) re += '\\['
      else {
        let body = seg.slice(i + 1, close)
        if (body.startsWith('!') || body.startsWith('^')) body = `^${body.slice(1)}`
        re += `[${body.replace(/\\/g, '\\\\')}]`
        i = close
      }
    } else re += ch.replace(/[.+^${}()|\\/]/g, '\\$&')
  }
  return new RegExp(`${re}$`, 's')
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluating: ssh's Options, first obtained value wins

interface Options {
  user?: string
  hostname?: string
  port?: number
  identityFiles: Array<{ path: string; userProvided: boolean }>
  certificateFiles: Array<{ path: string; userProvided: boolean }>
  identitiesOnly?: boolean
  batchMode?: boolean
  identityAgent?: string
  proxyCommand?: string
  jump?: JumpSetting
  connectTimeout?: number
  serverAliveInterval?: number
  serverAliveCountMax?: number
  userKnownHostsFiles?: string[]
  globalKnownHostsFiles?: string[]
  hostKeyAlias?: string
  strict?: StrictMode
  canonicalizeHostname?: CanonicalizeMode
  canonicalDomains?: string[]
  canonicalizeMaxDots?: number
  canonicalizeFallbackLocal?: boolean
  permittedCnames?: PermittedCname[]
  addressFamily?: 0 | 4 | 6
  ignoreUnknown?: string
  algorithms: Partial<Record<AlgorithmKeyword, string>>
  remoteCommand?: string
  controlPath?: string
}

/** Apply one setting to `o`, as readconf.c does when its line is active. */
function apply(o: Options, s: Setting, userProvided: boolean): void {
  switch (s.op) {
    case 'user':
    case 'hostname':
    case 'identityagent':
    case 'remotecommand':
    case 'controlpath': {
      const key = (
        {
          user: 'user',
          hostname: 'hostname',
          identityagent: 'identityAgent',
          remotecommand: 'remoteCommand',
          controlpath: 'controlPath',
        } as const
      )[s.op]
      o[key] ??= s.value
      break
    }
    case 'hostkeyalias':
      o.hostKeyAlias ??= s.value
      break
    case 'ignoreunknown':
      o.ignoreUnknown ??= s.value
      break
    case 'identityfile':
    case 'certificatefile': {
      const list = s.op === 'identityfile' ? o.identityFiles : o.certificateFiles
      if (list.some((f) => f.path === s.value && f.userProvided === userProvided)) break
      if (list.length >= MAX_IDENTITY_FILES) {
        throw new LineError(`Too many ${s.op === 'identityfile' ? 'identity' : 'certificate'} files specified`)
      }
      list.push({ path: s.value, userProvided })
      break
    }
    case 'port':
      o.port ??= s.value
      break
    case 'identitiesonly':
      o.identitiesOnly ??= s.value
      break
    case 'batchmode':
      o.batchMode ??= s.value
      break
    case 'canonicalizefallbacklocal':
      o.canonicalizeFallbackLocal ??= s.value
      break
    case 'proxycommand':
      o.proxyCommand ??= s.value
      break
    case 'proxyjump':
      if (s.value.none) o.jump ??= s.value
      else if (o.proxyCommand === undefined && o.jump === undefined) {
        o.jump = s.value
        o.proxyCommand = 'none'
      }
      break
    case 'connecttimeout':
      // `none` (-1) leaves the option unset, so a later line can still set it (readconf.c's parse_time).
      if (s.value !== -1) o.connectTimeout ??= s.value
      break
    case 'serveraliveinterval':
      if (s.value !== -1) o.serverAliveInterval ??= s.value
      break
    case 'serveralivecountmax':
      o.serverAliveCountMax ??= s.value
      break
    case 'canonicalizemaxdots':
      o.canonicalizeMaxDots ??= s.value
      break
    case 'userknownhostsfile':
      o.userKnownHostsFiles ??= s.value
      break
    case 'globalknownhostsfile':
      o.globalKnownHostsFiles ??= s.value
      break
    case 'canonicaldomains':
      o.canonicalDomains ??= s.value
      break
    case 'stricthostkeychecking':
      o.strict ??= s.value
      break
    case 'canonicalizehostname':
      o.canonicalizeHostname ??= s.value
      break
    case 'canonicalizepermittedcnames':
      o.permittedCnames ??= s.value
      break
    case 'addressfamily':
      o.addressFamily ??= s.value
      break
    case 'algorithms':
      o.algorithms[s.keyword] ??= s.value
      break
    case 'checked':
      break
  }
}

/** The state of one `ssh` invocation while it reads its files. */
interface Pass {
  /** What Host lines match: the name as given (first pass), the canonical name (final pass). */
  host: string
  /** The name as given on the command line (`Match originalhost`, `%n`). */
  originalHost: string
  final: boolean
  wantFinal: boolean
  opts: Options
  /** Match exec results by expanded command, for this resolution. */
  execCache: Map<string, Promise<boolean>>
}

const DEFAULT_SSH_PORT = 22

// ---------------------------------------------------------------------------------------------------------------

/** `file:line: message`, as kay's config errors read. */
function located(w: string, msg: string): string {
  return `${w}: ${msg}`
}

class LoadedSshConfig implements SshConfig {
  readonly #sources: Source[]
  readonly #home: string
  readonly #localUser: string
  readonly #uid: number
  readonly #env: Env
  readonly #localHostname: string
  readonly #resolver: NameResolver
  readonly #system: SystemDb
  readonly #exec: MatchExecRunner
  readonly #localAddresses: () => readonly string[]
  /** Jump hops resolved once per loaded config: a bastion in front of 1,000 hosts is resolved once. */
  readonly #hops = new Map<string, Promise<HostTarget>>()

  constructor(sources: Source[], ctx: ResolvedOptions) {
    this.#sources = sources
    this.#home = ctx.home
    this.#localUser = ctx.localUser
    this.#uid = ctx.uid
    this.#env = ctx.env
    this.#localHostname = ctx.localHostname
    this.#resolver = ctx.resolver
    this.#system = ctx.system
    this.#exec = ctx.matchExec
    this.#localAddresses = ctx.localAddresses
  }

  aliases(): string[] {
    const out = new Set<string>()
    const walk = (stmts: Stmt[]): void => {
      for (const s of stmts) {
        if (s.kind === 'error') throw new ConfigError(located(s.where, s.message))
        if (s.kind === 'include') {
          for (const p of s.parts) {
            if ('error' in p) throw new ConfigError(located(s.where, p.error))
            walk(p.stmts)
          }
        } else if (s.kind === 'host') for (const a of s.args) if (!/[*?!]/.test(a) && a !== '') out.add(a)
      }
    }
    for (const src of this.#sources) walk(src.stmts)
    return [...out]
  }

  async resolve(spec: string, overrides: ResolveOverrides = {}): Promise<HostTarget> {
    const parsed = parseSpec(spec)
    const cmdline: Cmdline = {
      ...(parsed.user !== undefined
        ? { user: parsed.user }
        : overrides.user !== undefined
          ? { user: overrides.user }
          : {}),
      ...(parsed.port !== undefined
        ? { port: parsed.port }
        : overrides.port !== undefined
          ? { port: overrides.port }
          : {}),
      identityFiles: overrides.identityFiles ?? [],
      options: overrides.options ?? [],
    }
    const id = `${parsed.user === undefined ? '' : `${parsed.user}@`}${formatHost(parsed.host.toLowerCase(), parsed.port)}`
    try {
      const target = await this.#resolveHost(parsed.host, cmdline, 0)
      target.id = id
      if (overrides.connectTimeoutMs !== undefined) target.connectTimeoutMs = overrides.connectTimeoutMs
      return target
    } catch (err) {
      if (err instanceof ConfigError) throw new ConfigError(`${id}: ${err.message}`, { host: id, cause: err.cause })
      throw err
    }
  }

  /** One `ssh` invocation: `ssh [cmdline] host`. */
  async #resolveHost(hostArg: string, cmd: Cmdline, depth: number): Promise<HostTarget> {
    if (depth > MAX_JUMP_DEPTH) throw new ConfigError(`ProxyJump chain too deep or cyclic at '${hostArg}'`)
    checkCommandLine(hostArg, cmd)
    const opts: Options = { identityFiles: [], certificateFiles: [], algorithms: {} }
    // The command line first (first obtained value wins): -o lines, -l/user@, -p, -i, -J.
    for (const line of cmd.options) this.#applyCommandLine(opts, line)
    if (cmd.user !== undefined) opts.user ??= cmd.user
    if (cmd.port !== undefined) opts.port ??= cmd.port
    const home = homeOf({ home: this.#home, system: this.#system })
    for (const f of cmd.identityFiles) {
      apply(opts, { op: 'identityfile', value: tildeOrRefuse(f, home, '-i', hostArg) }, true)
    }
    if (cmd.jumpVia !== undefined) {
      const jump = parseCommandLineJump(cmd.jumpVia, (n) => this.#system.servicePort(n))
      opts.jump = jump
      opts.proxyCommand = 'none'
    }
    const pass: Pass = {
      host: hostArg,
      originalHost: hostArg,
      final: false,
      wantFinal: false,
      opts,
      execCache: new Map(),
    }
    await this.#readFiles(pass)

    // Between the passes (ssh.c main): HostName, then canonicalisation.
    let host = hostArg
    if (opts.hostname !== undefined) {
      host = expandOrRefuse(opts.hostname, { h: hostArg }, undefined, 'HostName')
      opts.hostname = host
    }
    const family = opts.addressFamily ?? 0
    const wasAddr = isAddr(host, family)
    if (!wasAddr) host = host.toLowerCase()
    const mode = opts.canonicalizeHostname ?? 'no'
    const settings: CanonicalizeSettings = {
      mode,
      domains: opts.canonicalDomains ?? [],
      maxDots: opts.canonicalizeMaxDots ?? 1,
      fallbackLocal: opts.canonicalizeFallbackLocal ?? true,
      cnames: opts.permittedCnames,
      family,
      direct: isDirect(opts),
    }
    const canon = await canonicalize(host, settings, this.#resolver, wasAddr)
    if ('refused' in canon) throw new ConfigError(canon.refused, { host: hostArg })
    host = canon.host
    if (mode !== 'no') pass.wantFinal = true
    if (pass.wantFinal) {
      opts.hostname = host
      pass.host = host
      pass.final = true
      await this.#readFiles(pass)
    }
    return this.#target(hostArg, host, opts, depth)
  }

  #applyCommandLine(opts: Options, line: string): void {
    const split = splitLine(line)
    const at = 'command-line'
    if (split.kind === 'blank') return
    if (split.kind === 'no-argument') throw new ConfigError(located(at, `no argument after keyword "${split.keyword}"`))
    const canonical = lookupKeyword(split.keyword)
    if (canonical === undefined) {
      if (opts.ignoreUnknown !== undefined && matchPatternListResult(split.keyword, opts.ignoreUnknown, true) === 1)
        return
      throw new ConfigError(located(at, `Bad configuration option: ${split.keyword}`))
    }
    if (canonical === 'host' || canonical === 'match' || canonical === 'include') {
      throw new ConfigError(located(at, `${split.keyword} directive not supported as a command-line option`))
    }
    try {
      const setting = parseOption(canonical, split.keyword, {
        rest: split.rest,
        servicePort: (n) => this.#system.servicePort(n),
        env: this.#env,
      })
      apply(opts, setting, true)
    } catch (err) {
      if (err instanceof LineError) throw new ConfigError(located(at, err.message))
      throw err
    }
  }

  async #readFiles(pass: Pass): Promise<void> {
    for (const src of this.#sources) {
      await this.#run(src.stmts, { active: true }, false, src.user, pass)
    }
  }

  async #run(stmts: Stmt[], state: { active: boolean }, neverMatch: boolean, user: boolean, pass: Pass): Promise<void> {
    for (const s of stmts) {
      switch (s.kind) {
        case 'error':
          throw new ConfigError(located(s.where, s.message))
        case 'unknown': {
          const ign = pass.opts.ignoreUnknown
          if (ign === undefined || matchPatternListResult(s.keyword, ign, true) !== 1) {
            throw new ConfigError(located(s.where, `Bad configuration option: ${s.keyword}`))
          }
          if (s.badQuotes) throw new ConfigError(located(s.where, 'invalid quotes'))
          break
        }
        case 'host':
          state.active = hostLine(s, pass.host, neverMatch)
          break
        case 'match': {
          const m = await this.#matchLine(s, pass)
          state.active = neverMatch ? false : m
          break
        }
        case 'include':
          for (const part of s.parts) {
            if ('error' in part) throw new ConfigError(located(s.where, part.error))
            const outer = state.active
            await this.#run(part.stmts, state, neverMatch || !outer, user, pass)
            // Match state inside an included file never leaks into the including one.
            state.active = outer
          }
          break
        case 'set':
          if (!state.active) break
          try {
            apply(pass.opts, s.setting, user)
          } catch (err) {
            if (err instanceof LineError) throw new ConfigError(located(s.where, err.message))
            throw err
          }
          break
      }
    }
  }

  /** readconf.c match_cfg_line. */
  async #matchLine(s: Extract<Stmt, { kind: 'match' }>, pass: Pass): Promise<boolean> {
    const o = pass.opts
    const port = String(o.port ?? DEFAULT_SSH_PORT)
    const ruser = o.user ?? this.#localUser
    let host: string
    if (pass.final) host = o.hostname as string
    else if (o.hostname !== undefined) {
      host = expandOrRefuse(o.hostname, { h: pass.host }, undefined, `${s.where}: HostName`)
    } else host = pass.host
    let result = true
    for (const c of s.criteria) {
      let r: boolean
      switch (c.kind) {
        case 'all':
          return result && !c.negate
        case 'canonical':
        case 'final':
          if (c.kind === 'final' && !pass.final) pass.wantFinal = true
          r = pass.final
          break
        case 'host':
          r = matchPatternListResult(host.toLowerCase(), c.arg, true) === 1
          break
        case 'originalhost':
          r = matchPatternListResult(pass.originalHost.toLowerCase(), c.arg, true) === 1
          break
        case 'user':
          r = matchPatternListResult(ruser, c.arg, false) === 1
          break
        case 'localuser':
          r = matchPatternListResult(this.#localUser, c.arg, false) === 1
          break
        case 'localnetwork':
          r = this.#localAddresses().some((a) => addressInCidrList(a, c.arg) === 1)
          break
        case 'exec': {
          const thishost = this.#localHostname
          const tokens = {
            C: connectionHash(thishost, host, port, ruser),
            L: shortHost(thishost),
            d: this.#home,
            h: host,
            k: o.hostKeyAlias ?? host,
            l: thishost,
            n: pass.originalHost,
            p: port,
            r: ruser,
            u: this.#localUser,
            i: String(this.#uid),
          }
          const command = expandOrRefuse(c.arg, tokens, undefined, `${s.where}: Match exec`)
          // A prior criterion already failed: ssh skips the command.
          if (!result) continue
          r = await this.#runExec(command, pass, s.where)
          break
        }
      }
      if (r === c.negate) result = false
    }
    return result
  }

  #runExec(command: string, pass: Pass, at: string): Promise<boolean> {
    let p = pass.execCache.get(command)
    if (p === undefined) {
      const shell = this.#env.SHELL ?? '/bin/sh'
      p = this.#exec(command, { shell, env: this.#env as NodeJS.ProcessEnv }).then((out) => {
        if ('abnormal' in out) throw new ConfigError(located(at, `match exec '${command}' error: ${out.abnormal}`))
        return out.status === 0
      })
      pass.execCache.set(command, p)
    }
    return p
  }

  /** After the passes: fill defaults, expand what ssh expands, check what ssh checks, build the target. */
  async #target(hostArg: string, host: string, o: Options, depth: number): Promise<HostTarget> {
    const user = o.user ?? this.#localUser
    const port = o.port ?? this.#system.servicePort('ssh') ?? DEFAULT_SSH_PORT
    const jump = o.jump !== undefined && !o.jump.none ? o.jump : undefined
    if (jump !== undefined) {
      const jport = jump.port ?? this.#system.servicePort('ssh') ?? DEFAULT_SSH_PORT
      if (jump.host === host && jport === port && (jump.user ?? user) === user) {
        throw new ConfigError(`jumphost loop via ${jump.host}`, { host: hostArg })
      }
    }
    const hostKeyAlias = o.hostKeyAlias?.toLowerCase()
    for (const [kw, value] of Object.entries(o.algorithms) as Array<[AlgorithmKeyword, string]>) {
      if (!algorithmsAssemble(kw, value)) throw new ConfigError(`${kw}: invalid argument '${value}'`, { host: hostArg })
    }
    const thishost = this.#localHostname
    const tokens: Record<string, string> = {
      C: connectionHash(thishost, host, String(port), user),
      L: shortHost(thishost),
      i: String(this.#uid),
      k: hostKeyAlias ?? hostArg,
      l: thishost,
      n: hostArg,
      p: String(port),
      d: this.#home,
      h: host,
      r: user,
      u: this.#localUser,
    }
    const home = homeOf({ home: this.#home, system: this.#system })
    const path = (raw: string, what: string): string => {
      try {
        return expand(tildeExpand(raw, home), tokens, this.#env)
      } catch (err) {
        if (err instanceof ExpandError) throw new ConfigError(`${what} '${raw}': ${err.message}`, { host: hostArg })
        throw err
      }
    }
    // What `ssh -G` itself expands (so a bad token refuses the config even before connecting).
    if (o.remoteCommand !== undefined && o.remoteCommand.toLowerCase() !== 'none') {
      expandOrRefuse(o.remoteCommand, tokens, undefined, 'RemoteCommand', hostArg)
    }
    if (o.controlPath !== undefined && o.controlPath.toLowerCase() !== 'none') path(o.controlPath, 'ControlPath')

    const target: HostTarget = { id: hostArg, hostname: host, port, user, originalHost: hostArg }
    if (o.identityAgent !== undefined)
      target.identityAgent = this.#agent(path(o.identityAgent, 'IdentityAgent'), hostArg)
    const ukh = o.userKnownHostsFiles ?? ['~/.ssh/known_hosts', '~/.ssh/known_hosts2']
    target.userKnownHostsFiles = ukh[0]?.toLowerCase() === 'none' ? [] : ukh.map((f) => path(f, 'UserKnownHostsFile'))
    const gkh = o.globalKnownHostsFiles ?? ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2']
    target.globalKnownHostsFiles =
      gkh[0]?.toLowerCase() === 'none' ? [] : gkh.map((f) => tildeOrRefuse(f, home, 'GlobalKnownHostsFile', hostArg))
    if (hostKeyAlias !== undefined) target.hostKeyAlias = hostKeyAlias
    if (o.strict !== undefined) target.strictHostKeyChecking = STRICT[o.strict]
    if (o.connectTimeout !== undefined && o.connectTimeout > 0) target.connectTimeoutMs = o.connectTimeout * 1000
    // Debian: BatchMode makes the default ServerAliveInterval 300 s.
    const aliveInterval = o.serverAliveInterval ?? (o.batchMode === true ? 300 : 0)
    if (aliveInterval > 0) target.keepaliveIntervalMs = aliveInterval * 1000
    if (o.serverAliveCountMax !== undefined) target.keepaliveCountMax = o.serverAliveCountMax
    if (o.identitiesOnly !== undefined) target.identitiesOnly = o.identitiesOnly

    // Connection time in ssh (load_public_identity_files, the proxy command): refused here instead.
    if (o.identityFiles.length > 0) {
      // Any IdentityFile (even `none`) replaces ssh's default keys; `none` itself names no key.
      target.identityFiles = o.identityFiles
        .filter((f) => f.path.toLowerCase() !== 'none')
        .map((f) => path(f.path, 'IdentityFile'))
    }
    if (o.certificateFiles.length > 0) {
      target.certificateFiles = o.certificateFiles.map((f) => path(f.path, 'CertificateFile'))
    }
    const proxyTokens = { h: host, k: hostKeyAlias ?? hostArg, n: hostArg, p: String(port), r: user }
    if (jump !== undefined) {
      target.jump = await this.#jumpChain(jump, proxyTokens, hostArg, depth)
    } else if (o.proxyCommand !== undefined && o.proxyCommand.toLowerCase() !== 'none') {
      try {
        checkProxyCommand(o.proxyCommand)
      } catch (err) {
        throw new ConfigError(`ProxyCommand: ${(err as Error).message}`, { host: hostArg, cause: err })
      }
      target.proxyCommand = o.proxyCommand
    }
    return target
  }

  /** IdentityAgent as ssh uses it when it connects: SSH_AUTH_SOCK, `none`, a legacy `$VAR`, or a socket path. */
  #agent(value: string, hostArg: string): string {
    if (value === 'SSH_AUTH_SOCK') return this.#env.SSH_AUTH_SOCK ?? 'none'
    if (value === 'none') return 'none'
    if (value.startsWith('$') && value[1] !== '{') {
      const name = value.slice(1)
      if (!validEnvName(name))
        throw new ConfigError(`Invalid IdentityAgent environment variable name ${value}`, { host: hostArg })
      return this.#env[name] ?? 'none'
    }
    return value
  }

  /**
   * The hops to reach a host with ProxyJump, outermost first. ssh runs `ssh [-l user] [-p port] [-J extra] hop` with
   * the jump's parts token-expanded for the target; that hop resolves with its own config (the outermost one keeps
   * its own ProxyJump), and `-J extra` means the hops before it reach it.
   */
  async #jumpChain(
    jump: Extract<JumpSetting, { none: false }>,
    tokens: Record<string, string>,
    hostArg: string,
    depth: number,
  ): Promise<HostTarget[]> {
    const x = (s: string) => expandOrRefuse(s, tokens, undefined, 'ProxyJump', hostArg)
    const hop: Cmdline = { identityFiles: [], options: [] }
    if (jump.user !== undefined) hop.user = x(jump.user)
    if (jump.port !== undefined) hop.port = jump.port
    if (jump.extra !== undefined) hop.jumpVia = x(jump.extra)
    const hopHost = x(jump.host)
    // Keyed by depth too: a cycle must reach the depth limit, not wait on itself.
    const key = JSON.stringify([hopHost, hop.user, hop.port, hop.jumpVia, depth])
    let p = this.#hops.get(key)
    if (p === undefined) {
      p = this.#resolveHost(hopHost, hop, depth + 1).then(
        (t) => {
          t.id = formatHop(hop.user, hopHost, hop.port)
          return t
        },
        (err: unknown) => {
          if (!(err instanceof ConfigError) || err.message.startsWith('ProxyJump chain too deep')) throw err
          throw new ConfigError(`ProxyJump hop ${formatHop(hop.user, hopHost, hop.port)}: ${err.message}`, {
            cause: err,
          })
        },
      )
      this.#hops.set(key, p)
    }
    const t = await p
    const { jump: inner, ...rest } = t
    return [...(inner ?? []), rest]
  }
}

const STRICT: Record<StrictMode, StrictHostKeyChecking> = {
  yes: 'yes',
  ask: 'yes',
  no: 'no',
  'accept-new': 'accept-new',
}

/** ssh's `-J`: ProxyJump given on the command line (its hops are validated strictly, as the Debian build does). */
function parseCommandLineJump(spec: string, servicePort: (n: string) => number | undefined): JumpSetting {
  let j: JumpSetting
  try {
    j = parseJump(spec, servicePort)
  } catch (err) {
    throw new ConfigError(`Invalid -J argument: ${(err as Error).message}`)
  }
  if (!j.none) {
    for (const hop of spec.split(',')) {
      const at = hop.lastIndexOf('@')
      const u = at >= 0 ? hop.slice(0, at) : undefined
      const h = hop.slice(at + 1).replace(/^ssh:\/\//, '')
      if (!validHostname(h.replace(/:[^:\]]*$/, '')) || (u !== undefined && !validRemoteUser(u))) {
        throw new ConfigError(`Invalid -J argument '${spec}'`)
      }
    }
  }
  return j
}

interface Cmdline {
  user?: string
  port?: number
  identityFiles: readonly string[]
  options: readonly string[]
  /** `-J`: the hops before this one (ProxyJump from the command line). */
  jumpVia?: string
}

/** ssh_valid_hostname (Debian's backport of OpenSSH 10.3's command-line check). */
function validHostname(s: string): boolean {
  if (s.startsWith('-')) return false
  return !/['`"$\\;&<>|(){},\s\x00-\x1f\x7f]/.test(s)
}

/** ssh_valid_ruser (same backport): no shell metacharacters, no `-` after whitespace, no trailing backslash. */
function validRemoteUser(s: string): boolean {
  if (s.startsWith('-') || s.endsWith('\\')) return false
  if (/['`";&<>|(){}\x00-\x1f\x7f]/.test(s)) return false
  return !/\s-/.test(s)
}

function checkCommandLine(hostArg: string, cmd: Cmdline): void {
  if (cmd.user !== undefined && !validRemoteUser(cmd.user)) {
    throw new ConfigError(`remote username contains invalid characters: '${cmd.user}'`)
  }
  if (!validHostname(hostArg)) throw new ConfigError(`hostname contains invalid characters: '${hostArg}'`)
}

/** No ProxyCommand and no ProxyJump: ssh resolves the name itself (canonicalisation only applies then). */
function isDirect(o: Options): boolean {
  const pc = o.proxyCommand
  const jumpNone = o.jump === undefined || o.jump.none
  return (pc === undefined || pc.toLowerCase() === 'none') && jumpNone
}

/** kex.c kex_assemble_names' refusals: a `!` entry, or a list that matches nothing. */
function algorithmsAssemble(kw: AlgorithmKeyword, value: string): boolean {
  if (value.startsWith('-')) return true
  const list = /^[+^]/.test(value) ? value.slice(1) : value
  if (/^[+^]/.test(value)) return !list.split(',').some((p) => p.startsWith('!'))
  const all = ALGORITHM_UNIVERSE[kw]
  let any = false
  for (const p of list.split(',')) {
    if (p.startsWith('!')) return false
    if (all.some((a) => matchPattern(a, p))) any = true
  }
  return any
}

function hostLine(s: Extract<Stmt, { kind: 'host' }>, host: string, neverMatch: boolean): boolean {
  let active = false
  for (const arg of s.args) {
    if (arg === '') throw new ConfigError(located(s.where, 'keyword host empty argument'))
    if (neverMatch) return false
    const negated = arg.startsWith('!')
    if (matchPattern(host, negated ? arg.slice(1) : arg)) {
      if (negated) return false
      active = true
    }
  }
  return active
}

function expandOrRefuse(
  s: string,
  tokens: Record<string, string>,
  env: Env | undefined,
  what: string,
  host?: string,
): string {
  try {
    return expand(s, tokens, env)
  } catch (err) {
    if (err instanceof ExpandError) throw new ConfigError(`${what}: ${err.message}`, host === undefined ? {} : { host })
    throw err
  }
}

function tildeOrRefuse(
  p: string,
  home: (u: string | undefined) => string | undefined,
  what: string,
  host: string,
): string {
  try {
    return tildeExpand(p, home)
  } catch (err) {
    throw new ConfigError(`${what} '${p}': ${(err as Error).message}`, { host })
  }
}

/** readconf.c ssh_connection_hash: SHA-1 of local host, host, port and user, hex (`%C`). */
function connectionHash(thishost: string, host: string, port: string, user: string): string {
  return createHash('sha1').update(`${thishost}${host}${port}${user}`).digest('hex')
}

function shortHost(h: string): string {
  const dot = h.indexOf('.')
  return dot < 0 ? h : h.slice(0, dot)
}

/**
 * Validate a ProxyCommand's `%` tokens (ssh expands `%h %k %n %p %r %%` in it when it connects and refuses any
 * other). Used at resolution so a bad one fails before any dial.
 */
export function checkProxyCommand(command: string): void {
  for (const m of command.matchAll(/%(.?)/g)) {
    if (m[1] === '') throw new ConfigError('ProxyCommand: a lone % at the end')
    if (!'%hknpr'.includes(m[1] as string)) {
      throw new ConfigError(`ProxyCommand: unknown token '%${m[1]}' (ssh expands %h %k %n %p %r %%)`)
    }
  }
}

function formatHost(host: string, port: number | undefined): string {
  if (port === undefined) return host
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function formatHop(user: string | undefined, host: string, port: number | undefined): string {
  return `${user === undefined ? '' : `${user}@`}${formatHost(host.toLowerCase(), port)}`
}

function parseSpec(spec: string): { user?: string; host: string; port?: number } {
  const trimmed = spec.trim()
  const parsed = parseHostSpec(trimmed)
  // Keep the name's case (ssh matches Host lines against the argument as typed); parseHostSpec lower-cases it.
  const rest = trimmed.slice(trimmed.lastIndexOf('@') + 1)
  const host = rest.startsWith('[')
    ? rest.slice(1, rest.indexOf(']'))
    : parsed.port !== undefined && (rest.match(/:/g)?.length ?? 0) === 1
      ? rest.slice(0, rest.lastIndexOf(':'))
      : rest
  const out: { user?: string; host: string; port?: number } = { host }
  if (parsed.user !== undefined) out.user = parsed.user
  if (parsed.port !== undefined) out.port = parsed.port
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Loading

interface ResolvedOptions {
  home: string
  localUser: string
  uid: number
  env: Env
  localHostname: string
  resolver: NameResolver
  system: SystemDb
  matchExec: MatchExecRunner
  localAddresses: () => readonly string[]
  systemConfig: string | null
}

function resolveOptions(opts: SshConfigOptions): ResolvedOptions {
  const system = opts.system ?? defaultSystemDb()
  const uid = opts.uid ?? (typeof process.getuid === 'function' ? process.getuid() : 0)
  let info: { username: string; homedir: string } | undefined
  const me = () => {
    if (info) return info
    const acct = system.userByUid(uid)
    if (acct) info = { username: acct.name, homedir: acct.home }
    else {
      try {
        info = os.userInfo()
      } catch {
        info = { username: process.env.USER ?? 'root', homedir: os.homedir() }
      }
    }
    return info
  }
  return {
    home: opts.homeDir ?? me().homedir,
    localUser: opts.localUser ?? me().username,
    uid,
    env: opts.env ?? process.env,
    localHostname: opts.localHostname ?? os.hostname(),
    resolver: opts.resolver ?? systemResolver,
    system,
    matchExec: opts.matchExec ?? runMatchExec,
    localAddresses: opts.localAddresses ?? localAddresses,
    systemConfig: opts.systemConfig === undefined ? SYSTEM_SSH_CONFIG : opts.systemConfig,
  }
}

function newLoader(ctx: ResolvedOptions): Loader {
  return {
    env: ctx.env,
    systemDir: dirname(ctx.systemConfig ?? SYSTEM_SSH_CONFIG),
    home: ctx.home,
    uid: ctx.uid,
    system: ctx.system,
    files: 0,
  }
}

/**
 * Load ssh_config the way ssh does. No `path`: `~/.ssh/config` (from the account's home; checked for safe
 * ownership and mode) then the system file, either of them may be missing. `path` given (like `ssh -F`): only that
 * file, which must exist; `none` reads nothing. Lines ssh would refuse are reported when a host is resolved (as
 * ssh reports them for each invocation), naming file and line.
 */
export async function loadSshConfig(path?: string, opts: SshConfigOptions = {}): Promise<SshConfig> {
  const ctx = resolveOptions(opts)
  const loader = newLoader(ctx)
  const sources: Source[] = []
  const add = (file: string, user: boolean, checkPerm: boolean, mustExist: boolean) => {
    if (mustExist) {
      try {
        statSync(file)
      } catch (err) {
        throw new ConfigError(`cannot read ssh config '${file}': ${(err as Error).message}`, { cause: err })
      }
    }
    const part = readConfigFile(file, user, loader, 0, checkPerm)
    if ('error' in part) {
      sources.push({ path: file, user, stmts: [{ kind: 'error', message: part.error, where: file }] })
    } else sources.push({ path: file, user, stmts: part.stmts })
  }
  if (path === undefined) {
    add(join(ctx.home, '.ssh', 'config'), true, true, false)
    if (ctx.systemConfig !== null) add(ctx.systemConfig, false, false, false)
  } else if (path.toLowerCase() !== 'none') {
    const file = tildeOrRefuse(path, homeOf({ home: ctx.home, system: ctx.system }), 'ssh config', path)
    add(file, true, false, true)
  }
  return new LoadedSshConfig(sources, ctx)
}

/** Parse ssh_config text as if it were the file given with `-F` (Includes are read from disk). */
export function parseSshConfig(text: string, opts: SshConfigOptions = {}): SshConfig {
  const ctx = resolveOptions(opts)
  const loader = newLoader(ctx)
  const stmts = parseLines(text, '<config>', true, loader, 0)
  return new LoadedSshConfig([{ path: '<config>', user: true, stmts }], ctx)
}
