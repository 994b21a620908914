// ssh2 ships no types for its algorithm tables; only what kay reads is declared.
declare module 'ssh2/lib/protocol/constants.js' {
  const constants: {
    DEFAULT_SERVER_HOST_KEY: string[]
    SUPPORTED_SERVER_HOST_KEY: string[]
    /** Host certificate algorithms a client may ask for (kay's ssh2 patch, ADR 0010; absent in a stock ssh2). */
    CERT_SERVER_HOST_KEY?: string[]
  }
  export default constants
}
