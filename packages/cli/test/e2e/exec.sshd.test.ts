/**
 * `kay exec` end to end against real OpenSSH sshd hosts (127.78.x.y), the way pdsh and clush users run it: output
 * streamed as it arrives, partial output kept, a closing line per failed host in every mode (golden files), batches
 * counted on the hosts, rolling stops, stdin, output files, interrupts and a closed stdout that leave nothing
 * running on the hosts.
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { until } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { killRunning, ndjson, runKay, startKay } from './support/kay.js'
import { type SshdFixture, startSshdFixture } from './support/sshd-fleet.js'

const BASE = '127.78.'
/** An alias for an address of the fleet's range where nothing listens: refused at once. */
const DEAD = 'hdead'

let fx: SshdFixture

beforeAll(async () => {
  fx = await startSshdFixture(5, {
    addressBase: BASE,
    extraConfig: (port) => `Host ${DEAD}\n  HostName ${BASE}0.250\n  Port ${port}\n  User kaytest\n`,
  })
  // Pin every host key now, so no test's stderr starts with first-use pins.
  const warm = await runKay(['exec', 'h[1-5]', ...fx.connArgs, '--', 'true'], { timeoutMs: 60_000 })
  expect(warm.code).toBe(0)
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

const exec = (args: string[], command: string, opts: { stdin?: string } = {}) =>
  runKay(['exec', ...args, ...fx.connArgs, '--', command], { timeoutMs: 90_000, ...opts })

/** The user commands matching `marker` still running on any host (sshd's own processes left out). */
const remote = async (marker: string) => (await fx.userProcesses()).filter((p) => p.cmd.includes(marker))

const lines = (text: string) => text.split('\n').filter((l) => l !== '')

// ------------------------------------------------------------------------------------------------ golden files

const GOLDEN = fileURLToPath(new URL('./golden/', import.meta.url))

/** Stable across runs: durations and the refused port vary. */
function normalize(text: string): string {
  return text
    .replace(/"durationMs":\d+/g, '"durationMs":0')
    .replace(/ECONNREFUSED [\d.]+:\d+/g, 'ECONNREFUSED ADDR:PORT')
}

/** Compare with `golden/<name>` line by line (UPDATE_GOLDEN=1 rewrites the file instead). */
async function expectGolden(name: string, actual: string): Promise<void> {
  const path = join(GOLDEN, name)
  const text = normalize(actual)
  if (process.env.UPDATE_GOLDEN) {
    await mkdir(GOLDEN, { recursive: true })
    await writeFile(path, text)
  }
  const golden = await readFile(path, 'utf8')
  expect(text.split('\n'), name).toEqual(golden.split('\n'))
}

/**
 * h1 succeeds, h2 prints to stderr and exits 3, h3 prints then is killed by a signal, hdead is unreachable: every
 * kind of result. `--batch 1` makes the order the command line's, so streamed output is comparable too.
 */
const MIXED =
  'set -- $SSH_CONNECTION; echo common; case $3 in *.2) echo odd; echo warn >&2; exit 3;; ' +
  '*.3) echo last words; kill -KILL $$;; esac; echo tail'

describe('kay exec against real sshd: output', { timeout: 180_000 }, () => {
  test('streams a line as soon as the host prints it, before the command ends', async () => {
    const gate = join(fx.shared, 'go-stream')
    const k = startKay(
      ['exec', 'h1', ...fx.connArgs, '--', `echo first; while [ ! -e ${gate} ]; do sleep 0.05; done; echo second`],
      { timeoutMs: 60_000 },
    )
    await until('the first line on stdout', () => k.stdout().includes('h1: first\n'), 30_000)
    // The command cannot end before the gate file exists: the line arrived while it ran.
    expect(k.child.exitCode).toBeNull()
    expect(k.stdout()).toBe('h1: first\n')
    await writeFile(gate, '')
    const r = await k.done
    expect(r.stdout).toBe('h1: first\nh1: second\n')
    expect(r.code).toBe(0)
  })

  test('every output mode matches its golden file, with one closing line per failed host on stderr', async () => {
    const hosts = ['-w', `h1,h2,h3,${DEAD}`, '--batch', '1']
    const prefix = await exec(hosts, MIXED)
    await expectGolden('exec-prefix.stdout', prefix.stdout)
    await expectGolden('exec-prefix.stderr', prefix.stderr)
    const noPrefix = await exec([...hosts, '-N'], MIXED)
    await expectGolden('exec-noprefix.stdout', noPrefix.stdout)
    const collate = await exec([...hosts, '--collate'], MIXED)
    await expectGolden('exec-collate.stdout', collate.stdout)
    await expectGolden('exec-collate.stderr', collate.stderr)
    const json = await exec([...hosts, '--json'], MIXED)
    await expectGolden('exec-json.stdout', json.stdout)
    await expectGolden('exec-json.stderr', json.stderr)
    const diff = await exec([...hosts, '--diff'], MIXED)
    await expectGolden('exec-diff.stdout', diff.stdout)
    await expectGolden('exec-diff.stderr', diff.stderr)
    // The remote non-zero exit (5) outranks the unreachable host (2), in every mode.
    for (const r of [prefix, noPrefix, collate, json, diff]) expect(r.code).toBe(5)
    // No literal placeholder anywhere: a collated error names its hosts.
    expect(collate.stdout).not.toContain('<host>')
  })

  test('keeps and shows the output printed before a timeout, in prefix and JSON modes', async () => {
    const cmd = 'echo partial; echo oops >&2; sleep 40'
    const r = await exec(['h[1-2]', '--timeout', '2s'], cmd)
    expect(lines(r.stdout).sort()).toEqual(['h1: partial', 'h2: partial'])
    expect(lines(r.stderr).sort()).toEqual([
      'h1: oops',
      'h2: oops',
      'kay: h1: KAY_TIMEOUT: command timed out after 2000 ms (its output until then is shown)',
      'kay: h2: KAY_TIMEOUT: command timed out after 2000 ms (its output until then is shown)',
    ])
    expect(r.code).toBe(2)
    const j = await exec(['h1', '--timeout', '2s', '--json'], cmd)
    const [obj] = ndjson(j.stdout)
    expect(obj).toMatchObject({ host: 'h1', ok: false, stdout: 'partial\n', stderr: 'oops\n' })
    expect(obj!.error).toMatchObject({ code: 'KAY_TIMEOUT' })
    expect(obj!.durationMs as number).toBeGreaterThanOrEqual(2000)
    await until('no sleep 40 left on the hosts', async () => (await remote('sleep 40')).length === 0, 10_000)
  })

  test('keeps exactly --max-output bytes of a flood, then stops it (exit 5)', async () => {
    const j = await exec(['h1', '--max-output', '100', '--json'], 'yes abc | head -c 100000; sleep 41')
    const [obj] = ndjson(j.stdout)
    expect(obj!.stdout).toBe('abc\n'.repeat(25))
    expect(obj!.error).toMatchObject({ code: 'KAY_OUTPUT_LIMIT' })
    expect(j.code).toBe(5)
    const p = await exec(['h1', '--max-output', '8'], 'echo 0123456789; sleep 41')
    expect(p.stdout).toBe('h1: 01234567\n')
    expect(p.stderr).toMatch(/^kay: h1: KAY_OUTPUT_LIMIT: output exceeded 8 bytes \(its output until then is shown\)$/m)
    await until('no sleep 41 left on the hosts', async () => (await remote('sleep 41')).length === 0, 10_000)
  })

  test('forwards stdin to every host with -I, and gives the command none without it', async () => {
    const r = await exec(['h[1-3]', '-I'], 'cat', { stdin: 'hello\nworld\n' })
    expect(lines(r.stdout).sort()).toEqual(
      ['h1: hello', 'h1: world', 'h2: hello', 'h2: world', 'h3: hello', 'h3: world'].sort(),
    )
    expect(r.code).toBe(0)
    const none = await exec(['h1'], 'cat', { stdin: 'not sent\n' })
    expect(none.stdout).toBe('')
    expect(none.code).toBe(0)
    const big = await exec(['h1', '-I'], 'cat', { stdin: 'x'.repeat(16 * 1024 * 1024 + 1) })
    expect(big.code).toBe(1)
    expect(lines(big.stderr)).toEqual([expect.stringMatching(/^kay: KAY_CONFIG: -I: standard input is larger than/)])
  })

  test('--outdir writes HOST.out and HOST.err per host, 0600 in a 0700 directory', async () => {
    const dir = join(fx.dir, 'out')
    const r = await exec(['h[1-3]', '--outdir', dir], 'set -- $SSH_CONNECTION; echo "out $3"; echo err >&2; exit 1')
    expect(r.code).toBe(5)
    expect((await stat(dir)).mode & 0o777).toBe(0o700)
    expect((await readdir(dir)).sort()).toEqual(['h1.err', 'h1.out', 'h2.err', 'h2.out', 'h3.err', 'h3.out'])
    for (const [i, h] of ['h1', 'h2', 'h3'].entries()) {
      expect(await readFile(join(dir, `${h}.out`), 'utf8')).toBe(`out ${BASE}0.${i + 1}\n`)
      expect(await readFile(join(dir, `${h}.err`), 'utf8')).toBe('err\n')
      expect((await stat(join(dir, `${h}.out`))).mode & 0o777).toBe(0o600)
      expect((await stat(join(dir, `${h}.err`))).mode & 0o777).toBe(0o600)
    }
  })

  test('selects hosts with -w ^FILE, -x ^FILE, -g GROUP and @GROUP from a ClusterShell groups file', async () => {
    const list = join(fx.dir, 'hosts.txt')
    await writeFile(list, 'h1\nh2\n# comment\nh3\n')
    const skip = join(fx.dir, 'skip.txt')
    await writeFile(skip, 'h2\n')
    const groups = join(fx.dir, 'groups')
    await writeFile(groups, 'front: h[1-2]\nback: h4\nall: @front @back\n')
    const who = async (args: string[]) =>
      lines((await exec([...args, '--groups', groups], 'true; set -- $SSH_CONNECTION; echo $3')).stdout)
        .map((l) => l.split(':')[0])
        .sort()
    expect(await who(['-w', `^${list}`, '-x', `^${skip}`])).toEqual(['h1', 'h3'])
    expect(await who(['-g', 'front'])).toEqual(['h1', 'h2'])
    expect(await who(['-w', '@all', '-x', '@front'])).toEqual(['h4'])
    const bad = await exec(['-g', 'nosuch', '--groups', groups], 'true')
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/unknown group '@nosuch' .* \(groups: front, back, all\)/)
  })
})

describe('kay exec against real sshd: batches', { timeout: 180_000 }, () => {
  /** Most commands that were running at once, from the start/end lines they appended to a shared file. */
  async function mostAtOnce(log: string): Promise<{ most: number; starts: number }> {
    let now = 0
    let most = 0
    let starts = 0
    for (const l of lines(await readFile(log, 'utf8'))) {
      if (l.startsWith('start')) {
        now++
        starts++
      } else now--
      most = Math.max(most, now)
    }
    return { most, starts }
  }

  test('--batch N keeps at most N commands running at once, counted on the hosts, and rolls through all', async () => {
    const log = join(fx.shared, 'batch.log')
    const cmd = `echo start >> ${log}; sleep 0.3; echo end >> ${log}`
    const rolled = await exec(['h[1-5]', '--batch', '2'], cmd)
    expect(rolled.code).toBe(0)
    expect(await mostAtOnce(log)).toEqual({ most: 2, starts: 5 })
    // The same count without a batch sees every host at once: the log does measure concurrency.
    await writeFile(log, '')
    await exec(['h[1-5]'], cmd)
    expect(await mostAtOnce(log)).toEqual({ most: 5, starts: 5 })
  })

  test('--batch-fail stops a rolling run: hosts after the failure never run and are reported KAY_SKIPPED', async () => {
    const log = join(fx.shared, 'rolling.log')
    const cmd = `set -- $SSH_CONNECTION; echo "start $3" >> ${log}; case $3 in *.2) exit 3;; esac`
    const r = await exec(['h[1-5]', '--batch', '1', '--batch-fail', '1'], cmd)
    expect(r.code).toBe(5)
    expect(lines(await readFile(log, 'utf8'))).toEqual([`start ${BASE}0.1`, `start ${BASE}0.2`])
    expect(lines(r.stderr)).toEqual([
      'kay: h2: command exited with exit code 3',
      'kay: h3: KAY_SKIPPED: not run: the rolling run stopped after 1 failed host(s)',
      'kay: h4: KAY_SKIPPED: not run: the rolling run stopped after 1 failed host(s)',
      'kay: h5: KAY_SKIPPED: not run: the rolling run stopped after 1 failed host(s)',
    ])
    // P% of the hosts: 40% of 5 is 2 failures.
    await writeFile(log, '')
    const pct = await exec(['h[1-5]', '--batch', '1', '--batch-fail', '40%'], `${cmd}; case $3 in *.3) exit 4;; esac`)
    expect(lines(await readFile(log, 'utf8'))).toHaveLength(3)
    expect(pct.code).toBe(5)
  })
})

describe('kay exec against real sshd: interrupts and a closed stdout', { timeout: 180_000 }, () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} stops at once: prints what it has, stops every remote command, exits 130`, async () => {
      const marker = signal === 'SIGINT' ? 'sleep 50' : 'sleep 52'
      const k = startKay(['exec', 'h[1-4]', ...fx.connArgs, '--', `echo started; for i in 1 2 3; do ${marker}; done`], {
        timeoutMs: 60_000,
      })
      await until('every host started', () => lines(k.stdout()).length === 4, 30_000)
      await until('4 remote loops running', async () => (await remote(marker)).length >= 8, 10_000)
      k.child.kill(signal)
      const r = await k.done
      expect(r.code).toBe(130)
      expect(lines(r.stdout).sort()).toEqual(['h1: started', 'h2: started', 'h3: started', 'h4: started'])
      expect(lines(r.stderr).sort()).toEqual(
        ['h1', 'h2', 'h3', 'h4'].map((h) => `kay: ${h}: interrupted (its output until then is shown)`),
      )
      // Nothing kay started is left on the hosts: the shells and their sleeps got TERM (their process group).
      await until(`no ${marker} left on the hosts`, async () => (await remote(marker)).length === 0, 10_000)
    })
  }

  test('a second Ctrl-C KILLs commands that ignore TERM and exits, leaving nothing running', async () => {
    const k = startKay(
      ['exec', 'h[1-3]', ...fx.connArgs, '--', "trap '' TERM; echo started; sleep 53 & wait; sleep 53"],
      { timeoutMs: 60_000 },
    )
    await until('every host started', () => lines(k.stdout()).length === 3, 30_000)
    const sleeps = async () => (await remote('sleep 53')).filter((p) => p.cmd === 'sleep 53').length
    await until('3 TERM-proof sleeps running', async () => (await sleeps()) === 3, 10_000)
    k.child.kill('SIGINT')
    // The second once the first has been handled (two signals sent at once may arrive as one).
    await until('the first Ctrl-C handled', () => lines(k.stderr()).length === 3, 10_000)
    k.child.kill('SIGINT')
    const r = await k.done
    expect(r.code).toBe(130)
    await until('no sleep 53 left on the hosts', async () => (await remote('sleep 53')).length === 0, 10_000)
  })

  test('`kay exec … | head -1` ends quietly with exit 0 and stops the remote commands', async () => {
    const k = startKay(['exec', 'h[1-3]', ...fx.connArgs, '--', 'while :; do echo tick; sleep 0.02; done'], {
      timeoutMs: 60_000,
    })
    await until('a first line', () => k.stdout().includes('\n'), 30_000)
    k.child.stdout!.destroy() // the reader goes away, as head does after one line
    const r = await k.done
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
    await until('no loop left on the hosts', async () => (await remote('while :')).length === 0, 10_000)
  })

  test('`kay fleet --json | head -1` ends quietly with exit 0', async () => {
    const k = startKay(['fleet', 'h[1-3]', ...fx.connArgs, '--json', '--interval', '1s'], { timeoutMs: 60_000 })
    await until('a first line', () => k.stdout().includes('\n'), 30_000)
    k.child.stdout!.destroy()
    const r = await k.done
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
  })

  test('`kay trust list | head -1` ends quietly with exit 0', async () => {
    const pins = join(fx.dir, 'many_pins')
    const key = (await readFile(fx.knownHosts, 'utf8')).split('\n')[0]!.split(' ').slice(1).join(' ')
    await writeFile(pins, Array.from({ length: 20_000 }, (_, i) => `host${i}.example ${key}`).join('\n'))
    const k = startKay(['trust', 'list', '--known-hosts', pins], { timeoutMs: 60_000 })
    await until('a first line', () => k.stdout().includes('\n'), 30_000)
    k.child.stdout!.destroy()
    const r = await k.done
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
  })
})
