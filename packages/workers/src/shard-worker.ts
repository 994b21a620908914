/**
 * Thread entry of a shard worker: builds the shard's dependencies (shared dial gate, identity parsed once per
 * shard, host-key verifier), then answers the supervisor's requests on parentPort.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { createShardDeps } from './deps.js'
import { isShardRequest, PROTOCOL_VERSION, type ShardMessage, type ShardWorkerData } from './protocol.js'
import { Shard } from './shard.js'

const data = workerData as ShardWorkerData
if (!parentPort) throw new Error('shard-worker must run in a worker thread')
if (data.version !== PROTOCOL_VERSION) {
  throw new Error(`shard protocol version ${data.version} != ${PROTOCOL_VERSION}`)
}
const port = parentPort
const deps = await createShardDeps(data)
const shard = new Shard(
  { postMessage: (m: ShardMessage, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer) },
  data.config,
  deps,
)
port.on('message', (m: unknown) => {
  if (isShardRequest(m)) shard.handle(m)
})
shard.add(data.hosts)
port.postMessage({ type: 'ready', version: PROTOCOL_VERSION, shardIndex: data.shardIndex } satisfies ShardMessage)
