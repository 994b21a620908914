/**
 * Cuts the byte stream of a `: kay-stream v1` channel into frames (docs/collection-protocol.md).
 *
 * A frame is everything up to an end marker line `@@kay-end <token> <seq>\n` that starts a line, carries this
 * channel's token and the seq of the request in flight. The decoder works on bytes, keeps only the current
 * frame's chunks (by reference) plus at most one partial marker line, and looks at each byte a bounded number of
 * times: `push` is O(chunk), whatever the chunking.
 */

import { ConfigError, type KayError, StreamError } from '../errors.js'

/** One decoded reply: the sections text (without the end marker line) for request `seq`. */
export interface Frame {
  seq: number
  body: string
}

/** Why bytes were discarded: a marker with another channel's token, an old seq, or a seq nobody asked for. */
export type DropReason = 'foreign-token' | 'stale-seq' | 'unexpected'

export interface FrameDecoderOptions {
  /** This channel's token (the one in its `: kay-stream v1 <flavour> <token>;` command). */
  token: string
  /** A frame (or the garbage before a dropped marker) larger than this is a {@link StreamError}. Default 256 KiB. */
  maxFrameBytes?: number
}

const DEFAULT_MAX_FRAME_BYTES = 256 * 1024

const MARKER = Buffer.from('@@kay-end ', 'latin1')
const NL_MARKER = Buffer.from('\n@@kay-end ', 'latin1')
/** Longer than any real marker line (10 + token ≤ 64 + 1 + seq ≤ 16 digits); a longer line is content. */
const MAX_MARKER_LINE = 128
const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/
const NL = 10
const SPACE = 32

/**
 * Incremental decoder for one stream channel. Call {@link expect} with the seq of each request before (or right
 * after) writing it, feed every stdout chunk to {@link push}, and use the frames it returns. After `push` throws
 * a {@link StreamError} (oversize frame) the decoder stays failed: close the stream.
 *
 * Pushed Buffers are kept by reference until their frame completes: do not reuse them.
 */
export class FrameDecoder {
  readonly token: string
  readonly maxFrameBytes: number
  /** Markers dropped, by reason. */
  readonly dropped: Record<DropReason, number> = { 'foreign-token': 0, 'stale-seq': 0, unexpected: 0 }
  /** Bytes discarded with dropped markers (content and marker line). */
  droppedBytes = 0
  /** Frames delivered. */
  frames = 0

  readonly #tokenBytes: Buffer
  #expected: number | undefined
  #highest = -1
  #parts: Buffer[] = []
  #partsBytes = 0
  /** A partial line at the end of the last chunk that is (or may become) a marker line. */
  #carry: Buffer | undefined
  /** Whether the next pushed byte starts a line. */
  #atLineStart = true
  #failed: KayError | undefined

  constructor(opts: FrameDecoderOptions) {
    const { token, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES } = opts
    if (typeof token !== 'string' || !TOKEN_RE.test(token)) {
      throw new ConfigError('stream token must be 1-64 characters of [A-Za-z0-9_-]')
    }
    if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1) {
      throw new ConfigError(`maxFrameBytes must be a positive integer, got ${maxFrameBytes}`)
    }
    this.token = token
    this.maxFrameBytes = maxFrameBytes
    // Its own memory, not a slice of Buffer's shared 8 KiB pool: a decoder lives as long as its stream, and one
    // long-lived slice keeps its whole slab (and every short-lived slice's bytes in it) alive.
    this.#tokenBytes = Buffer.allocUnsafeSlow(token.length)
    this.#tokenBytes.write(token, 'latin1')
  }

  /** The seq of the request now in flight. Earlier seqs become stale. */
  expect(seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 0) throw new ConfigError(`seq must be a non-negative integer, got ${seq}`)
    this.#expected = seq
    if (seq > this.#highest) this.#highest = seq
  }

  /** The seq awaited, if any (cleared when its frame is delivered). */
  get expected(): number | undefined {
    return this.#expected
  }

  /** Bytes buffered for the frame under way. */
  get pendingBytes(): number {
    return this.#partsBytes + (this.#carry?.length ?? 0)
  }

  /** Feeds one chunk of the channel's stdout; returns the frames it completed (usually zero or one). */
  push(chunk: Buffer | string): Frame[] {
    if (this.#failed) throw this.#failed
    let t = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk
    const lineStartAtZero = this.#atLineStart
    if (this.#carry !== undefined) {
      // The carry is at most MAX_MARKER_LINE bytes, so this copy keeps push O(chunk).
      t = Buffer.concat([this.#carry, t])
      this.#carry = undefined
    }
    const frames: Frame[] = []
    let start = 0
    let p = lineStartAtZero && sameBytes(t, 0, MARKER) ? 0 : nextMarker(t, 0)
    while (p !== -1) {
      const e = t.indexOf(NL, p)
      if (e === -1) {
        if (t.length - p <= MAX_MARKER_LINE) {
          this.#commit(t, start, p)
          this.#carry = Buffer.from(t.subarray(p))
          this.#atLineStart = true
          return frames
        }
        break // too long to be a marker: content, and no line follows in this chunk
      }
      if (e - p > MAX_MARKER_LINE) {
        p = nextMarker(t, e)
        continue
      }
      this.#marker(t, start, p, e, frames)
      start = e + 1
      if (start === t.length) {
        // The usual case: the chunk ends with the marker line. Nothing is left to search or to buffer.
        this.#atLineStart = true
        return frames
      }
      p = nextMarker(t, e)
    }
    this.#tail(t, start, lineStartAtZero)
    return frames
  }

  /** Handles the complete marker line t[p..e] ending the content t[start..p] (after the buffered parts). */
  #marker(t: Buffer, start: number, p: number, e: number, frames: Frame[]): void {
    const tokStart = p + MARKER.length
    const tokLen = this.#tokenBytes.length
    const tokEnd = tokStart + tokLen
    const ours = tokEnd <= e && (tokEnd === e || t[tokEnd] === SPACE) && sameBytes(t, tokStart, this.#tokenBytes)
    const bodyBytes = this.#partsBytes + (p - start)
    if (bodyBytes > this.maxFrameBytes) this.#fail(bodyBytes)
    if (!ours) {
      this.#drop('foreign-token', start, e)
      return
    }
    const seq = parseSeq(t, tokEnd + 1, e)
    if (seq !== -1 && seq === this.#expected) {
      let body: string
      if (this.#parts.length === 0) body = t.toString('utf8', start, p)
      else {
        this.#parts.push(t.subarray(start, p))
        body = Buffer.concat(this.#parts, bodyBytes).toString('utf8')
      }
      this.#parts = []
      this.#partsBytes = 0
      this.#expected = undefined
      this.frames++
      frames.push({ seq, body })
      return
    }
    this.#drop(seq !== -1 && seq <= this.#highest ? 'stale-seq' : 'unexpected', start, e)
  }

  #drop(reason: DropReason, start: number, e: number): void {
    this.dropped[reason]++
    this.droppedBytes += this.#partsBytes + (e + 1 - start)
    this.#parts = []
    this.#partsBytes = 0
  }

  /** The rest of a chunk after its last marker: content, except a last partial line that may be a marker. */
  #tail(t: Buffer, start: number, lineStartAtZero: boolean): void {
    const nl = t.lastIndexOf(NL)
    const ts = nl + 1
    const tailLen = t.length - ts
    const tailAtLineStart = ts > 0 || lineStartAtZero
    if (tailLen === 0) {
      this.#commit(t, start, t.length)
      this.#atLineStart = tailAtLineStart
      return
    }
    if (ts >= start && tailAtLineStart && couldBeMarker(t, ts)) {
      this.#commit(t, start, ts)
      this.#carry = Buffer.from(t.subarray(ts))
      this.#atLineStart = true
      return
    }
    this.#commit(t, start, t.length)
    this.#atLineStart = false
  }

  #commit(t: Buffer, from: number, to: number): void {
    if (to <= from) return
    this.#parts.push(t.subarray(from, to))
    this.#partsBytes += to - from
    if (this.#partsBytes > this.maxFrameBytes) this.#fail(this.#partsBytes)
  }

  #fail(bytes: number): never {
    this.#parts = []
    this.#partsBytes = 0
    this.#carry = undefined
    this.#failed = new StreamError(`stream frame exceeds ${this.maxFrameBytes} bytes (${bytes} buffered)`, {
      details: { maxFrameBytes: this.maxFrameBytes },
    })
    throw this.#failed
  }
}

/** t[at, at + b.length) equals b (b is short: a JS loop is cheaper than a call into Buffer.compare). */
function sameBytes(t: Buffer, at: number, b: Buffer): boolean {
  if (t.length - at < b.length) return false
  for (let i = 0; i < b.length; i++) if (t[at + i] !== b[i]) return false
  return true
}

/** The next marker start at or after `from` that follows a newline (`from` itself may be that newline). */
function nextMarker(t: Buffer, from: number): number {
  const r = t.indexOf(NL_MARKER, from)
  return r === -1 ? -1 : r + 1
}

/** A trailing partial line that is a prefix of `@@kay-end ` or a short line starting with it. */
function couldBeMarker(t: Buffer, at: number): boolean {
  const n = t.length - at
  if (n >= MARKER.length) return n <= MAX_MARKER_LINE && sameBytes(t, at, MARKER)
  return t.compare(MARKER, 0, n, at, t.length) === 0
}

/** 1–16 decimal digits spanning t[from..to) exactly, or -1. */
function parseSeq(t: Buffer, from: number, to: number): number {
  if (to <= from || to - from > 16) return -1
  let n = 0
  for (let i = from; i < to; i++) {
    const d = t[i]! - 48
    if (d < 0 || d > 9) return -1
    n = n * 10 + d
  }
  return n <= Number.MAX_SAFE_INTEGER ? n : -1
}
