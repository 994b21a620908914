/**
 * Test-only helpers (the `@kay/core/testing` entry): real OpenSSH sshd instances and fleets on loopback.
 * Nothing in the product imports this.
 */
export { Cgroup, cgroupRoot } from './cgroup.js'
export {
  createNetns,
  IP_PATH,
  NetNamespace,
  type NetnsSshd,
  netnsAvailable,
  startSshdInNetns,
  TC_PATH,
} from './netns.js'
export { descendantsOf, isAlive, type ProcessInfo, processTable, pssKb } from './procs.js'
export { type CertOptions, type KeyFiles, type KeyType, keygen, lineOf, signCert } from './ssh-keygen.js'
export {
  type ClientKey,
  FLEET_START_CONCURRENCY,
  type FleetOptions,
  fingerprintOfLine,
  fleetAddress,
  isLoopbackAddress,
  makeClientKey,
  type RestartOptions,
  requireSshd,
  SSH_KEYGEN_PATH,
  SSHD_LOG,
  SSHD_PATH,
  SSHD_SHELL_USERS,
  SSHD_TEST_USER,
  type SshdFleet,
  type SshdOptions,
  SshdServer,
  sshdAvailable,
  sshdVersion,
  startSshd,
  startSshdFleet,
} from './sshd.js'
export { type UntilOptions, until } from './wait.js'
