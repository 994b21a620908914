/**
 * Exposition text written as bytes: a {@link ByteWriter} per metric family, and the {@link NodeSink} a shard keeps
 * them in. A serving shard writes a few hundred series lines per host per tick; building them as JavaScript strings
 * (and encoding them afterwards) cost about five times what writing their bytes in place does (ADR 0011), so the
 * series go straight into per-family buffers that are kept from tick to tick.
 */

/** A growing byte buffer for ASCII exposition text, with the few writes series lines need. */
export class ByteWriter {
  #buf: Uint8Array
  /** Bytes written. */
  len = 0
  /** Rollback bookkeeping for {@link NodeSink}: the length at the start of the sink's current section. */
  markLen = 0
  markGen = -1
  /** Scratch for the digits of a number, least significant first. */
  readonly #digits = new Uint8Array(24)

  constructor(size = 1024) {
    this.#buf = new Uint8Array(size)
  }

  /** What has been written (a view, valid until the next write). */
  get bytes(): Uint8Array {
    return this.#buf.subarray(0, this.len)
  }

  #room(n: number): void {
    if (this.len + n <= this.#buf.length) return
    let size = this.#buf.length * 2
    while (size < this.len + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.#buf.subarray(0, this.len))
    this.#buf = next
  }

  byte(c: number): void {
    this.#room(1)
    this.#buf[this.len++] = c
  }

  /** A string known to be ASCII (names, fixed label text). */
  ascii(s: string): void {
    const n = s.length
    this.#room(n)
    const b = this.#buf
    let o = this.len
    for (let i = 0; i < n; i++) b[o++] = s.charCodeAt(i)
    this.len = o
  }

  /** `s[a, b)`, ASCII (digits and the like, already checked by the caller). */
  slice(s: string, a: number, b: number): void {
    this.#room(b - a)
    const buf = this.#buf
    let o = this.len
    for (let i = a; i < b; i++) buf[o++] = s.charCodeAt(i)
    this.len = o
  }

  copy(bytes: Uint8Array): void {
    this.#room(bytes.length)
    this.#buf.set(bytes, this.len)
    this.len += bytes.length
  }

  /** A label value as the exposition format wants it: `\`, `"` and newline escaped, UTF-8. */
  label(v: string): void {
    const n = v.length
    this.#room(n * 2)
    const b = this.#buf
    let o = this.len
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i)
      if (c >= 0x80) {
        // Not ASCII: the rest through the encoder (rare: device and mount names, os-release values).
        this.len = o
        this.#utf8Escaped(v.slice(i))
        return
      }
      if (c === 92 || c === 34) {
        b[o++] = 92
        b[o++] = c
      } else if (c === 10) {
        b[o++] = 92
        b[o++] = 110
      } else b[o++] = c
    }
    this.len = o
  }

  #utf8Escaped(v: string): void {
    const e = Buffer.from(
      v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`)),
      'utf8',
    )
    this.copy(e)
  }

  /** A non-negative integer (below 2^64; exact below 2^53). */
  uint(n: number): void {
    if (n < 10) {
      this.byte(48 + n)
      return
    }
    if (n >= 9007199254740992) {
      this.ascii(String(n))
      return
    }
    const digits = this.#digits
    let k = 0
    while (n > 0) {
      const q = Math.floor(n / 10)
      digits[k++] = 48 + (n - q * 10)
      n = q
    }
    this.#room(k)
    const b = this.#buf
    let o = this.len
    while (k > 0) b[o++] = digits[--k]!
    this.len = o
  }

  /** `n / 10^d` for a non-negative integer `n`, as a decimal without trailing zeros (`74721, 2` → `747.21`). */
  fixed(n: number, d: number): void {
    if (n >= 9007199254740992) {
      this.ascii(String(n / 10 ** d))
      return
    }
    const digits = this.#digits
    let k = 0
    do {
      const q = Math.floor(n / 10)
      digits[k++] = 48 + (n - q * 10)
      n = q
    } while (n > 0 || k <= d)
    // The first d digits (least significant first) are the fraction; its trailing zeros are left out.
    let low = 0
    while (low < d && digits[low] === 48) low++
    this.#room(k + 1)
    const b = this.#buf
    let o = this.len
    for (let i = k - 1; i >= d; i--) b[o++] = digits[i]!
    if (low < d) {
      b[o++] = 46
      for (let i = d - 1; i >= low; i--) b[o++] = digits[i]!
    }
    this.len = o
  }
}

/**
 * Where a shard gathers its hosts' series for one tick, per family (packed.ts copies them into the tick's one
 * transferable buffer). A family's writer is made on first use, up to `maxFamilies`; series for further families
 * are dropped and counted in `droppedFamilies`. The writers are kept for the next tick (emptied by `take`), so a
 * steady shard allocates nothing per tick here. A host writes a section between `begin` and its end; `rollback`
 * undoes what the section wrote (a section that turned out not to parse).
 */
export class NodeSink {
  readonly #index = new Map<string, number>()
  #names: string[] = []
  #writers: ByteWriter[] = []
  readonly #maxFamilies: number
  #gen = 0
  readonly #touched: ByteWriter[] = []
  droppedFamilies = 0
  /** Writes to a refused family go here and are thrown away. */
  readonly #void = new ByteWriter(64)

  constructor(maxFamilies = 1024) {
    this.#maxFamilies = maxFamilies
  }

  /** The writer of `family` (a scratch one, emptied at once, when the sink holds its maximum of families). */
  family(family: string): ByteWriter {
    let i = this.#index.get(family)
    if (i === undefined) {
      if (this.#names.length >= this.#maxFamilies) {
        this.droppedFamilies++
        this.#void.len = 0
        return this.#void
      }
      i = this.#names.length
      this.#index.set(family, i)
      this.#names.push(family)
      this.#writers.push(new ByteWriter())
    }
    const w = this.#writers[i]!
    if (w.markGen !== this.#gen) {
      w.markGen = this.#gen
      w.markLen = w.len
      this.#touched.push(w)
    }
    return w
  }

  /** Starts a section: `rollback` undoes what is written from here on. */
  begin(): void {
    this.#gen++
    this.#touched.length = 0
  }

  rollback(): void {
    for (const w of this.#touched) w.len = w.markLen
    this.#touched.length = 0
  }

  /**
   * The tick's series: families in first-use order and their bytes (views on the writers, valid until the next
   * write: copy them before writing again), families without series left out. The writers are emptied.
   */
  take(): { families: string[]; parts: Uint8Array[] } {
    const families: string[] = []
    const parts: Uint8Array[] = []
    const writers: ByteWriter[] = []
    for (let i = 0; i < this.#names.length; i++) {
      const w = this.#writers[i]!
      // A family no host wrote this tick is forgotten (its writer with it): families made from what hosts send
      // (meminfo and vmstat fields) cannot pile up tick after tick.
      if (w.len === 0) continue
      families.push(this.#names[i]!)
      parts.push(w.bytes)
      writers.push(w)
      w.len = 0
    }
    if (writers.length !== this.#writers.length) {
      this.#names = families.slice()
      this.#writers = writers
      this.#index.clear()
      for (let i = 0; i < families.length; i++) this.#index.set(families[i]!, i)
    }
    this.begin()
    return { families, parts }
  }
}
