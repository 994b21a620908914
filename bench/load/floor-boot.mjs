// Worker entry for floor-worker.ts: Node 20 does not honour `--import tsx` in a Worker's execArgv, so register
// tsx's loader here, then load the real entry (as packages/workers/src/shard-boot.mjs does for the shards).
import { register } from 'tsx/esm/api'

register()
await import('./floor-worker.ts')
