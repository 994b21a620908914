/**
 * Host name canonicalisation as ssh.c does it between its two configuration passes: numeric addresses are
 * normalised (getaddrinfo AI_NUMERICHOST + getnameinfo NI_NUMERICHOST), names are tried with each CanonicalDomains
 * suffix (as absolute names, `name.domain.`), CNAMEs are followed only where CanonicalizePermittedCNAMEs allows, and
 * an unresolvable name is refused unless CanonicalizeFallbackLocal.
 *
 * Name resolution goes through an injectable {@link NameResolver}; the default asks the system resolver (NSS, so
 * /etc/hosts and DNS as configured) exactly as ssh's getaddrinfo(3) would.
 */
import { execFile } from 'node:child_process'
import { lookup } from 'node:dns/promises'
import { promisify } from 'node:util'
import { matchPatternListResult } from './patterns.js'
import type { CanonicalizeMode, PermittedCname } from './ssh-keywords.js'

const execFileP = promisify(execFile)

/** What getaddrinfo(3) says about a name. */
interface NameLookup {
  addresses: string[]
  /** ai_canonname: the name the resolver ended at (the first name of an /etc/hosts line, a CNAME's target). */
  canonicalName?: string
}

/**
 * Resolves names for canonicalisation. `family` is AddressFamily (0 any, 4 inet, 6 inet6); `canonicalName` says
 * whether ssh asks for ai_canonname (only when CNAME rules are configured). `undefined`: the name does not resolve
 * (any getaddrinfo failure, as ssh treats them).
 */
export interface NameResolver {
  lookup(name: string, opts: { family: 0 | 4 | 6; canonicalName: boolean }): Promise<NameLookup | undefined>
}

/**
 * The system resolver: `dns.lookup` (getaddrinfo, so NSS: /etc/hosts, DNS, search domains), and, when a canonical
 * name is wanted, `getent ahosts` (getaddrinfo with AI_CANONNAME, which Node does not expose). Only used when a
 * config turns canonicalisation or CNAME rules on.
 */
export const systemResolver: NameResolver = {
  async lookup(name, opts) {
    let addresses: string[]
    try {
      const res = await lookup(name, { all: true, family: opts.family, verbatim: true })
      addresses = res.map((r) => r.address)
    } catch {
      return undefined
    }
    if (addresses.length === 0) return undefined
    if (!opts.canonicalName) return { addresses }
    try {
      // Not ahostsv4/ahostsv6: getent asks those with AI_ADDRCONFIG, which ssh does not. The canonical name does not
      // depend on the family; the addresses (above) do.
      const { stdout } = await execFileP('getent', ['ahosts', name], { timeout: 10_000 })
      // The first line names ai_canonname after the address and socket type: "10.0.0.1  STREAM web01.example.com".
      const canon = stdout.split('\n')[0]?.trim().split(/\s+/)[2]
      return canon ? { addresses, canonicalName: canon } : { addresses }
    } catch {
      return { addresses }
    }
  },
}

/** inet_aton, as glibc's getaddrinfo parses a numeric IPv4 host: 1 to 4 parts, each decimal, 0-octal or 0x-hex. */
function parseIPv4(s: string): number[] | undefined {
  const parts = s.split('.')
  if (parts.length > 4 || parts.some((p) => p === '')) return undefined
  const nums: number[] = []
  for (const p of parts) {
    let v: number
    if (/^0[xX][0-9a-fA-F]*$/.test(p)) v = p.length === 2 ? 0 : Number.parseInt(p.slice(2), 16)
    else if (/^0[0-7]*$/.test(p)) v = Number.parseInt(p, 8)
    else if (/^[1-9]\d*$/.test(p)) v = Number(p)
    else return undefined
    nums.push(v)
  }
  const last = nums.length - 1
  const limits = [2 ** 32 - 1, 2 ** 24 - 1, 2 ** 16 - 1, 255]
  if (nums.slice(0, last).some((n) => n > 255) || (nums[last] as number) > (limits[last] as number)) return undefined
  let value = nums[last] as number
  for (let i = 0; i < last; i++) value += (nums[i] as number) * 2 ** (8 * (3 - i))
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255]
}

/** inet_pton for IPv6 (with an embedded dotted IPv4 tail): 8 sixteen-bit words. */
function parseIPv6(s: string): number[] | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined
  const dbl = s.indexOf('::')
  if (dbl >= 0 && s.indexOf('::', dbl + 1) >= 0) return undefined
  const side = (t: string): number[] | undefined => {
    if (t === '') return []
    const out: number[] = []
    const groups = t.split(':')
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i] as string
      if (i === groups.length - 1 && g.includes('.')) {
        if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(g)) return undefined
        const b = g.split('.').map(Number)
        if (b.some((n) => n > 255) || g.split('.').some((p) => p.length > 1 && p.startsWith('0'))) return undefined
        out.push(((b[0] as number) << 8) | (b[1] as number), ((b[2] as number) << 8) | (b[3] as number))
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined
        out.push(Number.parseInt(g, 16))
      }
    }
    return out
  }
  if (dbl < 0) {
    const w = side(s)
    return w?.length === 8 ? w : undefined
  }
  const head = side(s.slice(0, dbl))
  const tail = side(s.slice(dbl + 2))
  if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
}

/** glibc inet_ntop for IPv6: the longest run of two or more zero words as `::`, IPv4-mapped/compatible dotted. */
function formatIPv6(w: number[]): string {
  let best = { base: -1, len: 0 }
  let cur = { base: -1, len: 0 }
  for (let i = 0; i < 8; i++) {
    if (w[i] === 0) {
      if (cur.base < 0) cur = { base: i, len: 1 }
      else cur.len++
    } else if (cur.base >= 0) {
      if (best.base < 0 || cur.len > best.len) best = cur
      cur = { base: -1, len: 0 }
    }
  }
  if (cur.base >= 0 && (best.base < 0 || cur.len > best.len)) best = cur
  if (best.base >= 0 && best.len < 2) best = { base: -1, len: 0 }
  let out = ''
  for (let i = 0; i < 8; i++) {
    if (best.base >= 0 && i >= best.base && i < best.base + best.len) {
      if (i === best.base) out += ':'
      continue
    }
    if (i !== 0) out += ':'
    if (i === 6 && best.base === 0 && (best.len === 6 || (best.len === 5 && w[5] === 0xffff))) {
      const a = w[6] as number
      const b = w[7] as number
      out += `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`
      break
    }
    out += (w[i] as number).toString(16)
  }
  if (best.base >= 0 && best.base + best.len === 8) out += ':'
  return out
}

/**
 * ssh.c resolve_addr: the numeric form of `name` when it is exactly one numeric address of an allowed family
 * (getaddrinfo AI_NUMERICHOST, then getnameinfo NI_NUMERICHOST), else undefined. A `%scope` suffix is kept as given.
 */
export function numericAddress(name: string, family: 0 | 4 | 6): string | undefined {
  if (family !== 6) {
    const v4 = parseIPv4(name)
    if (v4) return v4.join('.')
  }
  if (family !== 4) {
    const pct = name.indexOf('%')
    const addr = pct < 0 ? name : name.slice(0, pct)
    const scope = pct < 0 ? '' : name.slice(pct)
    if (pct >= 0 && scope.length < 2) return undefined
    const v6 = parseIPv6(addr)
    if (v6) return formatIPv6(v6) + scope
  }
  return undefined
}

/** A numeric address as bytes (4 or 16), parsed as getaddrinfo AI_NUMERICHOST parses it; a `%scope` is ignored. */
export function addressBytes(s: string): number[] | undefined {
  const v4 = parseIPv4(s)
  if (v4) return v4
  const pct = s.indexOf('%')
  const v6 = parseIPv6(pct < 0 ? s : s.slice(0, pct))
  return v6?.flatMap((w) => [w >> 8, w & 255])
}

/** ssh.c is_addr_fast: a name that can only be an address (digits and dots only, or a `:` or `%`). */
function isAddrFast(name: string): boolean {
  return name.includes('%') || name.includes(':') || /^[0-9.]*$/.test(name)
}

/** ssh.c is_addr: a fast-path address, or exactly one numeric address of an allowed family. */
export function isAddr(name: string, family: 0 | 4 | 6): boolean {
  return isAddrFast(name) || numericAddress(name, family) !== undefined
}

/** readconf.c config_has_permitted_cnames: set, and not just `none`. */
function hasPermittedCnames(rules: readonly PermittedCname[] | undefined): rules is readonly PermittedCname[] {
  if (rules === undefined || rules.length === 0) return false
  return !(rules.length === 1 && rules[0]?.source.toLowerCase() === 'none' && rules[0]?.target === '')
}

/** A resolved name is only usable as ai_canonname if it passes valid_domain (ssh ignores a bad CNAME). */
function usableCname(cname: string | undefined): string | undefined {
  if (cname === undefined || cname === '') return undefined
  if (!/^[A-Za-z0-9]/.test(cname) || cname.includes('..') || !/^[A-Za-z0-9._-]+$/.test(cname)) return undefined
  return cname
}

export interface CanonicalizeSettings {
  mode: CanonicalizeMode
  domains: readonly string[]
  maxDots: number
  fallbackLocal: boolean
  cnames: readonly PermittedCname[] | undefined
  family: 0 | 4 | 6
  /** No ProxyCommand or ProxyJump: ssh only canonicalises names it will resolve itself (unless `always`). */
  direct: boolean
}

/** ssh.c check_follow_cname: `name` replaced by `cname` when a permitted rule covers both. */
function followCname(name: string, cname: string | undefined, s: CanonicalizeSettings): string {
  if (cname === undefined || cname === '' || !hasPermittedCnames(s.cnames) || name === cname) return name
  if (s.mode === 'no') return name
  if (!s.direct && s.mode !== 'always') return name
  for (const rule of s.cnames) {
    if (matchPatternListResult(name, rule.source, true) !== 1) continue
    if (matchPatternListResult(cname, rule.target, true) !== 1) continue
    return cname
  }
  return name
}

/** The outcome of canonicalisation: the name to use, whether it resolved, or why ssh gives up. */
export type Canonicalized = { host: string; resolved: boolean } | { refused: string }

/**
 * ssh.c resolve_canonicalize followed by main()'s CNAME pass: `host` is the (lower-cased unless numeric) name after
 * HostName. Returns the canonical name, or the reason ssh refuses to go on.
 */
export async function canonicalize(
  host: string,
  s: CanonicalizeSettings,
  resolver: NameResolver,
  wasAddr: boolean,
): Promise<Canonicalized> {
  const wantCname = hasPermittedCnames(s.cnames)
  const resolve = (name: string) => resolver.lookup(name, { family: s.family, canonicalName: wantCname })
  let resolved = false
  let name = host
  if (s.mode !== 'no' || wasAddr) {
    const r = await resolveCanonical(name, s, resolve)
    if ('refused' in r) return r
    name = r.host
    resolved = r.resolved
  }
  // Canonicalisation off or failed with fallback: a bare name may still be replaced by a permitted CNAME.
  if (!resolved && wantCname && (s.direct || s.mode === 'always')) {
    const r = await resolve(name)
    if (r === undefined) {
      if (s.direct) return { refused: `Could not resolve hostname ${name}` }
    } else {
      resolved = true
      name = followCname(name, usableCname(r.canonicalName), s)
    }
  }
  return { host: name, resolved }
}

async function resolveCanonical(
  host: string,
  s: CanonicalizeSettings,
  resolve: (name: string) => Promise<NameLookup | undefined>,
): Promise<Canonicalized> {
  const numeric = numericAddress(host, s.family)
  if (numeric !== undefined) {
    return { host: host.toLowerCase() === numeric.toLowerCase() ? host : numeric, resolved: true }
  }
  if (isAddrFast(host)) return { host, resolved: false }
  if (s.mode === 'no') return { host, resolved: false }
  if (!s.direct && s.mode !== 'always') return { host, resolved: false }
  const found = async (full: string): Promise<Canonicalized | undefined> => {
    const r = await resolve(full)
    if (r === undefined) return undefined
    return { host: followCname(full.slice(0, -1), usableCname(r.canonicalName), s), resolved: true }
  }
  if (host.endsWith('.')) {
    const r = await found(host)
    if (r) return r
  } else {
    const dots = host.split('.').length - 1
    if (dots > s.maxDots) return { host, resolved: false }
    for (const domain of s.domains) {
      if (domain.toLowerCase() === 'none') break
      const r = await found(`${host}.${domain}.`)
      if (r) return r
    }
  }
  if (!s.fallbackLocal) return { refused: `Could not resolve host "${host}"` }
  return { host, resolved: false }
}
