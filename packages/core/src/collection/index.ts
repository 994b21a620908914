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
  notKayOutput,
  randomStreamToken,
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
export type { CpuState, HostDetail, HostMetrics, InterfaceCounters, RawSample } from './types.js'
