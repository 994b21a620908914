/**
 * `kay exec --diff`: how each distinct output differs from the reference one, as unified diffs (clush --diff).
 *
 * The reference group is chosen as ClusterShell does: the lowest exit status (failed commands are not the
 * reference), then the most hosts, then the first host name. Groups identical to it print nothing, so a fleet that
 * agrees prints nothing at all; hosts whose command never ran (an error and no output) are left out. Diffs are computed with Myers' O(ND) algorithm over lines, bounded: past
 * {@link MAX_DIFF_LINES} lines or {@link MAX_EDIT_DISTANCE} edits a group gets a one-line note instead.
 */
import type { CollateGroup } from './collate.js'
import { sanitize } from './format.js'

/** Lines of context around each change, as `diff -u`. */
const CONTEXT = 3
const MAX_DIFF_LINES = 20_000
const MAX_EDIT_DISTANCE = 1_000

type Op = { kind: ' ' | '-' | '+'; line: string }

function lines(text: string): string[] {
  if (text === '') return []
  const out = text.split('\n')
  if (out.at(-1) === '') out.pop()
  return out
}

/** The shortest edit script from `a` to `b` (Myers), or undefined past `maxD` edits. Memory O(D²), D ≤ maxD. */
export function editScript(a: readonly string[], b: readonly string[], maxD = MAX_EDIT_DISTANCE): Op[] | undefined {
  const n = a.length
  const m = b.length
  const max = Math.min(n + m, maxD)
  const offset = max + 1
  const v = new Int32Array(2 * max + 3)
  // trace[d]: the frontier before round d, for diagonals -d-1..d+1 (index k + d + 1).
  const trace: Int32Array[] = []
  let found = -1
  for (let d = 0; d <= max && found < 0; d++) {
    trace.push(v.slice(offset - d - 1, offset + d + 2))
    for (let k = -d; k <= d; k += 2) {
      let x =
        k === -d || (k !== d && v[offset + k - 1]! < v[offset + k + 1]!) ? v[offset + k + 1]! : v[offset + k - 1]! + 1
      let y = x - k
      while (x < n && y < m && a[x] === b[y]) {
        x++
        y++
      }
      v[offset + k] = x
      if (x >= n && y >= m) {
        found = d
        break
      }
    }
  }
  if (found < 0) return undefined
  const ops: Op[] = []
  let x = n
  let y = m
  for (let d = found; d > 0; d--) {
    const at = (k: number) => trace[d]![k + d + 1]!
    const k = x - y
    const prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1
    const prevX = at(prevK)
    const prevY = prevX - prevK
    while (x > prevX && y > prevY) {
      x--
      y--
      ops.push({ kind: ' ', line: a[x]! })
    }
    if (x === prevX) {
      y--
      ops.push({ kind: '+', line: b[y]! })
    } else {
      x--
      ops.push({ kind: '-', line: a[x]! })
    }
  }
  while (x > 0 && y > 0) {
    x--
    y--
    ops.push({ kind: ' ', line: a[x]! })
  }
  return ops.reverse()
}

/** `@@ -l,s +l,s @@` hunks with {@link CONTEXT} lines around each change. */
export function unifiedHunks(a: readonly string[], b: readonly string[]): string[] | undefined {
  const ops = editScript(a, b)
  if (ops === undefined) return undefined
  const out: string[] = []
  let i = 0
  // Position in a and b of each op, for the hunk headers.
  const posA: number[] = []
  const posB: number[] = []
  let pa = 0
  let pb = 0
  for (const op of ops) {
    posA.push(pa)
    posB.push(pb)
    if (op.kind !== '+') pa++
    if (op.kind !== '-') pb++
  }
  while (i < ops.length) {
    if (ops[i]!.kind === ' ') {
      i++
      continue
    }
    const start = Math.max(0, i - CONTEXT)
    let end = i
    // Extend over changes separated by at most 2 × CONTEXT unchanged lines.
    for (let j = i; j < ops.length; j++) {
      if (ops[j]!.kind !== ' ') end = j
      else if (j - end > 2 * CONTEXT) break
    }
    const stop = Math.min(ops.length, end + CONTEXT + 1)
    const slice = ops.slice(start, stop)
    const aLen = slice.filter((o) => o.kind !== '+').length
    const bLen = slice.filter((o) => o.kind !== '-').length
    const aStart = aLen === 0 ? posA[start]! : posA[start]! + 1
    const bStart = bLen === 0 ? posB[start]! : posB[start]! + 1
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`)
    for (const o of slice) out.push(`${o.kind}${sanitize(o.line)}`)
    i = stop
  }
  return out
}

/** The reference group: lowest exit status (errors last), most hosts, first host name. */
export function referenceGroup(groups: readonly CollateGroup[]): CollateGroup | undefined {
  const rank = (g: CollateGroup) =>
    g.error !== undefined || g.exitCode === null ? Number.MAX_SAFE_INTEGER : g.exitCode
  let best: CollateGroup | undefined
  for (const g of groups) {
    if (best === undefined || rank(g) < rank(best) || (rank(g) === rank(best) && g.hosts.length > best.hosts.length)) {
      best = g
    }
  }
  return best
}

const label = (g: CollateGroup) => (g.hosts.length === 1 ? g.folded : `${g.folded} (${g.hosts.length})`)

/**
 * The `--diff` text: for each group whose stdout differs from the reference's, `--- reference` / `+++ group` and the
 * hunks. Empty when every host printed the same. Ends with a newline when not empty.
 */
export function renderDiff(groups: readonly CollateGroup[]): string {
  const ref = referenceGroup(groups)
  if (ref === undefined) return ''
  const refLines = lines(ref.stdout)
  const out: string[] = []
  for (const g of groups) {
    // Hosts whose command never ran (unreachable, refused) have nothing to compare; their closing line says why.
    if (g === ref || g.stdout === ref.stdout || (g.error !== undefined && g.stdout === '')) continue
    out.push(`--- ${label(ref)}`, `+++ ${label(g)}`)
    const other = lines(g.stdout)
    const hunks =
      refLines.length > MAX_DIFF_LINES || other.length > MAX_DIFF_LINES ? undefined : unifiedHunks(refLines, other)
    if (hunks === undefined) {
      out.push(`@@ outputs differ too much to show (${refLines.length} and ${other.length} lines) @@`)
    } else out.push(...hunks)
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`
}
