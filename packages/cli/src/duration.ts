/**
 * Units on the command line: durations (`500ms`, `5s`, `1.5s`, `2m`, `1h`, `1m30s`) and byte sizes
 * (`65536`, `64KiB`, `1MiB`, `10MB`).
 *
 * A duration must carry its unit: a bare `5` is rejected because `--timeout 5` is ambiguous
 * (seconds? milliseconds?) and a wrong guess turns into a 1000× surprise on a large fleet.
 * A byte size may be bare (bytes are the only sensible unit for a bare number).
 */
import { ConfigError } from '@kay/core'

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** The longest duration accepted, so that `setTimeout` never overflows (it fires at once past 2^31-1 ms). */
export const MAX_DURATION_MS = 2_147_483_647

const PART = /(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)/y

/**
 * Parse a duration to milliseconds (rounded to a whole ms).
 * Units: `ms`, `s`, `m`, `h`, `d`; parts may be combined largest first (`1h30m`, `1m30s`).
 * @param flag the option name, used in the error message (e.g. `--interval`).
 * @throws ConfigError (KAY_CONFIG) on a bare number, an unknown unit, a negative value or an overflow.
 */
export function parseDuration(text: string, flag = 'duration'): number {
  const s = text.trim()
  if (s === '') throw new ConfigError(`${flag}: empty duration (use e.g. 500ms, 5s, 2m, 1h)`)
  if (/^[+-]?\d+(\.\d+)?$/.test(s)) {
    throw new ConfigError(`${flag}: '${text}' needs a unit (ms, s, m, h, d), e.g. ${s}s`)
  }
  let total = 0
  let pos = 0
  let lastScale = Number.POSITIVE_INFINITY
  PART.lastIndex = 0
  while (pos < s.length) {
    PART.lastIndex = pos
    const m = PART.exec(s)
    if (m === null) throw new ConfigError(`${flag}: '${text}' is not a duration (use e.g. 500ms, 5s, 1.5s, 2m, 1h)`)
    const scale = DURATION_UNITS[m[2]!]!
    if (scale >= lastScale)
      throw new ConfigError(`${flag}: '${text}': give units largest first, each once (e.g. 1m30s)`)
    lastScale = scale
    total += Number(m[1]) * scale
    pos = PART.lastIndex
  }
  const ms = Math.round(total)
  if (!Number.isFinite(ms) || ms > MAX_DURATION_MS) {
    throw new ConfigError(`${flag}: '${text}' is too long (at most ${formatDuration(MAX_DURATION_MS)})`)
  }
  return ms
}

/** Format milliseconds compactly, the inverse of {@link parseDuration} for whole units: 1500 → `1.5s`, 90000 → `1m30s`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${trimZeros((ms / 1000).toFixed(3))}s`
  const parts: string[] = []
  let rest = Math.round(ms / 1000)
  for (const [unit, secs] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const n = Math.floor(rest / secs)
    if (n > 0) parts.push(`${n}${unit}`)
    rest -= n * secs
  }
  return parts.join('')
}

function trimZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s
}

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
}

/**
 * Parse a byte size: a bare integer (bytes), or a number with a unit — binary `KiB`/`MiB`/`GiB` (also `K`/`M`/`G`),
 * decimal `KB`/`MB`/`GB`, or `B`. Case-insensitive.
 * Fractions are allowed with a unit (`1.5MiB`) and rounded down to whole bytes.
 * @throws ConfigError (KAY_CONFIG) on anything else or a size above 2^53.
 */
export function parseBytes(text: string, flag = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text)
  const unit = m?.[2]?.toLowerCase() ?? ''
  const scale = unit === '' ? 1 : BYTE_UNITS[unit]
  if (m === null || scale === undefined) {
    throw new ConfigError(`${flag}: '${text}' is not a size (use bytes or e.g. 64KiB, 1MiB)`)
  }
  const n = Math.floor(Number(m[1]) * scale)
  if (!Number.isSafeInteger(n)) throw new ConfigError(`${flag}: '${text}' is too large`)
  return n
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0 || signal.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}
