/**
 * The interactive fleet view: a render loop over the pure screen model (ui/screen.ts). Data comes from one
 * collect per tick; the drill-in view refreshes every second over the host's pooled connection.
 */
import type { HostDetail, HostMetrics } from '@kay/core'
import type { Supervisor } from '@kay/workers'
import { sleep } from '../duration.js'
import { EXIT, type ExitCode } from '../help.js'
import { renderDetail } from './detail.js'
import { parseKeys } from './keys.js'
import { absorbTick, rowsOf } from './rows.js'
import { initialScreen, reduce, resize, type ScreenState, selectedRow, setRows } from './screen.js'
import { bodyHeight, collectSummary, type FleetRow, type FleetSummary, renderFleet } from './table.js'

export interface TuiOptions {
  intervalMs: number
  ticks?: number | undefined
  signal: AbortSignal
  out: NodeJS.WritableStream & { columns?: number; rows?: number }
  /** Open straight into this host's detail view (`kay top HOST`). */
  detailHost?: string
  /**
   * Diagnostics (pins written, warnings) to show on the status line while the table owns the screen; a summary goes
   * to `err` when it closes. Without it they go wherever their source writes (over the table).
   */
  notices?: { capture(sink: (line: string) => void): () => void }
  err?: NodeJS.WritableStream
}

/**
 * Diagnostics while the table runs: the latest one for the status line, pins counted rather than listed (a cold
 * start pins a key per host), the rest kept (bounded) for the summary printed after the table closes.
 */
export class StatusLog {
  static readonly KEEP = 20
  #pins = 0
  #latest = ''
  #lastPin = ''
  readonly #others: string[] = []
  #dropped = 0

  add(line: string): void {
    if (line.startsWith('pinned host key of ')) {
      this.#pins++
      this.#lastPin = line
      this.#latest = ''
      return
    }
    this.#latest = line
    this.#others.push(line)
    if (this.#others.length > StatusLog.KEEP) {
      this.#others.shift()
      this.#dropped++
    }
  }

  /** The status line: the latest diagnostic, else the pin count; '' when there is nothing to say. */
  text(): string {
    if (this.#latest !== '') return `kay: ${this.#latest}`
    if (this.#pins === 0) return ''
    return this.#pins === 1
      ? `kay: ${this.#lastPin}`
      : `kay: pinned the host keys of ${this.#pins} hosts (kay trust list)`
  }

  /** What to print after the table closed, one line each. */
  summary(): string[] {
    const out: string[] = []
    if (this.#pins === 1) out.push(`kay: ${this.#lastPin}`)
    else if (this.#pins > 1) out.push(`kay: pinned the host keys of ${this.#pins} hosts (kay trust list shows them)`)
    if (this.#dropped > 0) out.push(`kay: … ${this.#dropped} earlier messages not kept`)
    for (const l of this.#others) out.push(`kay: ${l}`)
    return out
  }
}

const DETAIL_REFRESH_MS = 1000
const HOST_REFRESH_MS = 250

export async function runTui(sup: Supervisor, opts: TuiOptions): Promise<ExitCode> {
  const out = opts.out
  const stdin = process.stdin
  const metrics = new Map<string, HostMetrics>()
  const errors = new Map<string, FleetRow['lastError']>()
  let tick = 0
  let everyoneReadyOnce = false
  const size = () => ({ width: out.columns ?? 120, height: out.rows ?? 40 })
  const summary = (): FleetSummary => {
    const st = sup.stats()
    return {
      tick,
      handshakes: st.handshakes,
      dialSlotsInUse: st.dialsInFlight,
      dialSlotsCap: st.dialCap,
      coldStart: !everyoneReadyOnce,
      collect: collectSummary(sup.progress()),
    }
  }
  const log = new StatusLog()
  const pageSize = () => bodyHeight(size().height, summary(), log.text() !== '')
  let state: ScreenState = initialScreen(rowsOf(sup.statuses(), metrics, errors), { pageSize: pageSize() })
  let detail: { host: string; data?: HostDetail; error?: string } | undefined
  if (opts.detailHost !== undefined) {
    state = { ...state, view: { kind: 'detail', host: opts.detailHost } }
    detail = { host: opts.detailHost }
  }
  let quit = false
  // Raw mode turns Ctrl-C into a key instead of SIGINT; it still means "interrupted" (exit 130), unlike q.
  let interrupted = false
  let wake: (() => void) | undefined

  const draw = () => {
    const { width, height } = size()
    let lines: string[]
    if (state.view.kind === 'detail') {
      const host = state.view.host
      const status = state.all.find((r) => r.id === host)
      lines = renderDetail(host, detail?.host === host ? detail.data : undefined, {
        width,
        height,
        color: true,
        ...(status ? { status } : {}),
      })
      if (detail?.error) lines.push(detail.error.slice(0, width))
    } else {
      lines = renderFleet(state.table, {
        width,
        height,
        offset: state.offset,
        selected: state.selected,
        color: true,
        summary: summary(),
        filterDraft: state.filterDraft,
        status: log.text(),
      })
    }
    out.write(`\x1b[H\x1b[2J${lines.join('\r\n')}`)
  }

  const refreshRows = () => {
    state = setRows(state, rowsOf(sup.statuses(), metrics, errors))
  }

  const onKeys = (chunk: Buffer) => {
    for (const key of parseKeys(chunk)) {
      const before = state.view
      state = reduce(state, key)
      if (state.quit) {
        if (key.name === 'ctrl-c') interrupted = true
        quit = true
        wake?.()
        return
      }
      if (state.view.kind === 'detail' && before.kind !== 'detail') {
        detail = { host: state.view.host }
        wake?.()
      }
    }
    draw()
  }
  const onResize = () => {
    state = resize(state, pageSize())
    draw()
  }
  const onNotice = (line: string) => {
    const had = log.text() !== ''
    log.add(line)
    if (!had) state = resize(state, pageSize())
    if (state.view.kind === 'fleet') draw()
  }
  // State changes arrive per shard per 50 ms window; re-sorting 10,000 rows for each would keep the main thread
  // busy during a cold start. Fold them into at most one refresh per HOST_REFRESH_MS.
  let hostTimer: ReturnType<typeof setTimeout> | undefined
  const onHost = () => {
    if (hostTimer) return
    hostTimer = setTimeout(() => {
      hostTimer = undefined
      refreshRows()
      if (state.view.kind === 'fleet') draw()
    }, HOST_REFRESH_MS)
  }

  const release = opts.notices?.capture(onNotice)
  out.write('\x1b[?1049h\x1b[?25l') // alternate screen, hide cursor
  stdin.setRawMode?.(true)
  stdin.resume()
  stdin.on('data', onKeys)
  out.on('resize', onResize)
  sup.on('host', onHost)
  try {
    draw()
    let nextTick = Date.now()
    while (!quit && !opts.signal.aborted && (opts.ticks === undefined || tick < opts.ticks)) {
      const now = Date.now()
      if (state.view.kind === 'detail') {
        const host = state.view.host
        try {
          const d = await sup.runner(host).detail({ timeoutMs: DETAIL_REFRESH_MS * 5 })
          detail = { host, data: d }
        } catch (err) {
          detail = {
            host,
            ...(detail?.host === host && detail.data ? { data: detail.data } : {}),
            error: String((err as Error).message),
          }
        }
        draw()
        await waitOrKey(DETAIL_REFRESH_MS)
        continue
      }
      if (now >= nextTick) {
        nextTick = now + opts.intervalMs
        const t = await sup.collect({ timeoutMs: opts.intervalMs })
        tick = t.tick
        absorbTick(t, metrics, errors)
        if (!everyoneReadyOnce && (sup.stats().byState.ready ?? 0) === sup.stats().hosts) everyoneReadyOnce = true
        refreshRows()
        if (selectedRow(state) === undefined) state = resize(state, pageSize())
        draw()
      }
      await waitOrKey(Math.max(0, nextTick - Date.now()))
    }
  } finally {
    sup.off('host', onHost)
    if (hostTimer) clearTimeout(hostTimer)
    out.off('resize', onResize)
    stdin.off('data', onKeys)
    stdin.setRawMode?.(false)
    stdin.pause()
    out.write('\x1b[?25h\x1b[?1049l') // show cursor, leave the alternate screen
    release?.()
    const err = opts.err
    if (err !== undefined) for (const line of log.summary()) err.write(`${line}\n`)
  }
  return opts.signal.aborted || interrupted ? EXIT.interrupted : EXIT.ok

  function waitOrKey(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const ac = new AbortController()
      const done = () => {
        wake = undefined
        ac.abort()
        resolve()
      }
      wake = done
      opts.signal.addEventListener('abort', done, { once: true, signal: ac.signal })
      void sleep(ms, ac.signal).then(done)
    })
  }
}
