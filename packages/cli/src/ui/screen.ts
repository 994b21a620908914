/**
 * The interactive view as a pure state machine: `reduce(state, key)` returns the next state, nothing else happens.
 * The caller feeds it keys (from `keys.ts`), data updates ({@link setRows}) and terminal resizes ({@link resize}),
 * and renders the state with `table.ts` / `detail.ts`.
 *
 * Sorting and filtering happen only in {@link setRows} and when the sort or filter changes — never per frame.
 * The selection follows the selected host (by id) across data updates, sort and filter changes.
 */
import type { Key } from './keys.js'
import { type FleetRow, type PreparedTable, prepareTable, SORT_CYCLE, type SortColumn } from './table.js'

type View = { kind: 'fleet' } | { kind: 'detail'; host: string }

export interface ScreenState {
  /** The latest data, as given (unsorted). */
  readonly all: readonly FleetRow[]
  /** `all` filtered and sorted: what the table shows. */
  readonly table: PreparedTable
  /** Index into `table.rows`; 0 when there are no rows. */
  readonly selected: number
  /** Index of the first visible row. */
  readonly offset: number
  /** Rows visible at once (the table body height). */
  readonly pageSize: number
  readonly sort: SortColumn
  /** The sort order reversed (`r`). */
  readonly reverse: boolean
  /** Only hosts with a problem shown (`p`). */
  readonly problemsOnly: boolean
  /** The applied filter ('' = none). */
  readonly filter: string
  /** The filter being typed, or null when not editing. */
  readonly filterDraft: string | null
  readonly view: View
  /** Set by `q` / Ctrl-C: the caller should restore the terminal and exit. */
  readonly quit: boolean
}

/** Longest filter accepted; keys past it are ignored (a paste cannot grow state without bound). */
const FILTER_MAX_LENGTH = 200

export function initialScreen(
  rows: readonly FleetRow[],
  opts: { pageSize: number; sort?: SortColumn; filter?: string },
): ScreenState {
  const sort = opts.sort ?? 'host'
  const filter = opts.filter ?? ''
  return {
    all: rows,
    table: prepareTable(rows, { sort, filter }),
    selected: 0,
    offset: 0,
    pageSize: Math.max(1, opts.pageSize),
    sort,
    reverse: false,
    problemsOnly: false,
    filter,
    filterDraft: null,
    view: { kind: 'fleet' },
    quit: false,
  }
}

/** The selected row, if any. */
export function selectedRow(state: ScreenState): FleetRow | undefined {
  return state.table.rows[state.selected]
}

/** Clamp selection and scroll so the selected row is visible and the viewport is as full as possible. */
function settle(state: ScreenState, selected: number, offset = state.offset): ScreenState {
  const n = state.table.rows.length
  const page = state.pageSize
  const sel = n === 0 ? 0 : Math.max(0, Math.min(n - 1, selected))
  let off = Math.max(0, Math.min(offset, Math.max(0, n - page)))
  if (sel < off) off = sel
  else if (sel >= off + page) off = sel - page + 1
  return sel === state.selected && off === state.offset ? state : { ...state, selected: sel, offset: off }
}

/** Re-derive the table (filter + sort), keeping the selected host selected if it is still shown. */
function rederive(state: ScreenState, patch: Partial<ScreenState>): ScreenState {
  const keep = selectedRow(state)?.id
  const next: ScreenState = { ...state, ...patch }
  const table = prepareTable(next.all, {
    sort: next.sort,
    reverse: next.reverse,
    filter: next.filter,
    problemsOnly: next.problemsOnly,
  })
  let selected = 0
  if (keep !== undefined) {
    const idx = table.rows.findIndex((r) => r.id === keep)
    if (idx >= 0) selected = idx
  }
  // Keep the selected row at the same screen position when possible, so updates do not make the view jump.
  const screenPos = state.selected - state.offset
  const withTable: ScreenState = { ...next, table }
  return settle(withTable, selected, selected - screenPos)
}

/** A data update: new rows (e.g. once per tick). Sorts and filters once. */
export function setRows(state: ScreenState, rows: readonly FleetRow[]): ScreenState {
  return rederive(state, { all: rows })
}

/** The terminal was resized: `pageSize` rows now fit. */
export function resize(state: ScreenState, pageSize: number): ScreenState {
  const next = { ...state, pageSize: Math.max(1, pageSize) }
  return settle(next, next.selected)
}

/** The next state after one key. */
export function reduce(state: ScreenState, key: Key): ScreenState {
  if (state.quit) return state
  if (key.name === 'ctrl-c') return { ...state, quit: true }
  if (state.filterDraft !== null) return reduceFilterEditing(state, state.filterDraft, key)
  if (state.view.kind === 'detail') {
    if (key.name === 'escape') return { ...state, view: { kind: 'fleet' } }
    if (key.name === 'char' && key.char === 'q') return { ...state, quit: true }
    return state
  }
  const page = state.pageSize
  switch (key.name) {
    case 'up':
      return settle(state, state.selected - 1)
    case 'down':
      return settle(state, state.selected + 1)
    case 'pageup':
      return settle(state, state.selected - page, state.offset - page)
    case 'pagedown':
      return settle(state, state.selected + page, state.offset + page)
    case 'home':
      return settle(state, 0, 0)
    case 'end':
      return settle(state, state.table.rows.length - 1, state.table.rows.length)
    case 'enter': {
      const row = selectedRow(state)
      return row === undefined ? state : { ...state, view: { kind: 'detail', host: row.id } }
    }
    case 'char':
      switch (key.char) {
        case 'q':
          return { ...state, quit: true }
        case 's': {
          const i = SORT_CYCLE.indexOf(state.sort)
          return rederive(state, { sort: SORT_CYCLE[(i + 1) % SORT_CYCLE.length]! })
        }
        case 'r':
          return rederive(state, { reverse: !state.reverse })
        case 'p':
          return rederive(state, { problemsOnly: !state.problemsOnly })
        case '/':
          return { ...state, filterDraft: state.filter }
        case 'k':
          return settle(state, state.selected - 1)
        case 'j':
          return settle(state, state.selected + 1)
        default:
          return state
      }
    default:
      return state
  }
}

function reduceFilterEditing(state: ScreenState, draft: string, key: Key): ScreenState {
  switch (key.name) {
    case 'char':
      if (key.char === undefined || draft.length + key.char.length > FILTER_MAX_LENGTH) return state
      return { ...state, filterDraft: draft + key.char }
    case 'backspace':
      return { ...state, filterDraft: Array.from(draft).slice(0, -1).join('') }
    case 'enter':
      return rederive(state, { filter: draft.trim(), filterDraft: null })
    case 'escape':
      return { ...state, filterDraft: null }
    default:
      return state
  }
}
