/** kay's metrics: the collection commands, the /proc parser and the collection-stream frame decoder. */

export {
  COLLECT_COMMAND,
  COLLECT_MODES,
  COLLECT_SECTIONS,
  DETAIL_COMMAND,
  DF_EVERY,
  forAnyLoginShell,
  identifyCommand,
  isStreamFlavour,
  type KayCommand,
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
  DEFAULT_MAX_FRAME_BYTES,
  type DropReason,
  type Frame,
  FrameDecoder,
  type FrameDecoderOptions,
} from './frame-decoder.js'
export { escapeLabelValue, NODE_LIMITS, NodeSeries, parseOsRelease } from './node.js'
export {
  DISK_DEVICES_EXCLUDE,
  FS_TYPES_EXCLUDE,
  MOUNT_POINTS_EXCLUDE,
  NET_DEVICES_EXCLUDE,
  NODE_EXPORTER_COLLECTORS,
  type NodeFamilyMeta,
  type NodeFamilyType,
  nodeFamilyMeta,
  STATIC_NODE_FAMILIES,
  VMSTAT_FIELDS,
} from './node-families.js'
export {
  CPU_STATES,
  computeMetrics,
  MAX_CPUS,
  MAX_INPUT_CHARS,
  MAX_INTERFACES,
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
export type { CpuState, HostDetail, HostMetrics, InterfaceCounters, NodeChunk, RawSample } from './types.js'
