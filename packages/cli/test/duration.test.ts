import { describe, expect, it } from 'vitest'
import { formatDuration, MAX_DURATION_MS, parseBytes, parseDuration } from '../src/duration.js'

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['5s', 5000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['1m30s', 90_000],
    ['1h30m', 5_400_000],
    ['0.5ms', 1],
    [' 10s ', 10_000],
    ['0s', 0],
  ])('reads %s as %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms)
  })

  it.each(['5', '1.5', '-5s', '5 s', 's', '', '5sec', '5S', '1s1m', '1s1s', '5x', 'abc'])(
    'rejects %j with a KAY_CONFIG error',
    (text) => {
      expect(() => parseDuration(text, '--interval')).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
    },
  )

  it('names the flag and suggests a unit when a bare number is given', () => {
    expect(() => parseDuration('5', '--timeout')).toThrow("--timeout: '5' needs a unit (ms, s, m, h, d), e.g. 5s")
  })

  it('rejects durations that would overflow setTimeout', () => {
    expect(parseDuration(`${MAX_DURATION_MS}ms`)).toBe(MAX_DURATION_MS)
    expect(() => parseDuration('25d', '--interval')).toThrow(/too long/)
  })

  it('formats durations back to the same text for whole units', () => {
    for (const text of ['500ms', '5s', '1.5s', '2m', '1h', '1m30s', '1d']) {
      expect(formatDuration(parseDuration(text))).toBe(text)
    }
  })
})

describe('parseBytes', () => {
  it.each([
    ['65536', 65_536],
    ['64KiB', 65_536],
    ['1MiB', 1_048_576],
    ['1mib', 1_048_576],
    ['1GiB', 1024 ** 3],
    ['10KB', 10_000],
    ['10MB', 10_000_000],
    ['512B', 512],
    ['1.5MiB', 1_572_864],
    ['64K', 65_536],
  ])('reads %s as %d bytes', (text, n) => {
    expect(parseBytes(text)).toBe(n)
  })

  it.each(['', 'MiB', '1 XB', '-1', '1e3', '1TiB-ish'])(
    'rejects %j with a KAY_CONFIG error naming the flag',
    (text) => {
      expect(() => parseBytes(text, '--max-output')).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
      expect(() => parseBytes(text, '--max-output')).toThrow(/--max-output/)
    },
  )
})
