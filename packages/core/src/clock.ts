/**
 * Time, injected. Everything in core that waits (backoff, keepalive, deadlines) takes a Clock so
 * tests can move time without sleeping (see test/support/manual-clock.ts).
 */
export type TimerHandle = { readonly __timer: unique symbol } | ReturnType<typeof setTimeout>

export interface Clock {
  /** Milliseconds, monotonic enough for deadlines (Date.now() in the system clock). */
  now(): number
  setTimeout(fn: () => void, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle | undefined): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => {
    if (h !== undefined) clearTimeout(h as ReturnType<typeof setTimeout>)
  },
}
