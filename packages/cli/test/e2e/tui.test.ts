/**
 * The interactive table, driven for real: `kay fleet` in a tmux pane (a real pty) against 30 simulated hosts in
 * this process. Keys go in with `tmux send-keys`, the screen comes back with `tmux capture-pane`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type FleetFixture, KAY_NODE_ARGS, REPO_ROOT, startFixture, TmuxSession } from './support/kay.js'

const HOSTS = 30

let fx: FleetFixture
let tmux: TmuxSession | undefined

beforeAll(async () => {
  fx = await startFixture(HOSTS)
})

afterAll(async () => {
  await tmux?.kill()
  await fx?.close()
})

const SGR = /\x1b\[[0-9;]*m/g
const ROW = /^(sim\d{4}) +(\S+) +(\S+)/

/** The table's host rows, in screen order, with the CPU% column (NaN when not known yet). */
function rows(screen: string): Array<{ host: string; state: string; cpu: number; selected: boolean }> {
  return screen.split('\n').flatMap((l) => {
    const m = ROW.exec(l.replace(SGR, ''))
    // tmux writes inverse video (the selection) as SGR 7, alone or after a reset (`0;7`).
    const selected = /\x1b\[(?:0;)?7m/.test(l)
    return m ? [{ host: m[1]!, state: m[2]!, cpu: Number(m[3]), selected }] : []
  })
}

function footer(screen: string): string {
  return screen.split('\n').findLast((l) => l.includes(' · sort ')) ?? ''
}

const selectedHost = (screen: string) => rows(screen).find((r) => r.selected)?.host

// Several CLI runs per test; the bound is for an overloaded machine, a normal run takes a few seconds.
describe('kay fleet in a terminal', { timeout: 120_000 }, () => {
  test('renders, sorts, filters, drills in and back without new handshakes, and quits with 0 on q', async () => {
    tmux = await TmuxSession.start(fx.dir, REPO_ROOT, 160, 50)
    const cmd = [process.execPath, ...KAY_NODE_ARGS, 'fleet', 'sim[0001-0030]', ...fx.connArgs, '--interval', '1s']
    await tmux.typeLine(`${cmd.join(' ')}; echo EXIT:$?`)

    // Every host ready, with CPU% known (two samples) on every row. A capture can catch the screen mid-redraw, with
    // only some rows drawn: wait for a complete one.
    const first = await tmux.waitScreen(
      'the table with every host ready and measured',
      (s) =>
        s.replace(SGR, '').startsWith(`${HOSTS} ready (${HOSTS} streaming) · 0 connecting · 0 down`) &&
        rows(s).length === HOSTS &&
        rows(s).every((r) => !Number.isNaN(r.cpu)),
      20_000,
      true,
    )
    expect(rows(first).map((r) => r.host)).toEqual(fx.names)
    expect(footer(first)).toContain('sort host')
    expect(selectedHost(first)).toBe('sim0001')
    expect(fx.fleet.stats().totals.handshakesStarted).toBe(HOSTS)

    await tmux.keys(['Down'])
    await tmux.waitScreen('the selection on the second row', (s) => selectedHost(s) === 'sim0002', 5000, true)

    await tmux.keys(['s'])
    const sorted = await tmux.waitScreen('sorted by CPU', (s) => footer(s).includes('sort cpu'), 5000, true)
    const cpus = rows(sorted).map((r) => r.cpu)
    expect(cpus).toHaveLength(HOSTS)
    // Largest first; the selection follows the host, not the row.
    expect(cpus).toEqual([...cpus].sort((a, b) => b - a))
    expect(selectedHost(sorted)).toBe('sim0002')

    await tmux.keys(['/'])
    await tmux.keys(['sim001'], true)
    await tmux.waitScreen('the filter prompt', (s) => s.includes('filter: sim001_'))
    await tmux.keys(['Enter'])
    const filtered = await tmux.waitScreen(
      'the filter applied',
      (s) => footer(s).includes("filter 'sim001'"),
      5000,
      true,
    )
    const shown = rows(filtered).map((r) => r.host)
    expect([...shown].sort()).toEqual(fx.names.filter((n) => n.startsWith('sim001')))
    const target = selectedHost(filtered)
    expect(target).toMatch(/^sim001\d$/)

    await tmux.keys(['Enter'])
    const detail = await tmux.waitScreen('the detail view', (s) => s.includes('PROCESSES'))
    expect(detail.split('\n')[0]).toContain(target)
    expect(detail).not.toMatch(/^HOST +STATE/m)

    await tmux.keys(['Escape'])
    const back = await tmux.waitScreen('the table again', (s) => footer(s).includes("filter 'sim001'"), 5000, true)
    expect(rows(back).every((r) => r.host.startsWith('sim001'))).toBe(true)
    expect(selectedHost(back)).toBe(target)
    // The drill-in used the pooled connections: no host was dialled again.
    expect(fx.fleet.stats().totals.handshakesStarted).toBe(HOSTS)

    await tmux.keys(['q'])
    const done = await tmux.waitScreen('the exit status', (s) => /^EXIT:\d+$/m.test(s))
    expect(/^EXIT:(\d+)$/m.exec(done)?.[1]).toBe('0')
    expect(fx.fleet.stats().totals.handshakesStarted).toBe(HOSTS)
  })
})
