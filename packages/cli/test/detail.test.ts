import { describe, expect, it } from 'vitest'
import { renderDetail } from '../src/ui/detail.js'
import { stripAnsi } from '../src/ui/format.js'
import { detail, readyRow } from './support/fixtures.js'

describe('renderDetail', () => {
  it('shows the header, per-core bars, processes, filesystems and interfaces', () => {
    const lines = renderDetail('web01', detail(), { width: 120, height: 60, color: false, status: readyRow('web01') })
    const text = lines.join('\n')
    expect(lines[0]).toBe('web01 — ready')
    expect(text).toMatch(/up 3d4h · load 0\.42 0\.30 0\.25 · 8 cpus · cpu 12\.5% · rtt 0\.8ms/)
    expect(text).toMatch(/^mem \[\|+ +\] +37\.5% 6\.0G\/16G$/m)
    for (let i = 0; i < 8; i++) expect(text).toMatch(new RegExp(`cpu${i} \\[`))
    expect(text).toMatch(/cpu5 \[\|+\] 100\.0/)
    expect(text).toContain('PROCESSES')
    expect(text).toMatch(/ 1000 root +50\.0 +0\.0 +9\.8M proc-0/)
    expect(text).toMatch(/^\/ +95G +39G +41\.0 \/dev\/sda1$/m)
    expect(text).toMatch(/^eth0 +146K +20K +118M +9\.4M$/m)
    expect(lines.at(-1)).toBe('Esc back · q quit')
    expect(text).not.toContain('\x1b')
  })

  it('fits any size: never taller or wider than asked, keeping the footer', () => {
    for (const [width, height] of [
      [40, 10],
      [60, 20],
      [80, 24],
      [200, 50],
      [20, 3],
    ] as const) {
      const lines = renderDetail('web01', detail(), { width, height, color: true, status: readyRow('web01') })
      expect(lines.length).toBeLessThanOrEqual(height)
      for (const l of lines) expect(Array.from(stripAnsi(l)).length).toBeLessThanOrEqual(width)
      expect(lines.at(-1)).toBe('Esc back · q quit')
    }
  })

  it('shrinks the process list first, saying how many are shown', () => {
    const lines = renderDetail('web01', detail(), { width: 100, height: 24, color: false })
    expect(lines).toHaveLength(24)
    expect(lines.join('\n')).toMatch(/PROCESSES \(\d+ of 20\)/)
    expect(lines.join('\n')).toContain('FILESYSTEM')
  })

  it('says so when there is no data yet, with the last error for a host that is down', () => {
    const lines = renderDetail('web9', undefined, {
      width: 80,
      height: 10,
      color: false,
      status: {
        id: 'web9',
        state: 'quarantined',
        lastError: { code: 'KAY_HOST_KEY_MISMATCH', message: 'key changed' },
      },
    })
    expect(lines).toEqual([
      'web9 — key mismatch',
      'last error: KAY_HOST_KEY_MISMATCH: key changed',
      'no data yet for this host',
      '',
      'Esc back · q quit',
    ])
  })

  it('neutralises control characters in remote-supplied text', () => {
    const d = detail({ processes: [{ pid: 1, user: 'root', cpuPct: 1, memPct: 1, rssKb: 1, command: 'evil\x1b[2Jx' }] })
    const text = renderDetail('h', d, { width: 100, height: 40, color: false }).join('\n')
    expect(text).not.toContain('\x1b')
    expect(text).toContain('evil [2Jx')
  })
})
