import { describe, expect, it } from 'vitest'
import { parseKeys } from '../src/ui/keys.js'

const names = (input: string | Uint8Array): string[] =>
  parseKeys(input).map((k) => (k.name === 'char' ? `'${k.char}'` : k.name))

describe('parseKeys', () => {
  it.each([
    ['\x1b[A', 'up'],
    ['\x1b[B', 'down'],
    ['\x1bOA', 'up'],
    ['\x1bOB', 'down'],
    ['\x1b[5~', 'pageup'],
    ['\x1b[6~', 'pagedown'],
    ['\x1b[H', 'home'],
    ['\x1b[1~', 'home'],
    ['\x1b[7~', 'home'],
    ['\x1bOH', 'home'],
    ['\x1b[F', 'end'],
    ['\x1b[4~', 'end'],
    ['\x1b[8~', 'end'],
    ['\x1bOF', 'end'],
    ['\r', 'enter'],
    ['\n', 'enter'],
    ['\x7f', 'backspace'],
    ['\b', 'backspace'],
    ['\x1b', 'escape'],
    ['\x03', 'ctrl-c'],
    ['\t', 'tab'],
  ])('reads %j as %s', (input, name) => {
    expect(names(input)).toEqual([name])
  })

  it('reads several keys in one chunk, in order', () => {
    expect(names('\x1b[A\x1b[Bq/web\r')).toEqual(['up', 'down', "'q'", "'/'", "'w'", "'e'", "'b'", 'enter'])
  })

  it('reads bytes as UTF-8, including characters outside the BMP', () => {
    expect(names(Buffer.from('é😀'))).toEqual(["'é'", "'😀'"])
  })

  it('swallows unknown and modified escape sequences instead of typing their bytes', () => {
    expect(names('\x1b[1;5A')).toEqual(['up'])
    expect(names('\x1b[200~x')).toEqual(["'x'"])
    expect(names('\x1b[15~')).toEqual([])
    expect(names('\x1b[')).toEqual([])
  })

  it('ignores other control characters', () => {
    expect(names('\x00\x01\x1f\u0085a')).toEqual(["'a'"])
  })

  it('treats a double escape as escape followed by whatever comes next', () => {
    expect(names('\x1b\x1b[A')).toEqual(['escape', 'up'])
  })
})
