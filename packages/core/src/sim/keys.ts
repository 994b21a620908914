import ssh2, { type ParsedKey } from 'ssh2'
import { ConfigError, KeyInvalidError } from '../errors.js'
import { fingerprint } from '../trust/known-hosts-format.js'

// ssh2 is CommonJS and its `utils` is not a static named export Node's ESM loader can see.
const { utils } = ssh2

/** A freshly generated ed25519 key pair, for tests and the demo. */
export interface GeneratedKey {
  /** OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted. */
  privateKey: string
  /** OpenSSH public key line (`ssh-ed25519 AAAA… comment`). */
  publicKey: string
  /** The private key, parsed once (pass it through `authHandler` to sign with a cached key object). */
  parsed: ParsedKey
}

/** Generate an ed25519 client key pair. */
export function generateClientKey(comment = 'kay-sim-client'): GeneratedKey {
  const { pair, parsed } = generateEd25519(comment)
  return { privateKey: pair.private, publicKey: pair.public.trim(), parsed }
}

/** An ed25519 public key blob: string "ssh-ed25519" (4 + 11) and a 32-byte key (4 + 32). */
const ED25519_BLOB_LEN = 51
const KEYGEN_ATTEMPTS = 20

/**
 * ssh2 1.17's ed25519 keygen drops leading zero bytes of the public key (about 1 key in 256), writing a key its
 * own parser then rejects as malformed. Generate again until the pair parses and is whole.
 */
function generateEd25519(comment: string): { pair: { private: string; public: string }; parsed: ParsedKey } {
  for (let i = 0; i < KEYGEN_ATTEMPTS; i++) {
    const pair = comment ? utils.generateKeyPairSync('ed25519', { comment }) : utils.generateKeyPairSync('ed25519')
    const parsed = utils.parseKey(pair.private)
    if (parsed instanceof Error || parsed.getPublicSSH().length !== ED25519_BLOB_LEN) continue
    const pub = utils.parseKey(pair.public)
    if (pub instanceof Error || !pub.getPublicSSH().equals(parsed.getPublicSSH())) continue
    return { pair, parsed }
  }
  throw new KeyInvalidError(`ssh2 produced no valid ed25519 key in ${KEYGEN_ATTEMPTS} attempts`)
}

/** A host key: the parsed private key plus the public forms clients compare against. */
export interface HostKey {
  parsed: ParsedKey
  /** `ssh-ed25519 AAAA…` */
  publicLine: string
  fingerprint: string
}

/** Generate and parse (once) an ed25519 host key. */
export function generateHostKey(): HostKey {
  const { parsed } = generateEd25519('')
  const blob = parsed.getPublicSSH()
  return { parsed, publicLine: `${parsed.type} ${blob.toString('base64')}`, fingerprint: fingerprint(blob) }
}

/** An authorized key, ready to compare (wire blob) and verify (parsed). */
export interface AuthorizedKey {
  blob: Buffer
  parsed: ParsedKey
}

/** Parse authorized keys (OpenSSH lines or parsed keys) once. Bad input → KAY_CONFIG. */
export function parseAuthorizedKeys(keys: ReadonlyArray<string | ParsedKey>): AuthorizedKey[] {
  return keys.map((k, i) => {
    const parsed = typeof k === 'string' ? utils.parseKey(k) : k
    if (parsed instanceof Error || typeof parsed?.getPublicSSH !== 'function') {
      const why = parsed instanceof Error ? parsed.message : 'not a parsed key'
      throw new ConfigError(`authorizedKeys[${i}] is not a valid public key: ${why}`)
    }
    return { blob: parsed.getPublicSSH(), parsed }
  })
}
