import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { type Frame, FrameDecoder } from '../../src/collection/index.js'
import { isKayError } from '../../src/errors.js'
import { syntheticFrame } from '../fixtures/proc/frames.js'

const TOKEN = '0123456789abcdef'
const OTHER = 'fedcba9876543210'
const body = syntheticFrame({ cpus: 2 })
const end = (seq: number, token = TOKEN) => `@@kay-end ${token} ${seq}\n`

function pushAll(d: FrameDecoder, chunks: Array<Buffer | string>): Frame[] {
  return chunks.flatMap((c) => d.push(c))
}

/** Splits `buf` at the given sorted cut positions. */
function cut(buf: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = []
  let prev = 0
  for (const c of cuts) {
    out.push(buf.subarray(prev, c))
    prev = c
  }
  out.push(buf.subarray(prev))
  return out
}

describe('FrameDecoder', () => {
  it('emits a frame whose body is everything before the end marker', () => {
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    expect(d.push(body + end(1))).toEqual([{ seq: 1, body }])
    expect(d.frames).toBe(1)
    expect(d.expected).toBeUndefined()
    expect(d.pendingBytes).toBe(0)
  })

  it('emits the same frame for a split at every byte position', () => {
    const wire = Buffer.from(`${body}${end(7)}`)
    for (let i = 0; i <= wire.length; i++) {
      const d = new FrameDecoder({ token: TOKEN })
      d.expect(7)
      expect(pushAll(d, cut(wire, [i]))).toEqual([{ seq: 7, body }])
    }
  })

  it('emits the same frames when fed one byte at a time', () => {
    const wire = Buffer.from(`${body}${end(1)}${body}${end(2)}`)
    const d = new FrameDecoder({ token: TOKEN })
    const frames: Frame[] = []
    d.expect(1)
    for (let i = 0; i < wire.length; i++) {
      for (const f of d.push(wire.subarray(i, i + 1))) {
        frames.push(f)
        d.expect(f.seq + 1)
      }
    }
    expect(frames).toEqual([
      { seq: 1, body },
      { seq: 2, body },
    ])
  })

  it('decodes the same frames and drop counts under any chunking of a messy stream', () => {
    const wire = Buffer.from(
      `banner\n${end(0, OTHER)}x @@kay-end ${TOKEN} 1\n${body}${end(1)}@@kay-e\n@@kay-end ${TOKEN}\n` +
        `caf\u00e9 \u{1f600}\n${end(1)}${body}${end(5)}@@kay-end ${TOKEN} ${'9'.repeat(200)}\ntail`,
    )
    const reference = new FrameDecoder({ token: TOKEN })
    reference.expect(1)
    const refFrames = reference.push(wire)
    expect(refFrames).toEqual([{ seq: 1, body: `x @@kay-end ${TOKEN} 1\n${body}` }])
    expect(reference.dropped).toEqual({ 'foreign-token': 1, 'stale-seq': 1, unexpected: 2 })
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat({ max: wire.length }), { maxLength: 40 }), (cuts) => {
        const d = new FrameDecoder({ token: TOKEN })
        d.expect(1)
        expect(
          pushAll(
            d,
            cut(
              wire,
              cuts.sort((a, b) => a - b),
            ),
          ),
        ).toEqual(refFrames)
        expect(d.dropped).toEqual(reference.dropped)
        expect(d.droppedBytes).toBe(reference.droppedBytes)
        expect(d.pendingBytes).toBe(reference.pendingBytes)
      }),
      { numRuns: 500 },
    )
  })

  it('drops the bytes before a marker that carries another token and counts them', () => {
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    const forged = `forged\n${end(1, OTHER)}`
    expect(d.push(forged + body + end(1))).toEqual([{ seq: 1, body }])
    expect(d.dropped['foreign-token']).toBe(1)
    expect(d.droppedBytes).toBe(Buffer.byteLength(forged))
  })

  it('drops a late frame for an earlier request as stale and delivers the current one', () => {
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    d.expect(2) // request 1 timed out; request 2 is in flight
    expect(d.push(`old\n${end(1)}new\n${end(2)}`)).toEqual([{ seq: 2, body: 'new\n' }])
    expect(d.dropped).toEqual({ 'foreign-token': 0, 'stale-seq': 1, unexpected: 0 })
  })

  it('drops a repeated frame for a request already answered as stale', () => {
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(3)
    expect(d.push(`a\n${end(3)}b\n${end(3)}`)).toEqual([{ seq: 3, body: 'a\n' }])
    expect(d.dropped['stale-seq']).toBe(1)
  })

  it('drops a frame nobody asked for as unexpected', () => {
    const d = new FrameDecoder({ token: TOKEN })
    expect(d.push(`a\n${end(0)}`)).toEqual([])
    d.expect(1)
    expect(d.push(`b\n${end(9)}c\n${end(1)}`)).toEqual([{ seq: 1, body: 'c\n' }])
    expect(d.dropped.unexpected).toBe(2)
  })

  it('delivers interleaved requests in order when each is expected before its frame completes', () => {
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    const first = d.push(`one\n${end(1)}tw`)
    d.expect(2)
    const second = d.push(`o\n${end(2)}`)
    expect([...first, ...second]).toEqual([
      { seq: 1, body: 'one\n' },
      { seq: 2, body: 'two\n' },
    ])
  })

  it('treats a marker that does not start a line, or is malformed or too long, as content', () => {
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    const content = `x${end(1)}@@kay-endless\n@@kay-end ${TOKEN} 1 extra\n@@kay-end ${TOKEN} ${'1'.repeat(130)}\n`
    const frames = d.push(content + end(1))
    expect(frames.length).toBe(1)
    expect(d.dropped.unexpected).toBe(1) // `1 extra` carries our token but no valid seq
    expect(frames[0]!.body).toBe(`@@kay-end ${TOKEN} ${'1'.repeat(130)}\n`)
  })

  it('reassembles a multi-byte character split across chunks', () => {
    const wire = Buffer.from(`h\u00e9llo \u{1f600}\n${end(1)}`)
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    expect(pushAll(d, cut(wire, [2, 9]))).toEqual([{ seq: 1, body: 'h\u00e9llo \u{1f600}\n' }])
  })

  it('fails with a StreamError on a frame larger than the cap, under any chunking, and stays failed', () => {
    const max = 64
    const ok = `${'a'.repeat(max - 1)}\n${end(1)}`
    const tooBig = `${'a'.repeat(max)}\n${end(1)}`
    const d0 = new FrameDecoder({ token: TOKEN, maxFrameBytes: max })
    d0.expect(1)
    expect(d0.push(ok).length).toBe(1)
    const wire = Buffer.from(tooBig)
    for (let i = 0; i <= wire.length; i++) {
      const d = new FrameDecoder({ token: TOKEN, maxFrameBytes: max })
      d.expect(1)
      let thrown: unknown
      try {
        pushAll(d, cut(wire, [i]))
      } catch (err) {
        thrown = err
      }
      expect(isKayError(thrown, 'KAY_STREAM_FAILED')).toBe(true)
      expect(() => d.push('more')).toThrow(/exceeds 64 bytes/)
    }
  })

  it('fails on garbage that never ends instead of buffering it without bound', () => {
    const d = new FrameDecoder({ token: TOKEN, maxFrameBytes: 1024 })
    d.expect(1)
    let err: unknown
    for (let i = 0; i < 100 && err === undefined; i++) {
      try {
        d.push('@@kay-e'.repeat(30))
      } catch (e) {
        err = e
      }
    }
    expect(isKayError(err, 'KAY_STREAM_FAILED')).toBe(true)
  })

  it('stays linear in the bytes when fed a large frame one byte at a time', () => {
    const line = '@@kay-en\n'
    const wire = Buffer.from(line.repeat(Math.floor(200_000 / line.length)) + end(1))
    const d = new FrameDecoder({ token: TOKEN })
    d.expect(1)
    const t0 = performance.now()
    let frames: Frame[] = []
    for (let i = 0; i < wire.length; i++) frames = frames.concat(d.push(wire.subarray(i, i + 1)))
    // Quadratic rescanning would take minutes here; linear takes well under a second.
    expect(performance.now() - t0).toBeLessThan(5000)
    expect(frames.length).toBe(1)
    expect(frames[0]!.body.length).toBe(wire.length - end(1).length)
  })

  it('refuses a token that could not appear in a marker and a negative seq', () => {
    expect(() => new FrameDecoder({ token: 'a b' })).toThrow(/token/)
    expect(() => new FrameDecoder({ token: TOKEN, maxFrameBytes: 0 })).toThrow(/maxFrameBytes/)
    expect(() => new FrameDecoder({ token: TOKEN }).expect(-1)).toThrow(/seq/)
  })
})
