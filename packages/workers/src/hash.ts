/**
 * Stable host → shard assignment, shared by the two levels of sharding:
 *
 * - threads: the supervisor places each host on worker thread `shardOf(hostId, threads)`;
 * - collectors: `kay --shard i/N` keeps only hosts with `inShard(hostId, i - 1, N)`.
 *
 * Both use rendezvous (highest random weight) hashing: every shard draws a pseudo-random weight for the
 * host and the highest wins. Growing from N to N+1 shards moves only the hosts the new shard wins, about
 * 1/(N+1) of them, and nothing moves between the old shards (a plain `hash % N` would move ~N/(N+1)).
 *
 * The two levels use different salts. With one salt, the hosts a collector keeps would be exactly the ones
 * whose top weight is shard i, and a thread split of the same size would send them all to thread i.
 *
 * Stability is a contract: the assignment depends only on the host id string, the shard count and the
 * salt, never on the process, platform, Node version or insertion order. Changing any function here
 * re-shards every fleet, so the known values in test/hash.test.ts pin it.
 *
 * The hash is over the exact host id. Normalise (case, port) before hashing if two spellings must land
 * together.
 */
import { ConfigError } from '@kay/core'

/** Salt for placing hosts on worker threads inside one process. */
export const THREAD_SALT = 0
/** Salt for `--shard i/N` across collector processes (ASCII 'clst'). Independent of {@link THREAD_SALT}. */
export const CLUSTER_SALT = 0x636c7374

/** Largest shard count accepted by {@link parseShardSpec} and the shard functions. */
export const MAX_SHARD_COUNT = 65_535

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193
const GOLDEN = 0x9e3779b9

/**
 * 32-bit FNV-1a over the UTF-8 bytes of `s` (lone surrogates encode as U+FFFD, as TextEncoder does).
 * Unsigned. Standard vectors: '' → 0x811c9dc5, 'a' → 0xe40c292c, 'foobar' → 0xbf9cf968.
 */
export function fnv1a32(s: string): number {
  let h = FNV_OFFSET
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i)
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME)
      continue
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00)
        i++
      } else {
        c = 0xfffd
      }
    }
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME)
    } else if (c < 0x10000) {
      h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME)
      h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME)
    } else {
      h = Math.imul(h ^ (0xf0 | (c >> 18)), FNV_PRIME)
      h = Math.imul(h ^ (0x80 | ((c >> 12) & 0x3f)), FNV_PRIME)
      h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME)
    }
    h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME)
  }
  return h >>> 0
}

/** The murmur3 32-bit finaliser: a bijection with full avalanche (every input bit flips ~half the output). */
function fmix32(x: number): number {
  let h = x | 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The stable 32-bit hash of a host id: {@link fnv1a32} of its UTF-8 bytes. */
export function hostHash(hostId: string): number {
  return fnv1a32(hostId)
}

/**
 * Rendezvous weight of a host (given its {@link hostHash}) for shard `index`: fmix32 of the host hash xor a
 * per-shard key. FNV-1a alone mixes the last bytes poorly ('web001' vs 'web002'); the finaliser fixes that.
 */
export function shardWeight(hash: number, index: number, salt: number = THREAD_SALT): number {
  const key = fmix32(Math.imul(index + 1, GOLDEN) ^ salt)
  return fmix32(hash ^ key)
}

function checkCount(shardCount: number): void {
  if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > MAX_SHARD_COUNT) {
    throw new ConfigError(`shard count must be an integer in 1..${MAX_SHARD_COUNT}, got ${shardCount}`)
  }
}

/**
 * The shard (0-based, 0..shardCount-1) that owns `hostId`, by rendezvous hashing. O(shardCount).
 * Ties (same weight) go to the lower index. `salt` picks the level: {@link THREAD_SALT} (default) or
 * {@link CLUSTER_SALT}.
 */
export function shardOf(hostId: string, shardCount: number, salt: number = THREAD_SALT): number {
  checkCount(shardCount)
  const h = fnv1a32(hostId)
  let best = 0
  let bestWeight = shardWeight(h, 0, salt)
  for (let i = 1; i < shardCount; i++) {
    const w = shardWeight(h, i, salt)
    if (w > bestWeight) {
      best = i
      bestWeight = w
    }
  }
  return best
}

/**
 * Whether collector `index` (0-based) of `count` keeps `hostId` (`--shard i/N` is `inShard(h, i - 1, N)`).
 * Uses {@link CLUSTER_SALT}, so threads inside the collector still split its hosts evenly.
 */
export function inShard(hostId: string, index: number, count: number): boolean {
  checkCount(count)
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new ConfigError(`shard index must be an integer in 0..${count - 1}, got ${index}`)
  }
  return shardOf(hostId, count, CLUSTER_SALT) === index
}

/** A parsed `--shard i/N`. */
export interface ShardSpec {
  /** 0-based: `--shard 1/4` is index 0. Pass it to {@link inShard} as is. */
  index: number
  /** N, the number of collectors. */
  count: number
}

/**
 * Parse the CLI's `--shard i/N`, where i is 1-based (1..N, as operators count machines: `1/4` … `4/4`).
 * Returns a 0-based index. Throws ConfigError (KAY_CONFIG) on anything else: `0/4`, `5/4`, `1/0`, `a/b`,
 * `1/4/2`, signs, decimals, empty parts or N above {@link MAX_SHARD_COUNT}. Surrounding spaces are allowed.
 */
export function parseShardSpec(spec: string): ShardSpec {
  const m = /^\s*(\d{1,6})\s*\/\s*(\d{1,6})\s*$/.exec(spec)
  if (!m) throw new ConfigError(`--shard must look like i/N (e.g. 2/4), got '${spec}'`)
  const i = Number(m[1])
  const n = Number(m[2])
  if (n < 1 || n > MAX_SHARD_COUNT) {
    throw new ConfigError(`--shard N must be in 1..${MAX_SHARD_COUNT}, got '${spec}'`)
  }
  if (i < 1 || i > n) throw new ConfigError(`--shard i must be in 1..${n} (1-based), got '${spec}'`)
  return { index: i - 1, count: n }
}
