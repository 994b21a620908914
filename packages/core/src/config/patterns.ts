/** OpenSSH's host patterns (match.c): `*` and `?` globs, comma lists with `!` negation. */

/** Glob match for ssh patterns: `*` any run, `?` exactly one character. */
export function matchPattern(text: string, pattern: string): boolean {
  // Iterative wildcard match with backtracking on the last '*': linear-ish, no regex blow-up.
  let t = 0
  let p = 0
  let star = -1
  let mark = 0
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === '?' || pattern[p] === text[t])) {
      t++
      p++
    } else if (p < pattern.length && pattern[p] === '*') {
      star = p++
      mark = t
    } else if (star >= 0) {
      p = star + 1
      t = ++mark
    } else {
      return false
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++
  return p === pattern.length
}

/**
 * OpenSSH `match_pattern_list`: comma-separated patterns, `!` negates; a negated match wins over everything,
 * otherwise any positive match matches. Patterns are lower-cased when `lower` (the text must already be).
 */
export function matchPatternList(text: string, list: string, lower = false): boolean {
  let matched = false
  for (const raw of list.split(',')) {
    const neg = raw.startsWith('!')
    const pat = lower ? (neg ? raw.slice(1) : raw).toLowerCase() : neg ? raw.slice(1) : raw
    if (matchPattern(text, pat)) {
      if (neg) return false
      matched = true
    }
  }
  return matched
}
