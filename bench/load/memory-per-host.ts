/**
 * Memory per connected host, in one thread (no shard workers): 500 actors + collectors against the simulator in a
 * separate process, after 15 ticks and a full GC. Separates JS heap from RSS, which the fleet-size-difference
 * method of steady.ts cannot (it also counts worker threads' allocator arenas).
 *
 *   node --expose-gc --conditions=kay-source --import tsx bench/load/memory-per-host.ts stream|exec
 */
import { HostActor, HostCollector, LocalDialGate } from '@kay/core'
import { generateClientKey, spawnSimFleet } from '@kay/core/sim'

const mode = process.argv[2] as 'stream' | 'exec'
const n = 500
const key = generateClientKey()
const fleet = await spawnSimFleet({ hosts: n, authorizedKeys: [key.publicKey] })
const gate = new LocalDialGate({ cap: 16 })
const verifier = { verify: async () => ({ kind: 'trusted' as const }) }
const identity = { username: 'kay', keys: [{ key: key.parsed, source: 'k' }] }
global.gc?.()
const m0 = process.memoryUsage()
const pairs = fleet.hosts.map((h) => {
  const a = new HostActor({
    target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
    identity,
    verifier,
    dialGate: gate,
  })
  const c = new HostCollector(a, { mode })
  a.start()
  return { a, c }
})
while (pairs.some((p) => p.a.state !== 'ready')) await new Promise((r) => setTimeout(r, 50))
for (let i = 0; i < 15; i++) {
  await Promise.all(pairs.map((p) => p.c.collect().catch(() => {})))
  await new Promise((r) => setTimeout(r, 50))
}
global.gc?.()
await new Promise((r) => setTimeout(r, 200))
global.gc?.()
const m1 = process.memoryUsage()
const per = (k: keyof NodeJS.MemoryUsage) => ((m1[k] - m0[k]) / n / 1024).toFixed(1)
console.log(
  mode,
  'modes',
  new Set(pairs.map((p) => p.c.mode)),
  'KiB/host rss',
  per('rss'),
  'heapUsed',
  per('heapUsed'),
  'external',
  per('external'),
  'arrayBuffers',
  per('arrayBuffers'),
)
await Promise.all(
  pairs.map((p) => {
    p.c.close()
    return p.a.close()
  }),
)
await fleet.close()
