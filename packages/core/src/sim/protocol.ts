import type { SerializedError } from '../errors.js'
import type { SimFleetOptions, SimHostInfo } from './types.js'

/**
 * The IPC protocol between `spawnSimFleet` (parent) and `sim/main.ts` (child). Plain JSON data only; errors
 * travel as {@link SerializedError}.
 */

/** Fleet options that can cross a process boundary: keys as OpenSSH lines, no clock. */
export type SpawnSimFleetOptions = Omit<SimFleetOptions, 'authorizedKeys' | 'clock'> & {
  authorizedKeys: string[]
}

export type SimMethod = 'setFault' | 'drop' | 'restart' | 'stats' | 'resetStats' | 'close'

export type ParentMessage =
  | { kind: 'kay-sim:start'; opts: SpawnSimFleetOptions }
  | { kind: 'kay-sim:call'; id: number; method: SimMethod; args: unknown[] }

export type ChildMessage =
  | { kind: 'kay-sim:ready'; hosts: SimHostInfo[] }
  | { kind: 'kay-sim:failed'; error: SerializedError }
  | { kind: 'kay-sim:reply'; id: number; ok: true; value: unknown }
  | { kind: 'kay-sim:reply'; id: number; ok: false; error: SerializedError }

export function isParentMessage(m: unknown): m is ParentMessage {
  const kind = (m as { kind?: unknown } | null)?.kind
  return kind === 'kay-sim:start' || kind === 'kay-sim:call'
}

export function isChildMessage(m: unknown): m is ChildMessage {
  const kind = (m as { kind?: unknown } | null)?.kind
  return kind === 'kay-sim:ready' || kind === 'kay-sim:failed' || kind === 'kay-sim:reply'
}
