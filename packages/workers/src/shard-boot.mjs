// Worker entry when kay runs from TypeScript sources (tests, `pnpm kay`): Node 20 does not honour
// `--import tsx` in a Worker's execArgv, so register tsx's loader here, then load the real entry.
import { register } from 'tsx/esm/api'

register()
await import('./shard-worker.ts')
