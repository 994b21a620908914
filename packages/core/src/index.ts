/**
 * @kay/core — one host = one actor. The public surface of the core package.
 */
export * from './actor.js'
export * from './backoff.js'
export * from './clock.js'
export * from './dial-gate.js'
export * from './errors.js'
export * from './types.js'
