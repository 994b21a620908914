import { readFileSync } from 'node:fs'

/**
 * The open-file limit. Node raises its soft RLIMIT_NOFILE to the hard limit at start-up, so there is nothing left
 * to raise from JavaScript; this reports what we have so the CLI can say clearly when a fleet needs more.
 */
export function fileLimit(): { limit: number } {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
    const soft = line?.split(/\s{2,}/)[1]
    const n = soft === undefined || soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft)
    return { limit: Number.isFinite(n) || n === Number.POSITIVE_INFINITY ? n : Number.POSITIVE_INFINITY }
  } catch {
    return { limit: Number.POSITIVE_INFINITY }
  }
}
