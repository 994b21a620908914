/** kay's metrics: the collection commands, the /proc parser and the collection-stream frame decoder. */

export {
  COLLECT_COMMAND,
  DETAIL_COMMAND,
  DF_EVERY,
  forAnyLoginShell,
  identifyCommand,
  type NodeRequest,
  nodeCollectCommand,
  notKayOutput,
  randomStreamToken,
  SLOW_EVERY,
  STREAM_FLAVOURS,
  type StreamFlavour,
  scriptOf,
  streamCommand,
  streamRequest,
  wantsDf,
} from './commands.js'
export {
  type Frame,
  FrameDecoder,
} from './frame-decoder.js'
export { NODE_LIMITS, NodeSeries, parseOsRelease } from './node.js'
export {
  nodeFamilyMeta,
  STATIC_NODE_FAMILIES,
} from './node-families.js'
export {
  computeMetrics,
  MAX_INPUT_CHARS,
  MAX_LOAD,
  MAX_UPTIME_SECONDS,
  parseCollection,
  parseDetail,
  parseDetailSample,
  parseSample,
  parseSections,
  parseTickSample,
} from './parse.js'
export { ByteWriter, NodeSink } from './series-writer.js'
export type { HostMetrics, RawSample } from './types.js'
