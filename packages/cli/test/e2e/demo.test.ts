/**
 * `kay demo` in a real terminal (tmux): it starts its own simulated fleet in a child process, renders the table,
 * and on q (exit 0) or Ctrl-C (exit 130) stops that child and removes its temporary directory.
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { descendantsOf, processTable, until } from '@kay/core/testing'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { KAY_NODE_ARGS, REPO_ROOT, TmuxSession } from './support/kay.js'

const HOSTS = 50

let dir: string
let tmux: TmuxSession | undefined

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-e2e-demo-'))
})

// Each test's session goes with it, passed or failed: a failed one left in place would keep its demo running.
afterEach(async () => {
  await tmux?.kill()
  tmux = undefined
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/**
 * Run `kay demo` in the pane with its own TMPDIR, wait until every simulated host is ready, press `key`, and
 * return the exit status plus what was left behind.
 */
async function demoThenPress(key: string, runTmp: string) {
  await mkdir(runTmp)
  tmux = await TmuxSession.start(dir, REPO_ROOT, 160, 40)
  const shell = await tmux.panePid()
  const cmd = [process.execPath, ...KAY_NODE_ARGS, 'demo', '--hosts', String(HOSTS), '--interval', '1s']
  await tmux.typeLine(`TMPDIR=${runTmp} ${cmd.join(' ')}; echo EXIT:$?`)
  await tmux.waitScreen(
    'the demo table with every host ready',
    (s) => s.startsWith(`${HOSTS} ready (${HOSTS} streaming) · 0 connecting · 0 down`) && /^sim0001 +ready/m.test(s),
    30_000,
  )

  // The kay process (the shell's child) and everything under it: worker threads live inside it, the simulated
  // fleet is a forked child.
  const table = await processTable()
  const kay = table.find((p) => p.ppid === shell && p.cmd.includes('packages/cli/src/cli.ts demo'))
  expect(kay).toBeDefined()
  const during = [kay!, ...descendantsOf(table, kay!.pid)]
  expect(during.some((p) => p.pid !== kay!.pid && p.cmd.includes('sim/main'))).toBe(true)
  const demoDirs = (await readdir(runTmp)).filter((d) => d.startsWith('kay-demo-'))
  expect(demoDirs).toHaveLength(1)

  await tmux.keys([key])
  const done = await tmux.waitScreen('the exit status', (s) => /^EXIT:\d+$/m.test(s), 15_000)
  const exit = Number(/^EXIT:(\d+)$/m.exec(done)?.[1])

  // Nothing of that tree survives (matched by PID and command line, so a reused PID does not count).
  const left = await until(
    'the demo processes to be gone',
    async () => {
      const now = await processTable()
      const alive = now.filter((p) => during.some((d) => d.pid === p.pid && d.cmd === p.cmd))
      return alive.length === 0 ? alive : undefined
    },
    { timeoutMs: 5000, everyMs: 50 },
  )
  await tmux.kill()
  tmux = undefined
  return { exit, left, demoDirsAfter: (await readdir(runTmp)).filter((d) => d.startsWith('kay-demo-')) }
}

// Several CLI runs per test; the bound is for an overloaded machine, a normal run takes a few seconds.
describe('kay demo', { timeout: 120_000 }, () => {
  test('renders 50 simulated hosts and quits with 0 on q, leaving no process or temp dir behind', async () => {
    const r = await demoThenPress('q', join(dir, 'q'))
    expect(r.exit).toBe(0)
    expect(r.left).toEqual([])
    expect(r.demoDirsAfter).toEqual([])
  })

  test('Ctrl-C exits 130 and also leaves no process or temp dir behind', async () => {
    const r = await demoThenPress('C-c', join(dir, 'ctrl-c'))
    expect(r.exit).toBe(130)
    expect(r.left).toEqual([])
    expect(r.demoDirsAfter).toEqual([])
  })
})
