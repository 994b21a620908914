import { describe, expect, it } from 'vitest'
import { type HostReport, tickLines } from '../src/ui/ndjson.js'
import { metrics } from './support/fixtures.js'

describe('tickLines', () => {
  it('writes one object per host and then a summary with counts by error code', () => {
    const reports: HostReport[] = [
      { host: 'a', ok: true, state: 'ready', metrics: metrics(), rttMs: 1.5, collectMode: 'stream-bash' },
      { host: 'b', ok: false, state: 'backoff', error: { code: 'KAY_CONNECT_FAILED', message: 'refused' } },
      { host: 'c', ok: false, state: 'backoff', error: { code: 'KAY_CONNECT_FAILED', message: 'refused' } },
      { host: 'd', ok: false, state: 'quarantined', error: { code: 'KAY_HOST_KEY_MISMATCH', message: 'changed' } },
    ]
    const lines = tickLines(reports, 4, 812.4)
    expect(lines).toHaveLength(5)
    for (const l of lines) expect(l).not.toContain('\n')
    const objs = lines.map((l) => JSON.parse(l))
    expect(objs[0]).toEqual({
      host: 'a',
      ok: true,
      state: 'ready',
      metrics: JSON.parse(JSON.stringify(metrics())),
      rttMs: 1.5,
      collectMode: 'stream-bash',
    })
    expect(objs[1]).toEqual({
      host: 'b',
      ok: false,
      state: 'backoff',
      error: { code: 'KAY_CONNECT_FAILED', message: 'refused' },
    })
    expect(objs[4]).toEqual({
      summary: true,
      hosts: 4,
      ok: 1,
      failed: 3,
      byCode: { KAY_CONNECT_FAILED: 2, KAY_HOST_KEY_MISMATCH: 1 },
      tick: 4,
      durationMs: 812,
    })
  })

  it("carries the fleet's progress in the summary when given (kay fleet)", () => {
    const progress = {
      hosts: 1,
      connecting: 0,
      starting: 0,
      probing: 1,
      streaming: 0,
      exec: 0,
      backoff: 0,
      failed: 0,
      settled: false,
    }
    const reports: HostReport[] = [
      { host: 'a', ok: false, state: 'ready', error: { code: 'KAY_NOT_READY', message: 'a: not ready (probing)' } },
    ]
    expect(JSON.parse(tickLines(reports, 1, 5, progress).at(-1)!)).toMatchObject({ failed: 1, progress })
  })

  it('writes only a summary for an empty fleet', () => {
    expect(tickLines([], 0, 0).map((l) => JSON.parse(l))).toEqual([
      { summary: true, hosts: 0, ok: 0, failed: 0, byCode: {}, tick: 0, durationMs: 0 },
    ])
  })
})
