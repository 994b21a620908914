/**
 * The floor in kay's shape, the thread half (tick-cost.ts `--methods floor-shaped`): lib.ts's bare ssh2 floor run in
 * a worker thread, answering each tick with one row of numbers per host in a transferred Float64Array beside the
 * host names, as kay's shard answers its supervisor (packed.ts). The main thread prints a JSON line per host from
 * the rows, as `kay fleet --json` does. Kay's two isolates and its output, without kay's collector: what the shape
 * costs by itself.
 */
import { readFile } from 'node:fs/promises'
import { parentPort, workerData } from 'node:worker_threads'
import { FLOOR_ROW_FIELDS, floorTick, openFloorConns } from './lib.js'

export interface FloorWorkerData {
  servers: Array<{ host: string; port: number; user: string }>
  keyPath: string
  fanout: number
}
export type FloorWorkerRequest = { type: 'tick'; seq: number } | { type: 'stop' }
export type FloorWorkerReply = { type: 'ready' } | { type: 'tick'; ok: number; hosts: string[]; values: Float64Array }

const port = parentPort!
const { servers, keyPath, fanout } = workerData as FloorWorkerData
const key = await readFile(keyPath)
const conns = await openFloorConns(servers, key, fanout)
const hosts = servers.map((s) => `${s.host}:${s.port}`)

port.on('message', (m: FloorWorkerRequest) => {
  if (m.type === 'stop') {
    for (const c of conns) c.client.end()
    port.close()
    return
  }
  void floorTick(conns, m.seq).then((ok) => {
    // Numbers that change per host and per tick, as metrics do (nothing parsed: the floor reads no output).
    const values = new Float64Array(hosts.length * FLOOR_ROW_FIELDS)
    const now = Date.now()
    for (let i = 0; i < values.length; i++) values[i] = (now % 100_000) / ((i % FLOOR_ROW_FIELDS) + 1.5) + i
    port.postMessage({ type: 'tick', ok, hosts, values } satisfies FloorWorkerReply, [values.buffer])
  })
})
port.postMessage({ type: 'ready' } satisfies FloorWorkerReply)
