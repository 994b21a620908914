import { COLLECT_MODES, errorFromJSON, type HostStatus } from '@kay/core'
import { describe, expect, it, vi } from 'vitest'
import { formatUptime, humanBytes, stripAnsi } from '../src/ui/format.js'
import { absorbTick, rowsOf } from '../src/ui/rows.js'
import {
  bodyHeight,
  COLUMN_DROP_ORDER,
  type FleetRow,
  type FleetSummary,
  formatRow,
  layoutColumns,
  prepareTable,
  type RenderOptions,
  reasonText,
  renderFleet,
  stateText,
} from '../src/ui/table.js'
import { fleet, metrics, readyRow } from './support/fixtures.js'

const summary: FleetSummary = { tick: 7, handshakes: 120, dialSlotsInUse: 3, dialSlotsCap: 16 }
const opts = (over: Partial<RenderOptions> = {}): RenderOptions => ({
  width: 160,
  height: 20,
  offset: 0,
  color: false,
  summary,
  formatTime: () => '12:34:56',
  ...over,
})

const visibleWidth = (line: string): number => Array.from(stripAnsi(line)).length

describe('formatters', () => {
  it('formats sizes, uptimes and state labels compactly', () => {
    expect([
      humanBytes(0),
      humanBytes(999),
      humanBytes(1536),
      humanBytes(1023 * 1024),
      humanBytes(16 * 1024 ** 3),
    ]).toEqual(['0B', '999B', '1.5K', '1.0M', '16G'])
    expect([formatUptime(45), formatUptime(725), formatUptime(3 * 86_400 + 4 * 3600 + 59)]).toEqual([
      '45s',
      '12m5s',
      '3d4h',
    ])
    const t = () => '10:00:00'
    expect(stateText({ id: 'a', state: 'dialing' }, t)).toBe('connecting')
    expect(stateText({ id: 'a', state: 'ready' }, t)).toBe('ready')
    // Connected, its collection stream still being opened: not "ready" with an empty row.
    expect(stateText({ id: 'a', state: 'ready', collectPhase: 'starting' }, t)).toBe('starting')
    expect(stateText({ id: 'a', state: 'ready', collectPhase: 'probing' }, t)).toBe('probing')
    expect(stateText({ id: 'a', state: 'ready', collectPhase: 'streaming' }, t)).toBe('ready')
    expect(stateText({ id: 'a', state: 'backoff', nextRetryAt: 1 }, t)).toBe('backoff 10:00:00')
    expect(
      stateText({ id: 'a', state: 'quarantined', lastError: { code: 'KAY_HOST_KEY_MISMATCH', message: 'x' } }, t),
    ).toBe('key mismatch')
    expect(stateText({ id: 'a', state: 'backoff', lastError: { code: 'KAY_AUTH_FAILED', message: 'x' } }, t)).toBe(
      'auth failed',
    )
  })
})

describe('renderFleet', () => {
  const rows = fleet(300)
  const table = prepareTable(rows)

  it('shows every column with human units on a wide terminal, and REASON only when some host has a problem', () => {
    const lines = renderFleet(prepareTable([readyRow('web01')]), opts({ width: 200 }))
    expect(lines[1]).toMatch(/^HOST +STATE +CPU% +MEM used\/total +LOAD 1\/5\/15 +UPTIME +NET rx\/tx +FS% +RTT MODE *$/)
    const down = { id: 'web02', state: 'backoff' as const, lastError: { code: 'KAY_TIMEOUT', message: 'web02: x' } }
    expect(renderFleet(prepareTable([readyRow('web01'), down]), opts({ width: 200 }))[1]).toMatch(/ MODE +REASON *$/)
    expect(lines[2]).toMatch(
      /^web01 +ready +12\.5 +6\.0G\/16G +0\.42\/0\.30\/0\.25 +3d4h +146K\/20K +41\.2 +0\.8ms stream-bash/,
    )
  })

  it('has a summary line with counts, tick, handshakes and dial slots', () => {
    const lines = renderFleet(table, opts())
    expect(lines[0]).toBe(
      `${table.counts.ready} ready · ${table.counts.connecting} connecting · ${table.counts.down} down · tick 7 · handshakes 120 · dial slots 3/16`,
    )
    expect(table.counts.ready + table.counts.connecting + table.counts.down).toBe(300)
    expect(table.counts.down).toBe(6)
  })

  it('says on the summary line how the ready hosts collect while a fleet starts', () => {
    const starting = renderFleet(
      table,
      opts({ summary: { ...summary, collect: { streaming: 200, exec: 3, starting: 91 } } }),
    )
    expect(starting[0]).toMatch(
      new RegExp(
        `^${table.counts.ready} ready \\(200 streaming, 3 exec, 91 starting\\) · ${table.counts.connecting} connecting`,
      ),
    )
    const settled = renderFleet(
      table,
      opts({ summary: { ...summary, collect: { streaming: 294, exec: 0, starting: 0 } } }),
    )
    expect(settled[0]).toMatch(new RegExp(`^${table.counts.ready} ready \\(294 streaming\\) · `))
  })

  it('shows a connected X / N progress bar during cold start', () => {
    const half = [
      ...Array.from({ length: 5 }, (_, i) => readyRow(`r${i}`)),
      ...Array.from({ length: 5 }, (_, i) => ({ id: `d${i}`, state: 'idle' as const })),
    ]
    const lines = renderFleet(prepareTable(half), opts({ width: 80, summary: { ...summary, coldStart: true } }))
    expect(lines[1]).toMatch(/^connected 5 \/ 10 \[#+\.+\]$/)
    const bar = lines[1]!.slice(lines[1]!.indexOf('['))
    expect(bar.split('#').length - 1).toBe(bar.split('.').length - 1)
  })

  it('shows backoff retry time and the reason: the code and the cause, without the host name', () => {
    const lines = renderFleet(table, opts({ width: 200 }))
    const backoff = lines.find((l) => l.startsWith('host00008'))
    expect(backoff).toMatch(/backoff 12:34:56 .* CONNECT_FAILED ECONNREFUSED 127\.0\.0\.1:22 *$/)
    const row: FleetRow = {
      id: 'web7',
      state: 'dialing',
      lastError: { code: 'KAY_CONNECT_FAILED', message: 'web7: connect failed: connect ECONNREFUSED 10.0.0.7:22' },
    }
    expect(reasonText(row)).toBe('CONNECT_FAILED ECONNREFUSED 10.0.0.7:22')
    const timeout = { ...row, lastError: { code: 'KAY_HANDSHAKE_TIMEOUT', message: 'web7: handshake not done in 3 s' } }
    expect(reasonText(timeout)).toBe('HANDSHAKE_TIMEOUT handshake not done in 3 s')
    const reset = {
      ...row,
      lastError: { code: 'KAY_CONNECT_FAILED', message: 'web7: handshake failed: read ECONNRESET' },
    }
    expect(reasonText(reset)).toBe('CONNECT_FAILED read ECONNRESET')
    expect(reasonText(readyRow('ok'))).toBe('')
  })

  it('keeps the reason readable at 80 columns: HOST STATE CPU MEM% LOAD REASON, code and cause', () => {
    const rows: FleetRow[] = [
      readyRow('sim0001'),
      {
        id: 'sim0002',
        state: 'backoff',
        nextRetryAt: 1,
        lastError: {
          code: 'KAY_CONNECT_FAILED',
          message: 'sim0002: connect failed: connect ECONNREFUSED 127.0.0.1:2222',
        },
      },
    ]
    const lines = renderFleet(prepareTable(rows), opts({ width: 80 }))
    expect(lines[1]).toMatch(/^HOST +STATE +CPU% +MEM% +LOAD +REASON *$/)
    expect(lines[3]).toMatch(/^sim0002 +backoff 12:34:56 +- +- +- +CONNECT_FAILED ECONNREFUSED 127\.0\.0\./)
    expect(lines[2]).toMatch(/^sim0001 +ready +12\.5 +37\.5 +0\.42 *$/)
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(80)
  })

  it('puts a diagnostic on its own status line above the footer, never among the rows', () => {
    const lines = renderFleet(table, opts({ height: 12, status: 'kay: pinned host key of host00001 (SHA256:x)' }))
    expect(lines).toHaveLength(12)
    expect(lines.at(-2)).toBe('kay: pinned host key of host00001 (SHA256:x)')
    expect(lines.slice(2, -2).every((l) => /^host\d{5} /.test(l))).toBe(true)
  })

  it('never renders a line wider than the terminal, at any width from 40 to 200', () => {
    const mixed: FleetRow[] = [
      ...rows.slice(0, 30),
      readyRow('a-very-long-host-name-that-goes-on-and-on.example.internal.corp'),
      { id: 'k', state: 'quarantined', lastError: { code: 'KAY_HOST_KEY_MISMATCH', message: 'x'.repeat(300) } },
    ]
    const t = prepareTable(mixed)
    for (let width = 40; width <= 200; width++) {
      for (const color of [false, true]) {
        const lines = renderFleet(
          t,
          opts({ width, height: 40, selected: 3, color, summary: { ...summary, coldStart: true } }),
        )
        for (const line of lines) expect(visibleWidth(line), `width ${width}: ${line}`).toBeLessThanOrEqual(width)
        expect(lines.length).toBeLessThanOrEqual(40)
      }
    }
  })

  it('drops low-priority columns first as the terminal narrows, and keeps REASON while there are problems', () => {
    for (const reason of [true, false]) {
      let previous = layoutColumns(300, 10, { reason }).map((c) => c.key)
      expect(previous).toHaveLength(reason ? 11 : 10)
      const dropped: string[] = []
      for (let width = 300; width >= 20; width--) {
        const keys = layoutColumns(width, 10, { reason }).map((c) => c.key)
        for (const k of previous) if (!keys.includes(k)) dropped.push(k)
        previous = keys
        expect(keys.slice(0, 2)).toEqual(['host', 'state'])
        expect(keys.includes('reason')).toBe(reason)
      }
      expect(dropped).toEqual([...COLUMN_DROP_ORDER])
    }
    // MEM and LOAD take their compact forms before they go.
    const at80 = layoutColumns(80, 7, { reason: true })
    expect(at80.map((c) => c.title)).toEqual(['HOST', 'STATE', 'CPU%', 'MEM%', 'LOAD', 'REASON'])
    expect(at80.find((c) => c.key === 'reason')!.width).toBeGreaterThanOrEqual(36)
  })

  it('gives MODE room for every collect mode', () => {
    const mode = layoutColumns(300, 10).find((c) => c.key === 'mode')!
    for (const m of COLLECT_MODES) {
      expect(m.length, m).toBeLessThanOrEqual(mode.width)
    }
  })

  it('keeps HOST, STATE and a shrunk REASON at 40 columns, and every metric but MODE and RTT at 120', () => {
    expect(layoutColumns(40, 10).map((c) => c.key)).toEqual(['host', 'state', 'reason'])
    expect(layoutColumns(40, 10)[1]!.width).toBe(12)
    expect(layoutColumns(40, 10, { reason: false }).map((c) => c.title)).toEqual(['HOST', 'STATE', 'CPU%', 'MEM%'])
    const at120 = layoutColumns(120, 10).map((c) => c.key)
    expect(at120).toEqual(['host', 'state', 'cpu', 'mem', 'load', 'uptime', 'net', 'fs', 'reason'])
  })

  it('writes no escape codes at all when colour is off, and highlights only the selected row when on', () => {
    const plain = renderFleet(table, opts({ selected: 2 }))
    expect(plain.join('\n')).not.toContain('\x1b')
    const coloured = renderFleet(table, opts({ selected: 2, color: true }))
    const inverse = coloured.filter((l) => l.includes('\x1b[7m'))
    expect(inverse).toHaveLength(1)
    expect(stripAnsi(inverse[0]!)).toMatch(/^host00003 /)
  })

  it('renders only the viewport: a 10,000-row table formats exactly the visible rows', () => {
    const big = prepareTable(fleet(10_000))
    const spy = vi.fn(formatRow)
    const lines = renderFleet(big, opts({ height: 30, offset: 5000, formatRow: spy }))
    const body = bodyHeight(30, summary)
    expect(spy).toHaveBeenCalledTimes(body)
    expect(spy.mock.calls[0]![0].id).toBe(big.rows[5000]!.id)
    expect(lines).toHaveLength(30)
    expect(lines.at(-1)).toContain(`rows 5001-${5000 + body} of 10000`)
  })

  it('clamps the offset so the last page is full', () => {
    const spy = vi.fn(formatRow)
    const lines = renderFleet(table, opts({ height: 13, offset: 10_000, formatRow: spy }))
    expect(spy).toHaveBeenCalledTimes(10)
    expect(stripAnsi(lines[lines.length - 2]!)).toMatch(/^host00300 /)
  })

  it('fits a tiny terminal without throwing', () => {
    expect(renderFleet(table, opts({ width: 10, height: 2 }))).toHaveLength(2)
    expect(renderFleet(table, opts({ width: 40, height: 0 }))).toEqual([])
  })
})

describe('prepareTable', () => {
  const rows: FleetRow[] = [
    readyRow('web10', { metrics: metrics({ cpuPct: 10 }) }),
    readyRow('web2', { metrics: metrics({ cpuPct: 90 }) }),
    { id: 'web1', state: 'backoff', lastError: { code: 'KAY_CONNECT_FAILED', message: 'refused' } },
    readyRow('db1', { metrics: metrics({ cpuPct: 50 }) }),
  ]

  it('sorts hosts in natural order', () => {
    expect(prepareTable(rows).rows.map((r) => r.id)).toEqual(['db1', 'web1', 'web2', 'web10'])
  })

  it('sorts metrics largest first with hosts lacking metrics last', () => {
    expect(prepareTable(rows, { sort: 'cpu' }).rows.map((r) => r.id)).toEqual(['web2', 'db1', 'web10', 'web1'])
  })

  it('sorts problems first by state, hosts with the same reason together, and reverses any sort', () => {
    expect(prepareTable(rows, { sort: 'state' }).rows[0]!.id).toBe('web1')
    const mixed: FleetRow[] = [
      { id: 'a', state: 'backoff', lastError: { code: 'KAY_TIMEOUT', message: 'x' } },
      { id: 'b', state: 'backoff', lastError: { code: 'KAY_AUTH_FAILED', message: 'x' } },
      { id: 'c', state: 'backoff', lastError: { code: 'KAY_TIMEOUT', message: 'x' } },
      readyRow('d'),
    ]
    expect(prepareTable(mixed, { sort: 'state' }).rows.map((r) => r.id)).toEqual(['b', 'a', 'c', 'd'])
    expect(prepareTable(mixed, { sort: 'state', reverse: true }).rows.map((r) => r.id)).toEqual(['d', 'c', 'a', 'b'])
    expect(prepareTable(rows, { sort: 'cpu', reverse: true }).rows.map((r) => r.id)).toEqual([
      'web1',
      'web10',
      'db1',
      'web2',
    ])
  })

  it('shows only hosts with problems on request (down, or a failed last tick), still counting the fleet', () => {
    const withTickError = [...rows, readyRow('slow1', { lastError: { code: 'KAY_TIMEOUT', message: 'slow1: late' } })]
    const t = prepareTable(withTickError, { problemsOnly: true })
    expect(t.rows.map((r) => r.id)).toEqual(['slow1', 'web1'])
    expect([t.counts.total, t.counts.problems]).toEqual([5, 2])
  })

  it('filters by host, state label or error code, but counts the whole fleet', () => {
    expect(prepareTable(rows, { filter: 'WEB' }).rows).toHaveLength(3)
    expect(prepareTable(rows, { filter: 'backoff' }).rows.map((r) => r.id)).toEqual(['web1'])
    expect(prepareTable(rows, { filter: 'connect_failed' }).rows.map((r) => r.id)).toEqual(['web1'])
    expect(prepareTable(rows, { filter: 'zzz' }).counts.total).toBe(4)
  })

  it('does not modify the input array', () => {
    const copy = rows.slice()
    prepareTable(rows, { sort: 'cpu' })
    expect(rows).toEqual(copy)
  })

  it('sizes the HOST column from the longest id, clamped', () => {
    expect(prepareTable([readyRow('a')]).hostWidth).toBe(4)
    expect(prepareTable([readyRow('x'.repeat(100))]).hostWidth).toBe(40)
  })
})

describe('rows: the last error of a host stays until it recovers', () => {
  it('shows a host back to connecting with the error that took it down, and forgets it after a good tick', () => {
    const metricsMap = new Map()
    const errors = new Map<string, FleetRow['lastError']>()
    const tick = (status: HostStatus, error?: { code: string; message: string }) =>
      absorbTick(
        {
          tick: 1,
          startedAt: 0,
          durationMs: 1,
          node: [],
          hosts: [
            error
              ? { host: status.id, status, error: errorFromJSON({ code: error.code as never, message: error.message }) }
              : { host: status.id, status, metrics: metrics() },
          ],
        },
        metricsMap,
        errors,
      )
    const ready: HostStatus = { id: 'h1', state: 'ready', attempts: 0, handshakes: 1 }
    tick(ready, { code: 'KAY_KEEPALIVE_TIMEOUT', message: 'h1: keepalive probe not answered' })
    // The connection went and the host is dialing again; its status carries no error of its own.
    const dialing: HostStatus = { id: 'h1', state: 'dialing', attempts: 1, handshakes: 1 }
    const [row] = rowsOf([dialing], metricsMap, errors)
    expect(row!.state).toBe('dialing')
    expect(reasonText(row!)).toBe('KEEPALIVE_TIMEOUT keepalive probe not answered')
    tick(ready)
    expect(rowsOf([ready], metricsMap, errors)[0]!.lastError).toBeUndefined()
  })
})
