/**
 * Trust and identity: host lists, ssh_config resolution, known_hosts pinning, key loading and key-only auth.
 */
export {
  DEFAULT_EXPANSION_LIMIT,
  dedupe,
  type ExpandOptions,
  expandHostList,
  foldHosts,
  formatHostSpec,
  type HostSpec,
  parseHostFile,
  parseHostSpec,
  readHostFile,
} from './hostlist.js'
export {
  type AuthFailureDetails,
  type AuthState,
  authHandlerFor,
  clearKeyCache,
  createAuthState,
  defaultIdentityFiles,
  type LoadIdentityOptions,
  loadIdentity,
  MIN_RSA_BITS,
} from './keys.js'
export {
  defaultPinFile,
  entryMatchesName,
  fingerprint,
  hashKnownHostsName,
  type KnownHostsEntry,
  type KnownHostsListing,
  type KnownHostsMarker,
  KnownHostsStore,
  type KnownHostsStoreOptions,
  type KnownHostsTarget,
  type KnownHostsVerdict,
  keyTypeOf,
  knownHostsName,
  type ParsedKnownHosts,
  parseKnownHosts,
  parseKnownHostsLine,
  targetNames,
  verdictError,
} from './known-hosts.js'
export {
  loadSshConfig,
  matchPattern,
  matchPatternList,
  parseSshConfig,
  type ResolveDefaults,
  type SshConfig,
  type SshConfigOptions,
  tokenizeLine,
} from './ssh-config.js'
