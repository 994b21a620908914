/**
 * Client cost of a fresh dial (TCP + kex + auth) vs a run on the pooled connection, against the simulator in a
 * separate process. Usage: node --conditions=kay-source --import tsx bench/micro/handshake-vs-run.bench.ts [dials] [runs]
 */
import { HostActor, LocalDialGate } from '@kay/core'
import { generateClientKey, spawnSimFleet } from '@kay/core/sim'

const dials = Number(process.argv[2] ?? 200)
const runs = Number(process.argv[3] ?? 2000)
const key = generateClientKey()
const fleet = await spawnSimFleet({ hosts: 1, authorizedKeys: [key.publicKey] })
const h = fleet.hosts[0]!
const verifier = { verify: async () => ({ kind: 'trusted' as const }) }
const identity = { username: 'kay', keys: [{ key: key.parsed, source: 'bench' }] }
const gate = new LocalDialGate()
const mk = () =>
  new HostActor({
    target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
    identity,
    verifier,
    dialGate: gate,
  })
const ready = (a: HostActor) =>
  new Promise<void>((resolve, reject) => {
    a.on('state', (s) => {
      if (s.state === 'ready') resolve()
      else if (s.state === 'backoff') reject(new Error(s.lastError?.message))
    })
    a.start()
  })

function measure<T>(label: string, n: number, fn: () => Promise<T>) {
  return async () => {
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    for (let i = 0; i < n; i++) await fn()
    const wall = performance.now() - t0
    const c = process.cpuUsage(c0)
    const cpuMs = (c.user + c.system) / 1000
    return { label, n, cpuMsPerOp: +(cpuMs / n).toFixed(3), wallMsPerOp: +(wall / n).toFixed(3) }
  }
}

// warm up
{
  const a = mk()
  await ready(a)
  for (let i = 0; i < 50; i++) await a.run('echo warm')
  await a.close()
}
const dial = await measure('fresh dial + auth (then close)', dials, async () => {
  const a = mk()
  await ready(a)
  await a.close()
})()
const pooled = mk()
await ready(pooled)
const run = await measure('run on the pooled connection (echo)', runs, () => pooled.run('echo x'))()
await pooled.close()
console.table([dial, run])
console.log(
  `ratio dial/run: CPU ${(dial.cpuMsPerOp / run.cpuMsPerOp).toFixed(1)}x, wall ${(dial.wallMsPerOp / run.wallMsPerOp).toFixed(1)}x`,
)
await fleet.close()
