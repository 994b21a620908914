/**
 * @kay/core — one host = one actor: the per-host SSH connection, its collection stream, configuration (ssh_config,
 * host lists, groups) and trust (known_hosts, keys, certificates). This list is the package's public surface.
 *
 * Other entries: `@kay/core/sim` (the SSH fleet simulator behind `kay demo`), `@kay/core/internal` (what
 * @kay/workers and @kay/cli share; no compatibility promise) and, in the repository only, `@kay/core/testing` (the
 * real-sshd test harness; not published).
 */

export { type Clock, systemClock, type TimerHandle } from './clock.js'
export {
  type CollectDone,
  type CollectorOptions,
  type CollectPreference,
  HostCollector,
} from './collection/collector.js'
export { COLLECT_MODES, STREAM_FLAVOURS } from './collection/commands.js'
export type { CpuState, HostDetail, HostMetrics, InterfaceCounters, NodeChunk } from './collection/types.js'
export { type HostGroups, loadGroups, parseGroups } from './config/groups.js'
export {
  type ExpandOptions,
  expandHostList,
  foldHosts,
  formatHostSpec,
  type HostSpec,
  parseHostFile,
  parseHostSpec,
  readHostFile,
} from './config/hostlist.js'
export {
  loadSshConfig,
  parseSshConfig,
  type ResolveOverrides,
  type SshConfig,
  type SshConfigOptions,
} from './config/ssh-config.js'
export {
  HostActor,
  type HostActorEvents,
  type HostActorOptions,
  type RunOptions,
  type RunResult,
  type SftpOptions,
} from './connection/actor.js'
export { type BackoffOptions, DEFAULT_BACKOFF } from './connection/backoff.js'
export { directConnector, tcpConnector } from './connection/connector.js'
export {
  type DialGate,
  type DialGateStats,
  type DialOutcome,
  type DialSlot,
  LocalDialGate,
  type LocalDialGateOptions,
} from './connection/dial-gate.js'
export { type ProbeOptions, probeHostKey } from './connection/probe.js'
export {
  CachingResolver,
  type CachingResolverOptions,
  type LookupAnswer,
  type LookupFn,
  type ResolvedAddress,
  type Resolver,
} from './connection/resolver.js'
export {
  AbortedError,
  AuthFailedError,
  ChannelOpenError,
  ClosedError,
  ConfigError,
  ConnectError,
  ConnectionLostError,
  CopyError,
  type ErrorCode,
  ExpansionLimitError,
  errorFromJSON,
  HandshakeTimeoutError,
  HOST_KEY_ERROR_CODES,
  HostCaRevokedError,
  HostCertExpiredError,
  HostCertInvalidError,
  HostCertPrincipalError,
  HostKeyMismatchError,
  HostKeyRevokedError,
  HostKeyUnknownError,
  InternalError,
  isKayError,
  KayError,
  type KayErrorOptions,
  KeepaliveTimeoutError,
  KeyEncryptedError,
  KeyInvalidError,
  KeyPermissionsError,
  type LastError,
  lastErrorOf,
  NotReadyError,
  OutputLimitError,
  ParseError,
  ProtocolError,
  QueueFullError,
  ResolveError,
  type SerializedError,
  ShardRestartedError,
  SkippedError,
  StreamError,
  SupervisorFatalError,
  TimeoutError,
  toKayError,
  UnexpectedOutputError,
  UnknownHostError,
} from './errors.js'
export { parseCertificate, type SshCertificate } from './trust/certificates.js'
export { type LoadIdentityOptions, loadIdentity, parsePrivateKey } from './trust/keys.js'
export {
  defaultPinFile,
  defaultUserKnownHostsFiles,
  fingerprint,
  KnownHostsStore,
  type KnownHostsStoreOptions,
  keyTypeOf,
  type TrustExplanation,
} from './trust/known-hosts.js'
export type {
  ActorState,
  CollectMode,
  CollectPhase,
  Connector,
  HostKeyTarget,
  HostKeyVerdict,
  HostKeyVerifier,
  HostStatus,
  HostTarget,
  Identity,
  StreamFlavour,
  StrictHostKeyChecking,
  TrustSource,
} from './types.js'
