/**
 * Shard threads run with a capped young generation (SHARD_YOUNG_GENERATION_MB): V8's default lets each grow to 48 MiB
 * that, with the memory reducer off, is never given back (bench/RESULTS.md, #24). The Worker class is wrapped to
 * see the limits each real shard thread got; the fleet is collected through them as usual.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Worker as RealWorker } from 'node:worker_threads'
import { generateClientKey, startSimFleet } from '@kay/core/sim'
import { describe, expect, it, vi } from 'vitest'
import { SHARD_YOUNG_GENERATION_MB, Supervisor } from '../src/supervisor.js'

const created = vi.hoisted(() => [] as RealWorker[])
vi.mock('node:worker_threads', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:worker_threads')>()
  class Recorded extends real.Worker {
    constructor(...args: ConstructorParameters<typeof real.Worker>) {
      super(...args)
      created.push(this)
    }
  }
  return { ...real, Worker: Recorded }
})

describe('shard threads', () => {
  it('run with a capped young generation and collect every host', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kay-shard-memory-'))
    const key = generateClientKey()
    const fleet = await startSimFleet({ hosts: 4, authorizedKeys: [key.publicKey] })
    const sup = await Supervisor.start({
      hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })),
      threads: 2,
      identity: { username: 'kay', keyFiles: [], keys: [key.privateKey] },
      trust: { knownHostsPath: join(dir, 'known_hosts'), policy: 'accept-new' },
    })
    try {
      expect(created).toHaveLength(2)
      for (const w of created) expect(w.resourceLimits?.maxYoungGenerationSizeMb).toBe(SHARD_YOUNG_GENERATION_MB)
      expect(SHARD_YOUNG_GENERATION_MB).toBeLessThan(48)
      let ok = 0
      for (let i = 0; i < 50 && ok < 4; i++) {
        const r = await sup.collect({ timeoutMs: 5000 })
        ok = r.hosts.filter((h) => h.metrics).length
      }
      expect(ok).toBe(4)
    } finally {
      await sup.stop({ timeoutMs: 2000 })
      await fleet.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
