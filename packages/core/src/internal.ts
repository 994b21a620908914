/**
 * `@kay/core/internal`: what @kay/workers and @kay/cli share with core beyond its public surface (the remote loops,
 * the node_exporter series, the dial gates' parts, copies over SFTP). Not for embedders: names and signatures here
 * change without notice.
 */

export {
  COLLECT_COMMAND,
  DF_EVERY,
  identifyCommand,
  type NodeRequest,
  nodeCollectCommand,
  randomStreamToken,
  SLOW_EVERY,
  streamCommand,
  streamRequest,
  wantsDf,
} from './collection/commands.js'
export { FrameDecoder } from './collection/frame-decoder.js'
export { escapeLabelValue, NODE_LIMITS, NodeSeries } from './collection/node.js'
export { NODE_EXPORTER_COLLECTORS, nodeFamilyMeta } from './collection/node-families.js'
export { CPU_STATES, parseSections } from './collection/parse.js'
export { NodeSink } from './collection/series-writer.js'
export { STOP_GRACE_MS } from './connection/actor.js'
export { verifyBackoff } from './connection/backoff.js'
export { RateLimitedDialGate, SlotWaiter } from './connection/dial-gate.js'
export { checkLocalSources, getPaths, putPaths } from './transfer/copy.js'
export { verdictError } from './trust/known-hosts.js'
