import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  CLUSTER_SALT,
  fnv1a32,
  hostHash,
  inShard,
  MAX_SHARD_COUNT,
  parseShardSpec,
  shardOf,
  shardWeight,
  THREAD_SALT,
} from '../src/hash.js'

/** The reference: FNV-1a over TextEncoder's bytes. */
function fnvReference(s: string): number {
  let h = 0x811c9dc5
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193)
  return h >>> 0
}

// A mixed fleet: sequential names (the hard case for weak hashes), IPs and user@host:port ids.
const HOSTS: string[] = []
for (let i = 0; i < 6000; i++) HOSTS.push(`web${String(i).padStart(5, '0')}.example.com`)
for (let i = 0; i < 3000; i++) HOSTS.push(`10.${(i >> 8) & 255}.${i & 255}.${(i * 7) & 255}`)
for (let i = 0; i < 1000; i++) HOSTS.push(`deploy@db-${i}.prod:22${i % 10}`)

describe('fnv1a32', () => {
  it('matches the published FNV-1a 32-bit test vectors', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5)
    expect(fnv1a32('a')).toBe(0xe40c292c)
    expect(fnv1a32('foobar')).toBe(0xbf9cf968)
  })

  it('hashes the UTF-8 bytes, exactly as TextEncoder encodes them (lone surrogates included)', () => {
    for (const s of ['é', '日本', '😀', 'a\uD800b', '\uDC00', 'x\uD83D', 'hôte-ünïcode']) {
      expect(fnv1a32(s)).toBe(fnvReference(s))
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => fnv1a32(s) === fnvReference(s)),
      { numRuns: 500 },
    )
    fc.assert(
      fc.property(
        fc.string({ unit: fc.integer({ min: 0xd700, max: 0xe000 }).map((c) => String.fromCharCode(c)) }),
        (s) => {
          return fnv1a32(s) === fnvReference(s)
        },
      ),
      { numRuns: 500 },
    )
  })
})

describe('shard assignment', () => {
  it('is pinned to known values (changing them re-shards every fleet)', () => {
    expect(hostHash('web001')).toBe(0x08dd9558)
    expect(hostHash('db-17.prod.example.com')).toBe(0x9562fdae)
    expect(shardWeight(0, 0)).toBe(0xaa3e5b61)
    expect(shardWeight(0x811c9dc5, 3)).toBe(0xfdbf8ca0)
    expect(shardWeight(0x811c9dc5, 3, CLUSTER_SALT)).toBe(0x37a4b452)
    const pinned: Array<[string, number, number, number]> = [
      // host, shardOf(h, 4), shardOf(h, 8), shardOf(h, 4, CLUSTER_SALT)
      ['web001', 2, 2, 1],
      ['web002', 1, 1, 1],
      ['db-17.prod.example.com', 3, 3, 1],
      ['10.0.0.1', 0, 6, 1],
      ['deploy@bastion:2222', 1, 1, 3],
      ['hôte-ünïcode', 2, 5, 2],
    ]
    for (const [host, four, eight, cluster] of pinned) {
      expect([shardOf(host, 4), shardOf(host, 8), shardOf(host, 4, CLUSTER_SALT)]).toEqual([four, eight, cluster])
      expect(inShard(host, cluster, 4)).toBe(true)
    }
  })

  it('puts every host in exactly one shard, for 1 to 8 shards', () => {
    for (let n = 1; n <= 8; n++) {
      for (const host of HOSTS) {
        const s = shardOf(host, n)
        if (!(s >= 0 && s < n)) expect.fail(`${host} got shard ${s} of ${n}`)
        let owners = 0
        for (let i = 0; i < n; i++) if (inShard(host, i, n)) owners++
        if (owners !== 1) expect.fail(`${host} is in ${owners} of ${n} cluster shards`)
      }
    }
    expect(shardOf(HOSTS[0]!, 1)).toBe(0)
  })

  it('balances hosts within 12% of the mean for 2 to 8 shards', () => {
    for (const salt of [THREAD_SALT, CLUSTER_SALT]) {
      for (let n = 2; n <= 8; n++) {
        const counts = new Array<number>(n).fill(0)
        for (const host of HOSTS) counts[shardOf(host, n, salt)]! += 1
        const mean = HOSTS.length / n
        for (const c of counts) expect(Math.abs(c - mean) / mean).toBeLessThan(0.12)
      }
    }
  })

  it('moves about 1/(N+1) of hosts when growing from N to N+1 shards, all of them to the new shard', () => {
    for (let n = 1; n <= 7; n++) {
      let moved = 0
      for (const host of HOSTS) {
        const before = shardOf(host, n)
        const after = shardOf(host, n + 1)
        if (before !== after) {
          moved++
          if (after !== n) expect.fail(`${host} moved from shard ${before} to old shard ${after}`)
        }
      }
      expect(Math.abs(moved / HOSTS.length - 1 / (n + 1))).toBeLessThan(0.02)
    }
  })

  it('splits one collector’s hosts evenly over its threads (the two levels are independent)', () => {
    const kept = HOSTS.filter((h) => inShard(h, 1, 4))
    const counts = [0, 0, 0, 0]
    for (const host of kept) counts[shardOf(host, 4)]! += 1
    for (const c of counts) expect(Math.abs(c - kept.length / 4) / (kept.length / 4)).toBeLessThan(0.15)
  })

  it('rejects a bad shard count or index with KAY_CONFIG', () => {
    for (const n of [0, -1, 1.5, Number.NaN, MAX_SHARD_COUNT + 1]) {
      expect(() => shardOf('h', n)).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
    }
    for (const i of [-1, 4, 0.5]) {
      expect(() => inShard('h', i, 4)).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
    }
  })
})

describe('parseShardSpec', () => {
  it('parses a 1-based i/N into a 0-based index', () => {
    expect(parseShardSpec('1/1')).toEqual({ index: 0, count: 1 })
    expect(parseShardSpec('2/4')).toEqual({ index: 1, count: 4 })
    expect(parseShardSpec('4/4')).toEqual({ index: 3, count: 4 })
    expect(parseShardSpec(' 3 / 8 ')).toEqual({ index: 2, count: 8 })
  })

  it('rejects anything else with KAY_CONFIG, naming the bad input', () => {
    for (const bad of ['', '2', '0/4', '5/4', '1/0', 'a/b', '1/4/2', '-1/4', '+1/4', '1.5/4', '/4', '1/', '1/65536']) {
      expect(() => parseShardSpec(bad)).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
    }
    expect(() => parseShardSpec('5/4')).toThrow(/'5\/4'/)
  })
})
