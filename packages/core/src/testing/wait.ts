/**
 * The one way tests wait for a condition: re-check a counter or state until it holds, bounded by a deadline that
 * only fails the test (it is never what the test measures). Never a sleep used as synchronisation.
 */
import type { EventEmitter } from 'node:events'

export interface UntilOptions {
  /** Fail after this long, ms. Default 10000. */
  timeoutMs?: number
  /** Re-check every this many ms. Default 10. */
  everyMs?: number
  /** Also re-check at once whenever this emitter emits this event. */
  wake?: { emitter: EventEmitter; event: string }
}

/**
 * Resolves with the first value of `check` that is neither `false` nor `undefined` (`true` for a predicate), or
 * rejects naming `what` (and the last error `check` threw) past the deadline.
 */
export async function until<T>(
  what: string,
  check: () => T | false | undefined | Promise<T | false | undefined>,
  opts: UntilOptions | number = {},
): Promise<T> {
  const o: UntilOptions = typeof opts === 'number' ? { timeoutMs: opts } : opts
  const timeoutMs = o.timeoutMs ?? 10_000
  const everyMs = o.everyMs ?? 10
  const end = Date.now() + timeoutMs
  let last: unknown
  let wake: (() => void) | undefined
  const onEvent = () => wake?.()
  o.wake?.emitter.on(o.wake.event, onEvent)
  try {
    for (;;) {
      try {
        const v = await check()
        if (v !== false && v !== undefined) return v
      } catch (err) {
        last = err
      }
      if (Date.now() > end) {
        const why = last === undefined ? '' : `: ${last instanceof Error ? last.message : String(last)}`
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`)
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, everyMs)
        function done() {
          clearTimeout(t)
          wake = undefined
          resolve()
        }
        wake = done
      })
    }
  } finally {
    o.wake?.emitter.off(o.wake.event, onEvent)
  }
}
