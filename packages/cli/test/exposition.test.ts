/**
 * The exposition `kay serve` answers: its two formats, how the shards' node chunks are laid out in it, and the
 * content negotiation. Both formats are checked against real parsers in e2e: promtool (text) and Prometheus'
 * scraper (OpenMetrics, which it asks for first) in serve.test.ts and node-exporter.sshd.test.ts.
 */
import type { NodeChunk } from '@kay/core'
import { describe, expect, it } from 'vitest'
import { CONTENT_TYPES, Exposition, formatValue, negotiate } from '../src/serve/exposition.js'

function chunk(parts: Array<[string, string]>): NodeChunk {
  const families = parts.map(([f]) => f)
  const texts = parts.map(([, t]) => Buffer.from(t))
  const bytes = new Uint8Array(Buffer.concat(texts))
  let at = 0
  const ends = Uint32Array.from(texts, (t) => (at += t.length))
  return { families, bytes, ends }
}

const text = (x: Exposition, f: 'text' | 'openmetrics'): string => {
  const { chunks, bytes } = x.render(f)
  const s = Buffer.concat(chunks).toString('utf8')
  expect(Buffer.byteLength(s)).toBe(bytes)
  return s
}

describe('Exposition', () => {
  const x = new Exposition()
  x.family({ name: 'kay_host_up', type: 'gauge', help: 'up' }, 'kay_host_up{instance="a"} 1\n')
  x.family({ name: 'kay_empty', type: 'gauge', help: 'nothing' }, '')
  x.nodeChunks([
    chunk([
      ['node_vmstat_pgfault', 'node_vmstat_pgfault{instance="a"} 5\n'],
      ['node_cpu_seconds_total', 'node_cpu_seconds_total{instance="a",cpu="0",mode="idle"} 1\n'],
    ]),
    chunk([['node_cpu_seconds_total', 'node_cpu_seconds_total{instance="b",cpu="0",mode="idle"} 2\n']]),
  ])

  it('writes Prometheus text: HELP and TYPE once per family, the shards of a family together, families sorted', () => {
    expect(text(x, 'text')).toBe(
      '# HELP kay_host_up up\n# TYPE kay_host_up gauge\nkay_host_up{instance="a"} 1\n' +
        '# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\n' +
        'node_cpu_seconds_total{instance="a",cpu="0",mode="idle"} 1\nnode_cpu_seconds_total{instance="b",cpu="0",mode="idle"} 2\n' +
        '# HELP node_vmstat_pgfault /proc/vmstat information field pgfault.\n# TYPE node_vmstat_pgfault untyped\n' +
        'node_vmstat_pgfault{instance="a"} 5\n',
    )
  })

  it('writes OpenMetrics: counter families named without _total, unknown for untyped, # EOF last', () => {
    const om = text(x, 'openmetrics')
    expect(om).toContain('# TYPE node_cpu_seconds counter\nnode_cpu_seconds_total{instance="a"')
    expect(om).toContain('# HELP node_cpu_seconds Seconds the CPUs spent in each mode.\n')
    expect(om).toContain('# TYPE node_vmstat_pgfault unknown\n')
    expect(om.endsWith('node_vmstat_pgfault{instance="a"} 5\n# EOF\n')).toBe(true)
    // The series themselves are the same bytes in both formats.
    const series = (s: string) => s.split('\n').filter((l) => l !== '' && !l.startsWith('#'))
    expect(series(om)).toEqual(series(text(x, 'text')))
  })

  it('leaves out a family name kay does not export, and empty families', () => {
    const y = new Exposition()
    y.nodeChunks([chunk([['node_evil', 'node_evil 1\n']])])
    y.family({ name: 'kay_x', type: 'gauge', help: 'x' }, '')
    expect(text(y, 'text')).toBe('')
  })
})

describe('negotiate', () => {
  it('answers OpenMetrics when the scraper asks for it (as Prometheus does), text otherwise', () => {
    const prometheus =
      'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
    expect(negotiate(prometheus)).toBe('openmetrics')
    expect(negotiate('text/plain')).toBe('text')
    expect(negotiate(undefined)).toBe('text')
    expect(CONTENT_TYPES.openmetrics).toMatch(/^application\/openmetrics-text; version=1\.0\.0/)
  })
})

describe('formatValue', () => {
  it('spells infinities and NaN as the formats do', () => {
    expect([
      formatValue(1.5),
      formatValue(Number.POSITIVE_INFINITY),
      formatValue(-Infinity),
      formatValue(Number.NaN),
    ]).toEqual(['1.5', '+Inf', '-Inf', 'NaN'])
  })
})
