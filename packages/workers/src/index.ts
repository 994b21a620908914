/**
 * @kay/workers — the fleet supervisor: kay's public embedding API.
 */
export { CLUSTER_SALT, hostHash, inShard, parseShardSpec, type ShardSpec, shardOf } from './hash.js'
export type {
  CommandOptions,
  CopySpec,
  HostCollectResult,
  HostExecResult,
  ShardConfig,
} from './protocol.js'
export { SharedDialGate } from './shared-dial-gate.js'
export {
  type CollectResultEntry,
  type CollectTick,
  defaultThreads,
  type ExecEvent,
  type ExecOptions,
  type ExecResult,
  type FanOutOptions,
  type FleetProgress,
  HOSTS_PER_SHARD,
  type HostRunner,
  SettleTimeoutError,
  Supervisor,
  type SupervisorEvents,
  type SupervisorOptions,
  type SupervisorStats,
  type WaitSettledOptions,
} from './supervisor.js'
