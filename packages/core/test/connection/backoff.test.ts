import { describe, expect, it } from 'vitest'
import { backoffDelay, backoffWindow, verifyBackoff } from '../../src/connection/backoff.js'

const opts = { baseMs: 1000, capMs: 60_000 }

describe('backoff (full jitter)', () => {
  it.each([
    [0, 1000],
    [1, 2000],
    [2, 4000],
    [5, 32_000],
    [6, 60_000],
    [30, 60_000],
    [5000, 60_000],
  ])('the window for attempt %i is %i ms', (attempt, window) => {
    expect(backoffWindow(attempt, opts)).toBe(window)
  })

  it.each([
    [0, 0, 0],
    [0, 0.5, 500],
    [3, 0.25, 2000],
    [10, 0.999999, 59_999],
    [10, 0.5, 30_000],
  ])('attempt %i with random %f sleeps %i ms', (attempt, r, expected) => {
    expect(backoffDelay(attempt, opts, () => r)).toBe(expected)
  })

  it('never exceeds the cap and never goes negative', () => {
    for (let a = 0; a < 100; a++) {
      for (const r of [0, 0.1, 0.5, 0.9, 0.9999999]) {
        const d = backoffDelay(a, opts, () => r)
        expect(d).toBeGreaterThanOrEqual(0)
        expect(d).toBeLessThan(60_000)
      }
    }
  })

  it('rejects a cap below the base', () => {
    expect(() => verifyBackoff({ baseMs: 10, capMs: 5 })).toThrow(/capMs/)
    expect(() => verifyBackoff({ baseMs: -1 })).toThrow(/baseMs/)
    expect(verifyBackoff({}).capMs).toBe(60_000)
  })
})
