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
 * OpenSSH `match_pattern_list`: comma-separated patterns, `!` negates. 1 when a positive pattern matches and no
 * negated one does, -1 when a negated one matches (that wins), 0 when none does. With `lower`, the patterns are
 * lower-cased (the text must already be). A sub-pattern of 1023 characters or more never matches, as in match.c.
 */
export function matchPatternListResult(text: string, list: string, lower = false): -1 | 0 | 1 {
  let got: 0 | 1 = 0
  for (const raw of list.split(',')) {
    const neg = raw.startsWith('!')
    let pat = neg ? raw.slice(1) : raw
    if (pat.length >= 1023) return 0
    if (lower) pat = pat.toLowerCase()
    if (matchPattern(text, pat)) {
      if (neg) return -1
      got = 1
    }
  }
  return got
}
