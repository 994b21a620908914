/**
 * @kay/core — one host = one actor. The public surface of the core package.
 * The fleet simulator is a separate entry (`@kay/core/sim`), as are the test harnesses (`@kay/core/testing`).
 */
export * from './clock.js'
export * from './collection/collector.js'
export * from './collection/index.js'
export * from './config/groups.js'
export * from './config/hostlist.js'
export * from './config/patterns.js'
export * from './config/ssh-config.js'
export * from './connection/actor.js'
export * from './connection/backoff.js'
export * from './connection/connector.js'
export * from './connection/dial-gate.js'
export { type ProbeOptions, probeHostKey } from './connection/probe.js'
export * from './connection/proxy-command.js'
export * from './connection/resolver.js'
export * from './errors.js'
export * from './transfer/copy.js'
export * from './trust/certificates.js'
export * from './trust/keys.js'
export * from './trust/known-hosts.js'
export * from './types.js'
