/**
 * The shard's tick over its hosts (`collectTick`): each host reports through a callback, so the tick must give
 * every host exactly one result whatever its collector does — answer later, answer at once, fail, throw instead
 * of reporting, or (a bug) report twice. Real collectors over the simulator and real sshd are in
 * supervisor.test.ts and the sshd tests; this pins the bookkeeping with collectors that misbehave on purpose.
 */
import type { CollectDone, HostStatus } from '@kay/core'
import { NotReadyError } from '@kay/core'
import { describe, expect, it } from 'vitest'
import { unpackCollectResults } from '../src/packed.js'
import { collectTick, type ShardEntry } from '../src/shard.js'
import { BASE_METRICS as METRICS } from './fixtures/metrics.js'

type Behaviour = 'later' | 'at-once' | 'fail' | 'throw' | 'twice'

function entry(id: string, how: Behaviour): ShardEntry {
  const actor = {
    id,
    status: (): HostStatus => ({ id, state: 'ready', attempts: 0, handshakes: 1 }),
  }
  const collector = {
    mode: 'stream-perl',
    collectTo(_timeoutMs: number, done: CollectDone): void {
      switch (how) {
        case 'later':
          setImmediate(() => done({ ...METRICS }))
          return
        case 'at-once':
          done({ ...METRICS })
          return
        case 'fail':
          setImmediate(() => done(undefined, new NotReadyError(`${id}: not ready`, { host: id })))
          return
        case 'throw':
          throw new Error('collector bug')
        case 'twice':
          done({ ...METRICS })
          setImmediate(() => done(undefined, new Error('second report')))
          return
      }
    },
  }
  return { actor, collector } as unknown as ShardEntry
}

describe('collectTick', () => {
  it('gives every host exactly one result, whatever its collector does', async () => {
    const hows: Behaviour[] = ['later', 'at-once', 'fail', 'throw', 'twice', 'later']
    const entries = hows.map((h, i) => entry(`h${i}`, h))
    const { results, packed } = await collectTick(entries, 1000)
    // Let a second report (the `twice` collector's) arrive: it must not add a result.
    await new Promise((r) => setImmediate(r))
    const all = [...unpackCollectResults(packed), ...results]
    expect(all.map((r) => r.host).sort()).toEqual(entries.map((e) => e.actor.id).sort())
    const byHost = new Map(all.map((r) => [r.host, r]))
    for (const id of ['h0', 'h1', 'h4', 'h5']) {
      expect(byHost.get(id)?.metrics).toEqual(METRICS)
      expect(byHost.get(id)?.collectMode).toBe('stream-perl')
    }
    expect(byHost.get('h2')?.error).toMatchObject({ code: 'KAY_NOT_READY', host: 'h2' })
    expect(byHost.get('h3')?.error).toMatchObject({ host: 'h3', message: expect.stringContaining('collector bug') })
    expect(packed.hosts.sort()).toEqual(['h0', 'h1', 'h4', 'h5'])
  })

  it('settles at once for a shard with no hosts, and when every host reports at once', async () => {
    expect(await collectTick([], 1000)).toMatchObject({ results: [], packed: { hosts: [] } })
    const now = ['a', 'b'].map((id) => entry(id, 'at-once'))
    const { packed } = await collectTick(new Set(now), 1000)
    expect(packed.hosts).toEqual(['a', 'b'])
  })
})
