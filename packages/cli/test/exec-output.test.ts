import { Readable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { parseArgs } from '../src/args.js'
import { stopAfterFailures } from '../src/commands/common.js'
import { readStdin } from '../src/commands/exec.js'
import { collateResults, type ExecOutcome, failureLine } from '../src/ui/collate.js'
import { editScript, referenceGroup, renderDiff, unifiedHunks } from '../src/ui/diff.js'
import { StatusLog } from '../src/ui/tui.js'

const res = (host: string, stdout: string, over: Partial<ExecOutcome> = {}): ExecOutcome => ({
  host,
  ok: true,
  exitCode: 0,
  stdout,
  stderr: '',
  durationMs: 1,
  ...over,
})

describe('the closing line of a failed host (pdsh style)', () => {
  it.each([
    [res('h1', 'x'), undefined],
    [res('h2', '', { ok: false, exitCode: 3 }), 'kay: h2: command exited with exit code 3'],
    [res('h3', '', { ok: false, exitCode: null, signal: 'SIGKILL' }), 'kay: h3: command killed by signal SIGKILL'],
    [
      res('h4', 'half', { ok: false, exitCode: null, error: { code: 'KAY_TIMEOUT', message: 'h4: timed out' } }),
      'kay: h4: KAY_TIMEOUT: timed out (its output until then is shown)',
    ],
    [
      res('h5', '', { ok: false, exitCode: null, error: { code: 'KAY_ABORTED', message: 'h5: aborted' } }),
      'kay: h5: interrupted',
    ],
    [
      res('h6', '', { ok: false, exitCode: null, error: { code: 'KAY_AUTH_FAILED', message: 'h6: denied' } }),
      'kay: h6: KAY_AUTH_FAILED: denied (check -i KEY, -l USER and the agent)',
    ],
  ])('%# %j', (r, line) => {
    expect(failureLine(r)).toBe(line)
  })
})

describe('--diff', () => {
  it('computes minimal edit scripts that rebuild both sides', () => {
    const seq = (s: string) => s.split('')
    for (const [a, b] of [
      ['abcabba', 'cbabac'],
      ['', 'abc'],
      ['abc', ''],
      ['same', 'same'],
    ] as const) {
      const ops = editScript(seq(a), seq(b))!
      expect(ops.filter((o) => o.kind !== '+').map((o) => o.line)).toEqual(seq(a))
      expect(ops.filter((o) => o.kind !== '-').map((o) => o.line)).toEqual(seq(b))
    }
    // Myers' classic example: 5 edits.
    expect(editScript(seq('abcabba'), seq('cbabac'))!.filter((o) => o.kind !== ' ')).toHaveLength(5)
    // Past the bound it gives up rather than grow.
    expect(editScript(seq('aaaa'), seq('bbbb'), 3)).toBeUndefined()
  })

  it('prints diff -u hunks with 3 lines of context', () => {
    const a = 'abcdefghij'.split('')
    const b = 'abXdefghijk'.split('')
    expect(unifiedHunks(a, b)).toEqual([
      '@@ -1,6 +1,6 @@',
      ' a',
      ' b',
      '-c',
      '+X',
      ' d',
      ' e',
      ' f',
      '@@ -8,3 +8,4 @@',
      ' h',
      ' i',
      ' j',
      '+k',
    ])
  })

  it('diffs against the lowest exit status, then the largest group, and skips hosts whose command never ran', () => {
    const groups = collateResults([
      res('a1', 'v1\n'),
      res('a2', 'v1\n'),
      res('b1', 'v2\n'),
      res('f1', 'v1\nboom\n', { ok: false, exitCode: 1 }),
      res('f2', 'v1\nboom\n', { ok: false, exitCode: 1 }),
      res('f3', 'v1\nboom\n', { ok: false, exitCode: 1 }),
      res('dead', '', { ok: false, exitCode: null, error: { code: 'KAY_CONNECT_FAILED', message: 'dead: refused' } }),
    ])
    expect(referenceGroup(groups)?.folded).toBe('a[1-2]')
    expect(renderDiff(groups)).toBe(
      [
        // Groups in collate order: the largest first.
        '--- a[1-2] (2)',
        '+++ f[1-3] (3)',
        '@@ -1,1 +1,2 @@',
        ' v1',
        '+boom',
        '--- a[1-2] (2)',
        '+++ b1',
        '@@ -1,1 +1,1 @@',
        '-v1',
        '+v2',
        '',
      ].join('\n'),
    )
    expect(renderDiff(collateResults([res('a', 'x'), res('b', 'x')]))).toBe('')
  })
})

describe('exec helpers', () => {
  it('turns --batch-fail into a host count: N, or P% of the hosts rounded up, at least one', () => {
    expect(stopAfterFailures(undefined, 10)).toBeUndefined()
    expect(stopAfterFailures({ count: 3 }, 10)).toBe(3)
    expect(stopAfterFailures({ percent: 25 }, 10)).toBe(3)
    expect(stopAfterFailures({ percent: 1 }, 10)).toBe(1)
  })

  it('reads stdin to its end, and refuses more than the bound with a one-line config error', async () => {
    const signal = new AbortController().signal
    expect((await readStdin(Readable.from([Buffer.from('ab'), Buffer.from('c')]), 10, signal)).toString()).toBe('abc')
    await expect(readStdin(Readable.from([Buffer.alloc(11)]), 10, signal)).rejects.toMatchObject({
      code: 'KAY_CONFIG',
      message: expect.stringMatching(/^-I: standard input is larger than 10 bytes; copy big input with kay cp/),
    })
  })

  it('parses the exec, cp and rcopy flags', () => {
    const p = parseArgs(
      'exec -w ^hosts.txt,web1 -x ^skip.txt -g db --groups g.cfg -N -I --outdir out --batch 4 --batch-fail 25% -- uptime'.split(
        ' ',
      ),
    )
    expect(p).toMatchObject({
      command: 'exec',
      hosts: { include: ['web1', '@db'], hostfiles: ['hosts.txt'], excludeFiles: ['skip.txt'], groupsFile: 'g.cfg' },
      noPrefix: true,
      stdin: true,
      outdir: 'out',
      batch: 4,
      batchFail: { percent: 25 },
    })
    expect(parseArgs(['cp', '-w', 'h1', '-r', 'a', 'b', '/dest'])).toMatchObject({
      command: 'cp',
      sources: ['a', 'b'],
      dest: '/dest',
      recursive: true,
    })
    for (const [line, message] of [
      ['exec h1 --batch-fail 2 -- true', /--batch-fail needs --batch N/],
      ['exec h1 --batch 2 --batch-fail 0 -- true', /is not N \(hosts, 1 or more\) or P%/],
      ['exec h1 --batch 2 --batch-fail 101% -- true', /is not N/],
      ['exec h1 -N --json -- true', /-N \(no prefix\) applies to --prefix output only/],
      ['exec h1 --diff --collate -- true', /cannot be combined/],
      ['exec -w ^ -- true', /'\^' needs a file name/],
      ['cp -w h1 onlyone', /'kay cp' needs SOURCE… DEST/],
    ] as const) {
      expect(() => parseArgs(line.split(' ')), line).toThrow(message)
    }
  })
})

describe('the live table status line', () => {
  it('counts pins instead of listing them, shows the latest other diagnostic, and keeps a bounded summary', () => {
    const log = new StatusLog()
    expect(log.text()).toBe('')
    log.add('pinned host key of h1 (SHA256:a)')
    expect(log.text()).toBe('kay: pinned host key of h1 (SHA256:a)')
    log.add('pinned host key of h2 (SHA256:b)')
    expect(log.text()).toBe('kay: pinned the host keys of 2 hosts (kay trust list)')
    for (let i = 0; i < StatusLog.KEEP + 5; i++) log.add(`warning ${i}`)
    expect(log.text()).toBe(`kay: warning ${StatusLog.KEEP + 4}`)
    const summary = log.summary()
    expect(summary[0]).toBe('kay: pinned the host keys of 2 hosts (kay trust list shows them)')
    expect(summary[1]).toBe('kay: … 5 earlier messages not kept')
    expect(summary).toHaveLength(2 + StatusLog.KEEP)
  })
})
