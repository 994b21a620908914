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

/** Down hosts for the second suite: refusing from the start (the simulator resets the connection), so they show a reason. */
const DOWN = [3, 11, 24]

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

    // s cycles host → state → cpu.
    await tmux.keys(['s', 's'])
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

describe('kay fleet in a terminal with down hosts, at 80 and 160 columns', { timeout: 180_000 }, () => {
  // Generous bounds: on a loaded 2-core machine the CLI's start and 30 dials can take a while.
  for (const [cols, rowsOnScreen] of [
    [80, 40],
    [160, 40],
  ] as const) {
    test(`${cols} columns: the reason is readable, diagnostics stay on the status line, p shows the problems`, async () => {
      const down = await startFixture(HOSTS)
      let term: TmuxSession | undefined
      try {
        for (const i of DOWN) down.fleet.setFault(i, { refuse: true })
        term = await TmuxSession.start(down.dir, REPO_ROOT, cols, rowsOnScreen)
        const cmd = [
          process.execPath,
          ...KAY_NODE_ARGS,
          'fleet',
          'sim[0001-0030]',
          ...down.connArgs,
          '--interval',
          '1s',
        ]
        await term.typeLine(`${cmd.join(' ')}; echo EXIT:$?`)
        const downNames = DOWN.map((i) => down.names[i]!)
        const screen = await term.waitScreen(
          'every row drawn with the down hosts showing their reason',
          (s) =>
            rows(s).length === HOSTS &&
            downNames.every((h) => new RegExp(`^${h} .*CONNECT_FAILED read ECONNRESET`, 'm').test(s)),
          60_000,
        )
        const lines = screen.split('\n')
        for (const l of lines) expect(l.length, l).toBeLessThanOrEqual(cols)
        const header = lines.findIndex((l) => /^HOST +STATE/.test(l))
        const foot = lines.findIndex((l) => l.includes(' · sort '))
        expect(lines[header]).toMatch(/ REASON *$/)
        // Every line between the header and the status line/footer is a host row: nothing was painted over it.
        const body = lines.slice(header + 1, foot).filter((l) => l.trim() !== '')
        const status = body.filter((l) => !ROW.test(l))
        expect(status.length, body.join('\n')).toBeLessThanOrEqual(1)
        if (status.length === 1) {
          expect(status[0]).toMatch(/^kay: pinned (host key of sim\d{4}|the host keys of \d+ hosts)/)
          expect(lines.indexOf(status[0]!)).toBe(foot - 1)
        }
        expect(screen.split('pinned').length - 1).toBeLessThanOrEqual(1)
        // The down hosts' reason: the code and the cause, the host id not repeated in it.
        for (const h of downNames) {
          const row = lines.find((l) => l.startsWith(`${h} `))!
          expect(row.split(h).length - 1, row).toBe(1)
          // The simulator resets refused connections; the cause is never cut, at 80 columns either.
          expect(row).toMatch(/ CONNECT_FAILED read ECONNRESET *$/)
        }

        await term.keys(['p'])
        const problems = await term.waitScreen('only the problems', (s) => footer(s).includes('problems only'), 10_000)
        // The down hosts, and any ready host whose last tick failed on a loaded machine (it shows a reason too).
        const shown = rows(problems).map((r) => r.host)
        for (const h of downNames) expect(shown).toContain(h)
        for (const line of problems.split('\n').filter((l) => ROW.test(l))) {
          expect(line, 'a problem row shows its state or a reason').toMatch(/ (backoff|connecting|[A-Z_]{4,} )/)
        }
        await term.keys(['r'])
        const reversed = await term.waitScreen('reversed', (s) => footer(s).includes('reversed'), 10_000)
        expect(rows(reversed).map((r) => r.host)).toEqual(
          rows(reversed)
            .map((r) => r.host)
            .sort()
            .reverse(),
        )

        await term.keys(['q'])
        const done = await term.waitScreen('the exit status', (s) => /^EXIT:\d+$/m.test(s), 15_000)
        expect(/^EXIT:(\d+)$/m.exec(done)?.[1]).toBe('0')
        // The pins made while the table owned the screen are reported once it has closed.
        expect(done).toMatch(/^kay: pinned the host keys of 27 hosts/m)
      } finally {
        await term?.kill()
        await down.close()
      }
    })
  }
})
