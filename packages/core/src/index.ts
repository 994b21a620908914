/**
 * @kay/core — one host = one actor. The public surface of the core package.
 * The fleet simulator is a separate entry (`@kay/core/sim`), as are the test harnesses (`@kay/core/testing`).
 */
export * from './actor.js'
export * from './backoff.js'
export * from './clock.js'
export * from './collector.js'
export * from './dial-gate.js'
export * from './errors.js'
export * from './metrics/index.js'
export * from './proxy-command.js'
export * from './trust/hostlist.js'
export * from './trust/keys.js'
export * from './trust/known-hosts.js'
export * from './trust/ssh-config.js'
export * from './types.js'
