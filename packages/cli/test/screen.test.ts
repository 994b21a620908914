import { describe, expect, it } from 'vitest'
import { type Key, parseKeys } from '../src/ui/keys.js'
import { initialScreen, reduce, resize, type ScreenState, selectedRow, setRows } from '../src/ui/screen.js'
import { SORT_CYCLE } from '../src/ui/table.js'
import { fleet, metrics, readyRow } from './support/fixtures.js'

const press = (state: ScreenState, input: string): ScreenState => parseKeys(input).reduce(reduce, state)
const UP = '\x1b[A'
const DOWN = '\x1b[B'
const PGDN = '\x1b[6~'
const PGUP = '\x1b[5~'
const HOME = '\x1b[H'
const END = '\x1b[F'

describe('screen reducer', () => {
  const rows = fleet(100)
  const start = initialScreen(rows, { pageSize: 10 })

  it('starts at the top of the fleet view sorted by host', () => {
    expect([start.selected, start.offset, start.sort, start.filter, start.filterDraft]).toEqual([
      0,
      0,
      'host',
      '',
      null,
    ])
    expect(start.view).toEqual({ kind: 'fleet' })
    expect(selectedRow(start)?.id).toBe('host00001')
  })

  it('moves the selection with arrows and scrolls to keep it visible', () => {
    let s = press(start, UP)
    expect(s.selected).toBe(0)
    s = press(s, DOWN.repeat(12))
    expect([s.selected, s.offset]).toEqual([12, 3])
    s = press(s, UP.repeat(5))
    expect([s.selected, s.offset]).toEqual([7, 3])
    s = press(s, 'kkkkkkkkk')
    expect([s.selected, s.offset]).toEqual([0, 0])
  })

  it('pages, and jumps to the ends with Home and End', () => {
    let s = press(start, PGDN)
    expect([s.selected, s.offset]).toEqual([10, 10])
    s = press(s, END)
    expect([s.selected, s.offset]).toEqual([99, 90])
    s = press(s, PGDN)
    expect([s.selected, s.offset]).toEqual([99, 90])
    s = press(s, PGUP)
    expect([s.selected, s.offset]).toEqual([89, 80])
    s = press(s, HOME)
    expect([s.selected, s.offset]).toEqual([0, 0])
  })

  it('cycles the sort column with s and keeps the selected host selected', () => {
    let s = press(start, DOWN.repeat(5))
    const host = selectedRow(s)!.id
    s = press(s, 's')
    expect(s.sort).toBe('state')
    s = press(s, 's')
    expect(s.sort).toBe('cpu')
    expect(selectedRow(s)!.id).toBe(host)
    expect(s.table.sort).toBe('cpu')
    for (let i = 0; i < SORT_CYCLE.length - 2; i++) s = press(s, 's')
    expect(s.sort).toBe('host')
  })

  it('reverses the sort with r and shows only hosts with problems with p, keeping the selection', () => {
    let s = press(start, 'r')
    expect(s.reverse).toBe(true)
    expect(s.table.rows[0]!.id).toBe(start.table.rows.at(-1)!.id)
    s = press(s, 'r')
    expect(s.table.rows.map((r) => r.id)).toEqual(start.table.rows.map((r) => r.id))
    s = press(s, 'p')
    expect(s.problemsOnly).toBe(true)
    expect(s.table.rows.length).toBeGreaterThan(0)
    expect(s.table.rows.every((r) => r.state !== 'ready' || r.lastError !== undefined)).toBe(true)
    expect(s.table.rows.length).toBe(start.table.counts.problems)
    s = press(s, 'p')
    expect(s.table.rows).toHaveLength(start.table.rows.length)
  })

  it('edits a filter with / and applies it with Enter', () => {
    let s = press(start, '/host0001')
    expect(s.filterDraft).toBe('host0001')
    expect(s.table.rows).toHaveLength(100) // not applied while typing
    s = press(s, 'x\x7f\r')
    expect(s.filterDraft).toBeNull()
    expect(s.filter).toBe('host0001')
    expect(s.table.rows.map((r) => r.id)).toEqual(Array.from({ length: 10 }, (_, i) => `host000${10 + i}`))
    expect(selectedRow(s)?.id).toBe('host00010')
  })

  it('types q and s into the filter instead of quitting or sorting', () => {
    const s = press(start, '/qs')
    expect([s.quit, s.sort, s.filterDraft]).toEqual([false, 'host', 'qs'])
  })

  it('cancels filter editing with Esc, keeping the previous filter', () => {
    let s = press(start, '/host0002\r')
    s = press(s, '/zzz\x1b')
    expect([s.filter, s.filterDraft]).toEqual(['host0002', null])
    expect(s.table.rows).toHaveLength(10)
  })

  it('opens the detail view with Enter and returns with Esc keeping selection, scroll, sort and filter', () => {
    let s = press(start, '/host000\r')
    s = press(s, `s${DOWN.repeat(15)}`)
    const before = s
    s = press(s, '\r')
    expect(s.view).toEqual({ kind: 'detail', host: selectedRow(before)!.id })
    s = press(s, `${DOWN}${PGDN}s`) // ignored in the detail view
    s = press(s, '\x1b')
    expect(s.view).toEqual({ kind: 'fleet' })
    expect([s.selected, s.offset, s.sort, s.filter]).toEqual([
      before.selected,
      before.offset,
      before.sort,
      before.filter,
    ])
    expect(s.table).toBe(before.table)
  })

  it('quits with q in the fleet and detail views, and with Ctrl-C even while editing', () => {
    expect(press(start, 'q').quit).toBe(true)
    expect(press(start, '\rq').quit).toBe(true)
    expect(press(start, '/ab\x03').quit).toBe(true)
    const quit = press(start, 'q')
    expect(press(quit, DOWN)).toBe(quit)
  })

  it('does nothing on Enter when the filter matches no rows', () => {
    const s = press(start, '/nothing-matches\r\r')
    expect(s.view).toEqual({ kind: 'fleet' })
    expect(s.table.rows).toHaveLength(0)
    expect(press(s, DOWN).selected).toBe(0)
  })

  it('keeps the selected host at the same screen position across data updates', () => {
    let s = press(start, DOWN.repeat(15))
    const pos = s.selected - s.offset
    const id = selectedRow(s)!.id
    // A new host sorts first: the selection follows its host.
    s = setRows(s, [readyRow('aaa', { metrics: metrics() }), ...rows])
    expect(selectedRow(s)!.id).toBe(id)
    expect(s.selected - s.offset).toBe(pos)
  })

  it('sorts once per data update, not per key press that only moves', () => {
    const updated = setRows(start, rows)
    expect(updated.table).not.toBe(start.table)
    const s = press(updated, DOWN.repeat(30) + PGDN + PGUP + HOME + END)
    expect(s.selected).toBe(99)
    // Same prepared table object: moving never re-filters or re-sorts.
    expect(s.table).toBe(updated.table)
  })

  it('keeps the selection visible after a resize', () => {
    let s = press(start, DOWN.repeat(9))
    s = resize(s, 4)
    expect([s.selected, s.offset, s.pageSize]).toEqual([9, 6, 4])
  })

  it('ignores keys it does not know', () => {
    const keys: Key[] = [{ name: 'tab' }, { name: 'left' }, { name: 'char', char: 'z' }]
    expect(keys.reduce(reduce, start)).toBe(start)
  })
})
