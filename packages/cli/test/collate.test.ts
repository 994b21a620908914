import { describe, expect, it } from 'vitest'
import {
  collateResults,
  type ExecOutcome,
  execJsonLine,
  PrefixWriter,
  prefixLines,
  renderCollated,
} from '../src/ui/collate.js'

const ok = (host: string, stdout: string): ExecOutcome => ({
  host,
  ok: true,
  exitCode: 0,
  stdout,
  stderr: '',
  durationMs: 12,
})

describe('collate', () => {
  it('groups hosts with identical output and exit code and folds their names', () => {
    const results = [
      ...['web01', 'web02', 'web03', 'web04', 'web05', 'web07'].map((h) => ok(h, 'Linux 6.1\n')),
      ok('web06', 'Linux 5.10\n'),
      { host: 'web08', ok: false, exitCode: 1, stdout: 'Linux 6.1\n', stderr: '', durationMs: 3 },
    ]
    const groups = collateResults(results)
    expect(groups.map((g) => [g.folded, g.exitCode, g.hosts.length])).toEqual([
      ['web[01-05,07]', 0, 6],
      ['web06', 0, 1],
      ['web08', 1, 1],
    ])
  })

  it('groups failures by error code and message even when messages name the host', () => {
    const fail = (host: string): ExecOutcome => ({
      host,
      ok: false,
      exitCode: null,
      stdout: '',
      stderr: '',
      durationMs: 30_000,
      error: { code: 'KAY_TIMEOUT', message: `${host}: no reply within 30s` },
    })
    const groups = collateResults([fail('db2'), fail('db1'), fail('db10')])
    expect(groups).toHaveLength(1)
    expect(groups[0]!.hosts).toEqual(['db1', 'db2', 'db10'])
    expect(groups[0]!.folded).toBe('db[1-2,10]')
    // The message names no host placeholder: the host's own prefix goes, the group's folded list reads in its place.
    expect(groups[0]!.error).toEqual({ code: 'KAY_TIMEOUT', message: 'no reply within 30s' })
    const named = collateResults(
      ['db1', 'db2'].map((host) => ({
        ...fail(host),
        error: { code: 'KAY_CONNECT_FAILED', message: `jump to ${host}:22 failed` },
      })),
    )
    expect(named[0]!.error?.message).toBe('jump to db[1-2]:22 failed')
    expect(renderCollated(named)).not.toContain('<host>')
  })

  it('renders dshbak -c style blocks, completing a missing final newline and showing stderr', () => {
    const text = renderCollated(
      collateResults([
        ok('a1', 'same'),
        ok('a2', 'same'),
        { host: 'b', ok: false, exitCode: 2, stdout: '', stderr: 'ls: no such file\n', durationMs: 1 },
      ]),
    )
    expect(text).toBe(
      [
        '----------------',
        'a[1-2] (2 hosts) exit 0',
        '----------------',
        'same',
        '----------------',
        'b (1 host) exit 2',
        '----------------',
        '-- stderr --',
        'ls: no such file',
        '',
      ].join('\n'),
    )
    expect(text).not.toContain('\x1b')
  })
})

describe('PrefixWriter', () => {
  it('emits whole lines only, however the chunks split them', () => {
    const out: string[] = []
    const w = new PrefixWriter('web1', (l) => out.push(l))
    w.write('hel')
    expect(out).toEqual([])
    w.write('lo\nwor')
    w.write('ld\r\n\nlast')
    expect(out).toEqual(['web1: hello', 'web1: world', 'web1: '])
    w.end()
    expect(out).toEqual(['web1: hello', 'web1: world', 'web1: ', 'web1: last'])
    w.end()
    w.write('ignored\n')
    expect(out).toHaveLength(4)
  })

  it('never interleaves two hosts mid-line when their chunks alternate', () => {
    const out: string[] = []
    const a = new PrefixWriter('a', (l) => out.push(l))
    const b = new PrefixWriter('b', (l) => out.push(l))
    a.write('one-')
    b.write('uno-')
    a.write('two\nthr')
    b.write('dos\n')
    a.write('ee\n')
    expect(out).toEqual(['a: one-two', 'b: uno-dos', 'a: three'])
  })

  it('reassembles UTF-8 characters split across byte chunks', () => {
    const out: string[] = []
    const w = new PrefixWriter('h', (l) => out.push(l))
    const bytes = Buffer.from('héllo 😀\n')
    for (const byte of bytes) w.write(Uint8Array.of(byte))
    expect(out).toEqual(['h: héllo 😀'])
  })

  it('bounds a line without newline by emitting it in pieces', () => {
    const out: string[] = []
    const w = new PrefixWriter('h', (l) => out.push(l), { maxLineLength: 4 })
    w.write('abcdefghij')
    w.end()
    expect(out).toEqual(['h: abcd', 'h: efgh', 'h: ij'])
  })

  it('prefixes complete output in one call', () => {
    expect(prefixLines('db1', 'a\nb')).toEqual(['db1: a', 'db1: b'])
    expect(prefixLines('db1', '')).toEqual([])
  })
})

describe('execJsonLine', () => {
  it('writes one JSON object with the documented fields', () => {
    const line = execJsonLine({
      host: 'h',
      ok: false,
      exitCode: null,
      stdout: 'x\n',
      stderr: '',
      durationMs: 12.6,
      error: { code: 'KAY_TIMEOUT', message: 'timed out' },
    })
    expect(line).not.toContain('\n')
    expect(JSON.parse(line)).toEqual({
      host: 'h',
      ok: false,
      exitCode: null,
      signal: null,
      stdout: 'x\n',
      stderr: '',
      durationMs: 13,
      error: { code: 'KAY_TIMEOUT', message: 'timed out' },
    })
    expect(Object.keys(JSON.parse(execJsonLine(ok('a', ''))))).toEqual([
      'host',
      'ok',
      'exitCode',
      'signal',
      'stdout',
      'stderr',
      'durationMs',
    ])
  })
})
