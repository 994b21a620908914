/**
 * The exposition `kay serve` answers, built once per tick and kept as a list of buffers: the node_exporter series
 * arrive from the shards already as text grouped by family (one buffer per shard per tick), so a family's body is
 * its shards' slices of those buffers, never copied or re-parsed; kay's own families are rendered here. The two
 * formats differ only in their metadata lines: Prometheus text 0.0.4, and OpenMetrics 1.0 (counter families named
 * without `_total`, `unknown` for untyped, `# EOF` at the end), which Prometheus asks for first.
 */
import type { NodeChunk } from '@kay/core'
import { nodeFamilyMeta } from '@kay/core/internal'

type FamilyType = 'counter' | 'gauge' | 'untyped' | 'histogram'
export type ExpositionFormat = 'text' | 'openmetrics'

export const CONTENT_TYPES: Record<ExpositionFormat, string> = {
  text: 'text/plain; version=0.0.4; charset=utf-8',
  openmetrics: 'application/openmetrics-text; version=1.0.0; charset=utf-8',
}

/** The format to answer a request with: OpenMetrics when its Accept header names it, text otherwise. */
export function negotiate(accept: string | undefined): ExpositionFormat {
  return accept?.includes('application/openmetrics-text') ? 'openmetrics' : 'text'
}

export interface FamilyMeta {
  name: string
  type: FamilyType
  help: string
}

interface Part {
  meta: FamilyMeta
  body: Uint8Array[]
}

function escapeHelp(help: string, format: ExpositionFormat): string {
  const h = help.replaceAll('\\', '\\\\').replaceAll('\n', '\\n')
  return format === 'openmetrics' ? h.replaceAll('"', '\\"') : h
}

function header(meta: FamilyMeta, format: ExpositionFormat): string {
  if (format === 'text')
    return `# HELP ${meta.name} ${escapeHelp(meta.help, format)}\n# TYPE ${meta.name} ${meta.type}\n`
  const name = meta.type === 'counter' && meta.name.endsWith('_total') ? meta.name.slice(0, -6) : meta.name
  const type = meta.type === 'untyped' ? 'unknown' : meta.type
  return `# HELP ${name} ${escapeHelp(meta.help, format)}\n# TYPE ${name} ${type}\n`
}

/** One tick's exposition: families in order, each with its series as buffers. */
export class Exposition {
  readonly #parts: Part[] = []
  readonly #rendered = new Map<ExpositionFormat, { chunks: Uint8Array[]; bytes: number }>()

  /** Adds a family with its series lines (text, each line ending in a newline). A family without series is left out. */
  family(meta: FamilyMeta, lines: string): void {
    if (lines !== '') this.#parts.push({ meta, body: [Buffer.from(lines)] })
  }

  /**
   * Adds the node_exporter families of the shards' chunks, sorted by name (as node_exporter sorts them), each with
   * its shards' slices. A family name that kay does not export is skipped (the shards' guard already refused it).
   */
  nodeChunks(chunks: readonly NodeChunk[]): void {
    const byFamily = new Map<string, Uint8Array[]>()
    for (const c of chunks) {
      let start = 0
      for (let i = 0; i < c.families.length; i++) {
        const end = c.ends[i]!
        if (end > start) {
          const name = c.families[i]!
          let list = byFamily.get(name)
          if (list === undefined) {
            list = []
            byFamily.set(name, list)
          }
          list.push(c.bytes.subarray(start, end))
        }
        start = end
      }
    }
    for (const name of [...byFamily.keys()].sort()) {
      const meta = nodeFamilyMeta(name)
      if (meta !== undefined) this.#parts.push({ meta: { name, ...meta }, body: byFamily.get(name)! })
    }
  }

  /** The exposition in `format`, as buffers to write in order, and their total size (made once per format). */
  render(format: ExpositionFormat): { chunks: Uint8Array[]; bytes: number } {
    const done = this.#rendered.get(format)
    if (done !== undefined) return done
    const chunks: Uint8Array[] = []
    let bytes = 0
    const push = (b: Uint8Array): void => {
      chunks.push(b)
      bytes += b.length
    }
    for (const p of this.#parts) {
      push(Buffer.from(header(p.meta, format)))
      for (const b of p.body) push(b)
    }
    if (format === 'openmetrics') push(Buffer.from('# EOF\n'))
    const out = { chunks, bytes }
    this.#rendered.set(format, out)
    return out
  }
}

/** A number as an exposition value (JavaScript's shortest round-trip form; infinities and NaN spelled out). */
export function formatValue(v: number): string {
  if (Number.isFinite(v)) return String(v)
  return Number.isNaN(v) ? 'NaN' : v > 0 ? '+Inf' : '-Inf'
}
