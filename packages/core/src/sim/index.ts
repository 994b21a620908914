/**
 * `@kay/core/sim`: an SSH fleet simulator for tests, benchmarks and `kay demo`. Simulated hosts live on
 * loopback only, speak real SSH (ssh2's Server), answer the collection protocol (docs/collection-protocol.md)
 * and have fault knobs that can change at run time.
 */
export { startSimFleet } from './fleet.js'
export { type GeneratedKey, generateClientKey } from './keys.js'
export { ProcModel, seededRandom } from './procfs.js'
export type { SpawnSimFleetOptions } from './protocol.js'
export { type RemoteSimFleet, type SpawnOptions, spawnSimFleet } from './spawn.js'
export type {
  ProcFault,
  ResolvedHostSettings,
  RestartOptions,
  SimAuthMethod,
  SimCounters,
  SimFleet,
  SimFleetOptions,
  SimFleetStats,
  SimHostHandle,
  SimHostInfo,
  SimHostSettings,
  SimHostStats,
  StreamFault,
  StreamFlavour,
} from './types.js'
