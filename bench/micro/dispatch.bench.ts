/**
 * Micro bench: message dispatch per host-request.
 * - in-thread: a HostActor answering a request (the fail-fast NotReady path: dispatch only, no I/O);
 * - cross-thread, batched per shard per tick: one request, one reply carrying 1,000 hosts' results, amortised per
 *   host, with three encodings of the reply we considered: structured clone of objects (what protocol.ts does),
 *   a JSON string, and numbers packed into a transferred Float64Array (ids sent once);
 * - cross-thread, one message per host (the anti-pattern batching avoids), for contrast.
 *
 *   node --conditions=kay-source --import tsx bench/micro/dispatch.bench.ts
 */
import { Worker } from 'node:worker_threads'
import { HostActor, LocalDialGate } from '@kay/core'
import { Bench } from 'tinybench'

const HOSTS = 1000

const actor = new HostActor({
  target: { id: 'h', hostname: '127.0.0.1', port: 1, user: 'u' },
  identity: { username: 'u', keys: [] },
  verifier: { verify: async () => ({ kind: 'trusted' }) },
  dialGate: new LocalDialGate(),
})

// The worker builds realistic per-host results (the shape of protocol.ts HostCollectResult) and answers in the
// encoding asked for. Plain JS so the bench needs no loader in the thread.
const worker = new Worker(
  `
const { parentPort } = require('node:worker_threads')
const N = ${HOSTS}
const ids = Array.from({ length: N }, (_, i) => 'web' + String(i).padStart(5, '0') + '.dc1')
const result = (i) => ({
  host: ids[i],
  status: { id: ids[i], state: 'ready', attempts: 0, handshakes: 1, rttMs: 0.4, readySince: 1795800000000 },
  metrics: {
    at: 1795800000000 + i, cpuPct: 12.5, cpus: 16, memTotalBytes: 68719476736, memUsedBytes: 21474836480,
    memAvailableBytes: 47244640256, swapTotalBytes: 0, swapUsedBytes: 0, load1: 1.5, load5: 1.2, load15: 0.9,
    uptimeSeconds: 8640000, netRxBytesPerSec: 125000, netTxBytesPerSec: 64000, rootFsUsedPct: 41,
    cpuStates: { user: 8, nice: 0, system: 3, idle: 87.5, iowait: 1, irq: 0, softirq: 0.5, steal: 0 },
  },
  collectMode: 'stream-bash',
})
const FIELDS = 15
parentPort.on('message', (m) => {
  if (m.enc === 'clone') parentPort.postMessage({ type: 'collect-result', id: m.id, results: ids.map((_, i) => result(i)) })
  else if (m.enc === 'json') parentPort.postMessage(JSON.stringify({ type: 'collect-result', id: m.id, results: ids.map((_, i) => result(i)) }))
  else if (m.enc === 'packed') {
    const buf = new Float64Array(N * FIELDS)
    for (let i = 0; i < N; i++) {
      const r = result(i).metrics
      const o = i * FIELDS
      buf[o] = r.at; buf[o + 1] = r.cpuPct; buf[o + 2] = r.cpus; buf[o + 3] = r.memTotalBytes; buf[o + 4] = r.memUsedBytes
      buf[o + 5] = r.memAvailableBytes; buf[o + 6] = r.swapTotalBytes; buf[o + 7] = r.swapUsedBytes; buf[o + 8] = r.load1
      buf[o + 9] = r.load5; buf[o + 10] = r.load15; buf[o + 11] = r.uptimeSeconds; buf[o + 12] = r.netRxBytesPerSec
      buf[o + 13] = r.netTxBytesPerSec; buf[o + 14] = r.rootFsUsedPct
    }
    parentPort.postMessage({ type: 'collect-packed', id: m.id, buf }, [buf.buffer])
  } else if (m.enc === 'per-host') {
    for (let i = 0; i < N; i++) parentPort.postMessage({ type: 'run-result', id: m.id, host: ids[i], result: result(i) })
  }
})
`,
  { eval: true },
)

let seq = 0
function roundTrip(enc: 'clone' | 'json' | 'packed' | 'per-host'): Promise<number> {
  const id = ++seq
  return new Promise((resolve) => {
    let got = 0
    const on = (m: unknown) => {
      if (enc === 'per-host') {
        if (++got < HOSTS) return
      } else if (enc === 'json') {
        got = (JSON.parse(m as string) as { results: unknown[] }).results.length
      } else if (enc === 'packed') {
        got = (m as { buf: Float64Array }).buf.length
      } else {
        got = (m as { results: unknown[] }).results.length
      }
      worker.off('message', on)
      resolve(got)
    }
    worker.on('message', on)
    worker.postMessage({ enc, id })
  })
}

const bench = new Bench({ time: 2000, warmupTime: 300 })
bench
  .add('in-thread: actor request → reply (NotReady path)', async () => {
    await actor.run('x').catch(() => {})
  })
  .add(`cross-thread batched, structured clone of objects (${HOSTS} hosts/msg)`, async () => {
    await roundTrip('clone')
  })
  .add(`cross-thread batched, JSON string (${HOSTS} hosts/msg)`, async () => {
    await roundTrip('json')
  })
  .add(`cross-thread batched, packed Float64Array transferred (${HOSTS} hosts/msg)`, async () => {
    await roundTrip('packed')
  })
  .add(`cross-thread, one message per host (${HOSTS} msgs)`, async () => {
    await roundTrip('per-host')
  })

await bench.run()
console.table(
  bench.tasks.map((t) => {
    const perOp = t.result && 'latency' in t.result ? t.result.latency.mean : Number.NaN
    const perHost = t.name.startsWith('in-thread') ? perOp : perOp / HOSTS
    return { task: t.name, 'mean ms/op': +perOp.toFixed(4), 'µs per host-request': +(perHost * 1000).toFixed(3) }
  }),
)
await worker.terminate()
await actor.close()
