/**
 * The lexical layer of ssh_config(5) as OpenSSH 9.2 reads it (readconf.c with misc.c's strdelim, argv_split,
 * percent_expand, dollar_expand and tilde_expand): how a line splits into a keyword and arguments, and how `%x`
 * tokens, `${VAR}` and `~` expand. Written from OpenSSH's documented and observed behaviour; the conformance suite
 * (test/config/ssh-config.conformance.test.ts) holds it to `ssh -G`.
 */

/** readconf.c's WHITESPACE. */
const WS = ' \t\r\n'

function isWs(ch: string | undefined): boolean {
  return ch !== undefined && WS.includes(ch)
}

function skipWs(s: string, i: number): number {
  while (i < s.length && isWs(s[i])) i++
  return i
}

/** A cursor over a line, as strdelim walks it: `undefined` is C's NULL (nothing left at all). */
export interface Cursor {
  s: string
  pos: number | undefined
}

/**
 * misc.c strdelim: the next token, split on whitespace or (with `splitEquals`) one `=`; a `"` starts a quoted part
 * that runs to the next `"` (no escapes). Returns `undefined` when the cursor is exhausted or a quote is unmatched.
 * The token may be empty (leading whitespace, or the end of the line).
 */
export function strdelim(c: Cursor, splitEquals = true): string | undefined {
  if (c.pos === undefined) return undefined
  const { s } = c
  const old = c.pos
  let i = old
  while (i < s.length && !isWs(s[i]) && s[i] !== '"' && !(splitEquals && s[i] === '=')) i++
  if (i >= s.length) {
    c.pos = undefined
    return s.slice(old)
  }
  if (s[i] === '"') {
    const close = s.indexOf('"', i + 1)
    if (close < 0) {
      c.pos = undefined
      return undefined
    }
    c.pos = skipWs(s, close + 1)
    return s.slice(old, i) + s.slice(i + 1, close)
  }
  const sawEquals = splitEquals && s[i] === '='
  let next = skipWs(s, i + 1)
  if (splitEquals && s[next] === '=' && !sawEquals) next = skipWs(s, next + 1)
  c.pos = next
  return s.slice(old, i)
}

/**
 * misc.c argv_split: arguments split on spaces and tabs; `'` and `"` quote, a backslash escapes a quote, a
 * backslash or (outside quotes) a space; an argument that starts with `#` ends the line. `undefined`: an unmatched
 * quote ("invalid quotes").
 */
export function argvSplit(s: string, terminateOnComment = true): string[] | undefined {
  const out: string[] = []
  let i = 0
  while (i < s.length) {
    const ch = s[i]
    if (ch === ' ' || ch === '\t') {
      i++
      continue
    }
    if (terminateOnComment && ch === '#') break
    let arg = ''
    let quote = ''
    for (; i < s.length; i++) {
      const c = s[i] as string
      const n = s[i + 1]
      if (c === '\\') {
        if (n === "'" || n === '"' || n === '\\' || (quote === '' && n === ' ')) {
          arg += n
          i++
        } else arg += c
      } else if (quote === '' && (c === ' ' || c === '\t')) break
      else if (quote === '' && (c === '"' || c === "'")) quote = c
      else if (quote !== '' && c === quote) quote = ''
      else arg += c
    }
    if (i >= s.length && quote !== '') return undefined
    out.push(arg)
  }
  return out
}

/** One config line, split as readconf.c's process_config_line does before it looks the keyword up. */
export type SplitLine =
  | { kind: 'blank' }
  /** `rest` is the line after the keyword and the whitespace (and one `=`) that follow it; never empty. */
  | { kind: 'line'; keyword: string; rest: string }
  | { kind: 'no-argument'; keyword: string }

export function splitLine(raw: string): SplitLine {
  // Trailing whitespace (and a form feed) go; the first character is never stripped, as in readconf.c.
  let end = raw.length
  while (end > 1 && (isWs(raw[end - 1]) || raw[end - 1] === '\f')) end--
  const c: Cursor = { s: raw.slice(0, end), pos: 0 }
  let keyword = strdelim(c)
  if (keyword === '') keyword = strdelim(c)
  if (keyword === undefined || keyword === '' || keyword.startsWith('\n') || keyword.startsWith('#')) {
    return { kind: 'blank' }
  }
  keyword = keyword.toLowerCase()
  const rest = c.pos === undefined ? '' : c.s.slice(skipWs(c.s, c.pos))
  return rest === '' ? { kind: 'no-argument', keyword } : { kind: 'line', keyword, rest }
}

/** A `%`/`${}` expansion that ssh refuses (unknown token, lone `%`, unset or malformed variable). */
export class ExpandError extends Error {}

export type Env = Readonly<Record<string, string | undefined>>

/**
 * misc.c percent_expand / dollar_expand / percent_dollar_expand: `%x` from `tokens` (undefined: no `%`
 * expansion) and, with `env`, `${VAR}`. Expanded values are not expanded again. Throws {@link ExpandError} for an
 * unknown token, a trailing `%`, a malformed `${`, or an unset variable (ssh refuses all of them).
 */
export function expand(s: string, tokens: Readonly<Record<string, string>> | undefined, env?: Env): string {
  let out = ''
  let missing: string | undefined
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string
    if (env !== undefined && ch === '$' && s[i + 1] === '{') {
      const close = s.indexOf('}', i + 2)
      if (close < 0) throw new ExpandError(`environment variable '${s.slice(i + 2)}' missing closing '}'`)
      const name = s.slice(i + 2, close)
      if (name === '') throw new ExpandError('zero-length environment variable')
      const v = env[name]
      if (v === undefined) missing ??= name
      else out += v
      i = close
      continue
    }
    if (ch !== '%' || tokens === undefined) {
      out += ch
      continue
    }
    const t = s[++i]
    if (t === '%') out += '%'
    else if (t === undefined) throw new ExpandError(`invalid format: a lone '%' at the end of '${s}'`)
    else {
      const v = tokens[t]
      if (v === undefined) throw new ExpandError(`unknown key %${t} in '${s}'`)
      out += v
    }
  }
  if (missing !== undefined) throw new ExpandError(`environment variable '${missing}' is not set`)
  return out
}

/** The longest path tilde_expand accepts (PATH_MAX). */
const PATH_MAX = 4096

/**
 * misc.c tilde_expand: `~` and `~/p` from the account's home directory (the password database, not $HOME),
 * `~user/p` from that user's. `homeOf(undefined)` is the current account. Throws {@link ExpandError} for an
 * unknown user or an over-long result.
 */
export function tildeExpand(path: string, homeOf: (user: string | undefined) => string | undefined): string {
  if (!path.startsWith('~')) return path
  const body = path.slice(1)
  let user: string | undefined
  let rest: string
  if (body === '' || body.startsWith('/')) rest = body.replace(/^\/+/, '')
  else {
    const slash = body.indexOf('/')
    user = slash < 0 ? body : body.slice(0, slash)
    rest = slash < 0 ? '' : body.slice(slash + 1).replace(/^\/+/, '')
  }
  const home = homeOf(user)
  if (home === undefined) throw new ExpandError(user === undefined ? 'no home directory' : `no such user ${user}`)
  const out = `${home}${home === '' || !home.endsWith('/') ? '/' : ''}${rest}`
  if (out.length >= PATH_MAX) throw new ExpandError(`path too long: ${path}`)
  return out
}

/** misc.c valid_env_name: one or more alphanumerics or underscores. */
export function validEnvName(name: string): boolean {
  return /^[A-Za-z0-9_]+$/.test(name)
}
