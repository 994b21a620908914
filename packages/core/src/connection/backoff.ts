/**
 * Reconnect backoff: exponential with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
 *   sleep = random(0, min(capMs, baseMs · 2^attempt))
 * A fleet-wide outage therefore spreads redials uniformly over the window instead of synchronising them.
 * Pure: the random source is injected, so it is tested as a table.
 */
export interface BackoffOptions {
  /** First window, ms. Default 1000. */
  baseMs: number
  /** Largest window, ms. Default 60000. */
  capMs: number
  /** Connected this long (ms) counts as stable: the attempt counter resets. Default 30000. */
  stableAfterMs: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1000, capMs: 60_000, stableAfterMs: 30_000 }

/** The window (upper bound) for the given attempt (0-based). */
export function backoffWindow(attempt: number, opts: Pick<BackoffOptions, 'baseMs' | 'capMs'>): number {
  if (attempt < 0 || !Number.isFinite(attempt)) return opts.baseMs
  // 2^attempt overflows to Infinity past ~1023; min() with the cap handles it.
  return Math.min(opts.capMs, opts.baseMs * 2 ** attempt)
}

/** Full-jitter delay for the given attempt. `random` returns a number in [0, 1). */
export function backoffDelay(
  attempt: number,
  opts: Pick<BackoffOptions, 'baseMs' | 'capMs'>,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * backoffWindow(attempt, opts))
}

export function verifyBackoff(opts: Partial<BackoffOptions> = {}): BackoffOptions {
  const o = { ...DEFAULT_BACKOFF, ...opts }
  for (const k of ['baseMs', 'capMs', 'stableAfterMs'] as const) {
    if (!Number.isFinite(o[k]) || o[k] < 0) throw new RangeError(`backoff.${k} must be a finite number >= 0 ms`)
  }
  if (o.capMs < o.baseMs) throw new RangeError('backoff.capMs must be >= backoff.baseMs')
  return o
}
