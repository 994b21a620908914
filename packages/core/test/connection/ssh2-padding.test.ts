/**
 * kay installs ssh2 with a patch (patches/ssh2@1.17.0.patch, docs/adr/0005-ssh2-padding-pool.md): the random
 * padding of each outgoing SSH packet comes from a pool of CSPRNG bytes, refilled when spent, instead of one
 * `randomFillSync` call per packet. These tests pin that the installed ssh2 carries the patch (the tick path's
 * client CPU depends on it) and that the padding stays what RFC 4253 asks for: random bytes, none handed out twice,
 * also across pool refills.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'

const require = createRequire(import.meta.url)
const cryptoPath = require.resolve('ssh2/lib/protocol/crypto.js')
const { NullCipher } = require(cryptoPath) as {
  NullCipher: new (seqno: number, onWrite: (p: Buffer) => void) => { allocPacket(payloadLen: number): Buffer }
}

describe('ssh2 packet padding (patched)', () => {
  it('the installed ssh2 takes its padding from the pool', () => {
    const src = readFileSync(cryptoPath, 'utf8')
    expect(src).toContain('function fillPadding(')
    expect(src).not.toMatch(/randomFillSync\(packet,/)
  })

  it('pads with fresh random bytes, never the same bytes twice, across pool refills', () => {
    const cipher = new NullCipher(0, () => {})
    const seen = new Set<string>()
    let bytes = 0
    // Payloads of 0–23 bytes get 4–11 bytes of padding; 12,000 packets spend the 16 KiB pool five times over.
    const packets = 12_000
    for (let i = 0; i < packets; i++) {
      const payloadLen = i % 24
      const p = cipher.allocPacket(payloadLen)
      const pad = p.subarray(5 + payloadLen)
      expect(pad.length).toBe(p[4])
      expect(pad.length).toBeGreaterThanOrEqual(4)
      bytes += pad.length
      if (pad.length >= 8) seen.add(pad.toString('hex'))
      else seen.add(`${i}`)
    }
    expect(bytes).toBeGreaterThan(5 * 16 * 1024)
    // A padding of 8 random bytes or more repeating means bytes were handed out twice (or are not random).
    expect(seen.size).toBe(packets)
  })
})
