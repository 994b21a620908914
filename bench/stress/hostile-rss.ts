/**
 * What a hostile peer costs the collector: for each kind of hostile server (the ones test/hostile/memory.test.ts
 * bounds), one HostActor in a child process of its own dials it `--rounds` times (redials included) and reports its
 * peak RSS above its baseline and the error of each round. The servers and the child are the tests' own
 * (packages/core/test/hostile/support), so the bench measures exactly what the tests bound.
 *
 *   node --conditions=kay-source --import tsx bench/stress/hostile-rss.ts --rounds 3 --handshake-ms 2000
 *
 * Flags: --rounds (3), --handshake-ms (2000: the dial deadline; a peer stalls at most that long), --budget-ms (60000:
 * one scenario's bound), --only (a comma-separated list of scenario names).
 */
import { type ProbeSpec, runProbe } from '../../packages/core/test/hostile/support/run-probe.js'
import { type HostileBehaviour, startHostileServer } from '../../packages/core/test/hostile/support/servers.js'
import {
  type HostileSshBehaviour,
  startHostileSshServer,
} from '../../packages/core/test/hostile/support/ssh-servers.js'
import { flags, record, runMain } from '../load/lib.js'

const MiB = 1024 * 1024

type Scenario = { name: string; phase: ProbeSpec['phase'] } & ({ tcp: HostileBehaviour } | { ssh: HostileSshBehaviour })

const SCENARIOS: Scenario[] = [
  { name: 'random bytes instead of a banner', phase: 'dial', tcp: 'garbage-stream' },
  { name: 'banner then endless bytes', phase: 'dial', tcp: 'banner-then-garbage' },
  { name: 'banner then a 2 GiB packet length', phase: 'dial', tcp: 'huge-packet-length' },
  { name: 'endless 8 KB greeting lines', phase: 'dial', tcp: 'long-greeting' },
  { name: 'banner then a kex stall', phase: 'dial', tcp: 'banner-then-stall' },
  { name: 'auth stall + request flood', phase: 'dial', ssh: 'auth-stall-flood' },
  { name: 'garbage after auth', phase: 'dial', ssh: 'garbage-after-auth' },
  { name: 'request flood and no reads', phase: 'dial', ssh: 'flood-unread' },
  { name: 'exec output flood', phase: 'run', ssh: 'exec-flood' },
  { name: 'stream + exec floods', phase: 'collect', ssh: 'exec-flood' },
]

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const rounds = Number(f.get('rounds') ?? 3)
  const handshakeTimeoutMs = Number(f.get('handshake-ms') ?? 2000)
  const budgetMs = Number(f.get('budget-ms') ?? 60_000)
  const only = f.get('only')?.split(',')
  console.log(`rounds ${rounds}, handshake deadline ${handshakeTimeoutMs} ms`)
  console.log(
    'scenario | peak RSS above baseline (MiB) | client CPU (ms) | rounds: outcome | connection lost with | dials',
  )
  for (const sc of SCENARIOS) {
    if (only && !only.includes(sc.name)) continue
    const server = 'tcp' in sc ? await startHostileServer(sc.tcp) : await startHostileSshServer(sc.ssh)
    const t0 = Date.now()
    try {
      const r = await runProbe({ port: server.port, phase: sc.phase, rounds, handshakeTimeoutMs, budgetMs })
      const growth = (r.peakRss - r.baselineRss) / MiB
      const lost = [...new Set(r.lost)].join(',') || '-'
      const outcome = sc.phase === 'dial' ? '(dial)' : [...new Set(r.codes)].join(',')
      console.log(
        `${sc.name} | ${growth.toFixed(1)} | ${r.cpuMs} | ${outcome} | ${lost} | ${r.handshakes} (${Date.now() - t0} ms)`,
      )
      record('hostile-rss', { scenario: sc.name, growthMiB: growth, ...r })
    } finally {
      await server.close()
    }
  }
  return 0
}

runMain(import.meta.url, main)
