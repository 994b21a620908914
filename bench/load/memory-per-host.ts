/**
 * Memory per connected host, in one thread (no shard workers): actors + collectors against the simulator in a
 * separate process, each step after 15 ticks and a full GC. Separates JS heap from RSS, which the
 * fleet-size-difference method of steady.ts cannot (it also counts worker threads' allocator arenas).
 *
 * Two steps in one process: `--first` hosts (default 250), then `--hosts` in all (default 1000). The per-host
 * figure of the first step carries fixed costs (V8 grows its young generation and JIT code with the first load,
 * whatever the fleet size); the marginal figure (step 2 − step 1) / added hosts is what each further host costs.
 *
 *   node --expose-gc --conditions=kay-source --import tsx bench/load/memory-per-host.ts stream|exec [--first 250] [--hosts 1000]
 *
 * `--buffer-pool-size N` sets Buffer.poolSize before the first host (0: no pool). A small Buffer.allocUnsafe or
 * Buffer.from is a slice of a shared 8 KiB slab, and one long-lived slice keeps its whole slab alive: this shows
 * how much of the per-host figure such slabs are (compare `arrayBuffers`).
 */
import { HostActor, HostCollector, LocalDialGate } from '@kay/core'
import { generateClientKey, spawnSimFleet } from '@kay/core/sim'
import { flags } from './lib.js'

const mode = process.argv[2] as 'stream' | 'exec'
if (mode !== 'stream' && mode !== 'exec')
  throw new Error('usage: memory-per-host.ts stream|exec [--first N] [--hosts N]')
const f = flags(process.argv.slice(3))
const total = Number(f.get('hosts') ?? 1000)
const first = Number(f.get('first') ?? 250)
if (!(first > 0 && total > first)) throw new Error('need 0 < --first < --hosts')
if (f.has('buffer-pool-size')) Buffer.poolSize = Number(f.get('buffer-pool-size'))
const key = generateClientKey()
const fleet = await spawnSimFleet({ hosts: total, authorizedKeys: [key.publicKey] })
const gate = new LocalDialGate({ cap: 16 })
const verifier = { verify: async () => ({ kind: 'trusted' as const }) }
const identity = { username: 'kay', keys: [{ key: key.parsed, source: 'k' }] }
const pairs: Array<{ a: HostActor; c: HostCollector }> = []

function connect(from: number, to: number): void {
  for (const h of fleet.hosts.slice(from, to)) {
    const a = new HostActor({
      target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
      identity,
      verifier,
      dialGate: gate,
    })
    const c = new HostCollector(a, { mode })
    a.start()
    pairs.push({ a, c })
  }
}

async function settle(): Promise<NodeJS.MemoryUsage> {
  while (pairs.some((p) => p.a.state !== 'ready')) await new Promise((r) => setTimeout(r, 50))
  for (let i = 0; i < 15; i++) {
    await Promise.all(pairs.map((p) => p.c.collect().catch(() => {})))
    await new Promise((r) => setTimeout(r, 50))
  }
  global.gc?.()
  await new Promise((r) => setTimeout(r, 200))
  global.gc?.()
  return process.memoryUsage()
}

global.gc?.()
const m0 = process.memoryUsage()
connect(0, first)
const m1 = await settle()
connect(first, total)
const m2 = await settle()
const keys = ['rss', 'heapUsed', 'heapTotal', 'external', 'arrayBuffers'] as const
const per = (a: NodeJS.MemoryUsage, b: NodeJS.MemoryUsage, n: number) =>
  keys.map((k) => `${k} ${((b[k] - a[k]) / n / 1024).toFixed(1)}`).join(' ')
console.log(mode, `Buffer.poolSize ${Buffer.poolSize}`, 'modes', [...new Set(pairs.map((p) => p.c.mode))].join(','))
console.log(`  first ${first} hosts, KiB/host:`, per(m0, m1, first))
console.log(`  marginal ${first} -> ${total} hosts, KiB/host:`, per(m1, m2, total - first))
await Promise.all(
  pairs.map((p) => {
    p.c.close()
    return p.a.close()
  }),
)
await fleet.close()
