/**
 * Child process for the out-of-file-descriptors test: runs a Supervisor (one shard) against the hosts named in the
 * JSON file `argv[2]`, under whatever fd limit the parent set, and prints one JSON summary line on stdout.
 * Exits 0 when it could report every host, 2 otherwise. Bounded: gives up waiting after `settleMs`.
 */
import { readFileSync } from 'node:fs'
import type { HostTarget } from '@kay/core'
import { until } from '@kay/core/testing'
import { Supervisor } from '../../../src/supervisor.js'

interface Input {
  hosts: HostTarget[]
  privateKey: string
  knownHostsPath: string
  settleMs: number
}

const input = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as Input
const started = Date.now()
const sup = await Supervisor.start({
  hosts: input.hosts,
  threads: 1,
  dialCap: 16,
  identity: { username: 'kay', keyFiles: [], keys: [input.privateKey] },
  trust: { knownHostsPath: input.knownHostsPath, policy: 'accept-new' },
  backoff: { baseMs: 100, capMs: 1000, stableAfterMs: 60_000 },
  handshakeTimeoutMs: 5000,
  collectMode: 'exec',
})

// Wait until the fleet stops changing: the hosts that fit under the fd limit are ready, the rest fail and back off.
// Past settleMs the summary is printed as the fleet stands (the parent judges it).
let lastReady = -1
let stableSince = Date.now()
let sawEmfile = false
await until(
  'the fleet settled',
  async () => {
    const st = await sup.refreshStats()
    const ready = st.byState.ready ?? 0
    for (const s of sup.statuses()) if (s.lastError?.message.includes('EMFILE')) sawEmfile = true
    if (ready !== lastReady) {
      lastReady = ready
      stableSince = Date.now()
      return false
    }
    return Date.now() - stableSince > 1500 && (ready === input.hosts.length || sawEmfile)
  },
  { timeoutMs: Math.max(0, input.settleMs - (Date.now() - started)), everyMs: 100 },
).catch(() => {})

const tick = await sup.collect({ timeoutMs: 10_000 })
const codes: Record<string, number> = {}
const lastErrors: Record<string, number> = {}
let withMetrics = 0
let untyped = 0
for (const h of tick.hosts) {
  if (h.metrics) withMetrics++
  else if (h.error?.code?.startsWith('KAY_')) codes[h.error.code] = (codes[h.error.code] ?? 0) + 1
  else untyped++
  const le = h.status.lastError
  if (!h.metrics && le) {
    const key = `${le.code}${le.message.includes('EMFILE') ? ' EMFILE' : ''}`
    lastErrors[key] = (lastErrors[key] ?? 0) + 1
  }
}
const summary = {
  hosts: input.hosts.length,
  reported: new Set(tick.hosts.map((h) => h.host)).size,
  withMetrics,
  ready: sup.stats().byState.ready ?? 0,
  codes,
  lastErrors,
  untyped,
  sawEmfile,
  elapsedMs: Date.now() - started,
}
await sup.stop({ timeoutMs: 3000 })
process.stdout.write(`${JSON.stringify(summary)}\n`)
process.exitCode = summary.reported === summary.hosts && untyped === 0 ? 0 : 2
