/**
 * SSH public key blobs and OpenSSH certificates (PROTOCOL.certkeys), read and checked the way OpenSSH 9.2 does.
 *
 * A certificate blob is `string type, string nonce, <the certified key's fields>, uint64 serial, uint32 type
 * (1 user, 2 host), string key id, string principals, uint64 valid after, uint64 valid before, string critical
 * options, string extensions, string reserved, string CA key, string signature`; the CA signs everything before
 * the signature. kay verifies that signature itself (node:crypto), so the trust decision never depends on the SSH
 * library having looked at the certificate: ssh2 (patched) only proves that the host holds the certified key.
 *
 * Host certificates are checked as sshkey_cert_check_host() does (sshkey.c): a host certificate; valid at the
 * injected time (valid after ≤ now < valid before); when it lists principals, the name dialed (or HostKeyAlias)
 * is one of them, compared exactly; no critical options (none is defined for hosts); the CA signed with an
 * algorithm from CASignatureAlgorithms (default: no SHA-1 `ssh-rsa`).
 */
import { createPublicKey, type KeyObject, verify } from 'node:crypto'

/** OpenSSH's SSHKEY_CERT_MAX_PRINCIPALS. */
const MAX_PRINCIPALS = 256
const CERT_SUFFIX = '-cert-v01@openssh.com'

/** CASignatureAlgorithms as OpenSSH 9.2 defaults it (`ssh -G`), less the security-key ones kay cannot verify. */
const DEFAULT_CA_SIGNATURE_ALGORITHMS: readonly string[] = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
]

/** Plain key types whose blobs kay can read; certificates of these are `<type>-cert-v01@openssh.com`. */
const PLAIN_TYPES = new Set([
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
  'ssh-dss',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
])

const EC_CURVES: Record<string, { curve: string; crv: string; size: number; hash: string }> = {
  'ecdsa-sha2-nistp256': { curve: 'nistp256', crv: 'P-256', size: 32, hash: 'sha256' },
  'ecdsa-sha2-nistp384': { curve: 'nistp384', crv: 'P-384', size: 48, hash: 'sha384' },
  'ecdsa-sha2-nistp521': { curve: 'nistp521', crv: 'P-521', size: 66, hash: 'sha512' },
}

/** Is this a certificate key type or algorithm name (`…-cert-v01@openssh.com`)? */
export function isCertificateType(name: string): boolean {
  return name.endsWith(CERT_SUFFIX)
}

/** The plain name of a certificate type or algorithm (`ssh-ed25519-cert-v01@openssh.com` → `ssh-ed25519`). */
export function plainName(name: string): string {
  return isCertificateType(name) ? name.slice(0, -CERT_SUFFIX.length) : name
}

/** The key type a host key algorithm presents (`rsa-sha2-512` → `ssh-rsa`; certificates → their plain key type). */
export function keyTypeOfAlgorithm(alg: string): string {
  const plain = plainName(alg)
  return plain === 'rsa-sha2-256' || plain === 'rsa-sha2-512' ? 'ssh-rsa' : plain
}

/** A bounds-checked reader over an SSH wire-format buffer; every read returns undefined past the end. */
class WireReader {
  pos = 0
  constructor(readonly buf: Buffer) {}

  u32(): number | undefined {
    if (this.pos + 4 > this.buf.length) return undefined
    const v = this.buf.readUInt32BE(this.pos)
    this.pos += 4
    return v
  }

  u64(): bigint | undefined {
    if (this.pos + 8 > this.buf.length) return undefined
    const v = this.buf.readBigUInt64BE(this.pos)
    this.pos += 8
    return v
  }

  bytes(): Buffer | undefined {
    const len = this.u32()
    if (len === undefined || len > this.buf.length - this.pos) return undefined
    const v = this.buf.subarray(this.pos, this.pos + len)
    this.pos += len
    return v
  }

  text(): string | undefined {
    return this.bytes()?.toString('utf8')
  }

  get done(): boolean {
    return this.pos === this.buf.length
  }
}

function writeString(parts: Buffer[], data: Buffer | string): void {
  const b = typeof data === 'string' ? Buffer.from(data) : data
  const len = Buffer.alloc(4)
  len.writeUInt32BE(b.length)
  parts.push(len, b)
}

/** Read the plain key fields of `type` at the reader's position; the fields as read, or undefined if malformed. */
function readKeyFields(r: WireReader, type: string): Buffer[] | undefined {
  const fields: Buffer[] = []
  const take = (): boolean => {
    const b = r.bytes()
    if (b === undefined) return false
    fields.push(b)
    return true
  }
  switch (type) {
    case 'ssh-ed25519':
      if (!take() || fields[0]?.length !== 32) return undefined
      return fields
    case 'sk-ssh-ed25519@openssh.com':
      return take() && fields[0]?.length === 32 && take() ? fields : undefined
    case 'ecdsa-sha2-nistp256':
    case 'ecdsa-sha2-nistp384':
    case 'ecdsa-sha2-nistp521': {
      const ec = EC_CURVES[type] as (typeof EC_CURVES)[string]
      if (!take() || fields[0]?.toString('latin1') !== ec.curve || !take()) return undefined
      const q = fields[1] as Buffer
      return q.length === 1 + 2 * ec.size && q[0] === 4 ? fields : undefined
    }
    case 'sk-ecdsa-sha2-nistp256@openssh.com':
      return take() && fields[0]?.toString('latin1') === 'nistp256' && take() && take() ? fields : undefined
    case 'ssh-rsa':
      return take() && take() && (fields[1] as Buffer).length > 0 ? fields : undefined
    case 'ssh-dss':
      return take() && take() && take() && take() ? fields : undefined
    default:
      return undefined
  }
}

/** A key blob made of its type and fields. */
function keyBlob(type: string, fields: readonly Buffer[]): Buffer {
  const parts: Buffer[] = []
  writeString(parts, type)
  for (const f of fields) writeString(parts, f)
  return Buffer.concat(parts)
}

/**
 * Is `blob` a well-formed public key (or certificate) of a type OpenSSH reads, with nothing after its fields?
 * known_hosts lines whose key does not pass are ignored, as ssh ignores keys sshkey_read() refuses.
 */
export function isWellFormedKeyBlob(blob: Buffer): boolean {
  const r = new WireReader(blob)
  const type = r.text()
  if (type === undefined) return false
  if (isCertificateType(type)) return parseCertificate(blob) !== undefined
  if (!PLAIN_TYPES.has(type)) return false
  return readKeyFields(r, type) !== undefined && r.done
}

/** One OpenSSH certificate, as read from its blob (the CA signature is checked by {@link verifyCertificate}). */
export interface SshCertificate {
  /** The whole certificate blob. */
  blob: Buffer
  /** `ssh-ed25519-cert-v01@openssh.com`, … */
  type: string
  /** The certified key's type (`ssh-ed25519`, …) and plain blob. */
  keyType: string
  key: Buffer
  serial: bigint
  certType: 'user' | 'host'
  keyId: string
  principals: string[]
  /** Seconds since the epoch; 0 and 2^64-1 mean "always" and "forever". */
  validAfter: bigint
  validBefore: bigint
  criticalOptions: string[]
  extensions: string[]
  /** The CA's public key blob. */
  signatureKey: Buffer
  /** The algorithm the CA signed with (`ssh-ed25519`, `rsa-sha2-512`, …). */
  signatureAlgorithm: string
  /** The signature's value (inside the signature blob). */
  signature: Buffer
  /** Bytes covered by the signature (from the start of the blob). */
  signedLength: number
}

/** Name/data pairs of the critical options or extensions section; undefined if malformed. */
function readOptions(section: Buffer): string[] | undefined {
  const r = new WireReader(section)
  const names: string[] = []
  while (!r.done) {
    const name = r.text()
    if (name === undefined || r.bytes() === undefined) return undefined
    names.push(name)
  }
  return names
}

/** Parse a certificate blob; undefined when it is not a well-formed certificate of a type kay reads. */
export function parseCertificate(blob: Buffer): SshCertificate | undefined {
  const r = new WireReader(blob)
  const type = r.text()
  if (type === undefined || !isCertificateType(type)) return undefined
  const keyType = plainName(type)
  if (!PLAIN_TYPES.has(keyType) || r.bytes() === undefined) return undefined
  const fields = readKeyFields(r, keyType)
  if (fields === undefined) return undefined
  const serial = r.u64()
  const kind = r.u32()
  const keyId = r.text()
  const principalsRaw = r.bytes()
  const validAfter = r.u64()
  const validBefore = r.u64()
  const critical = r.bytes()
  const exts = r.bytes()
  const reserved = r.bytes()
  const signatureKey = r.bytes()
  const signedLength = r.pos
  const sigBlob = r.bytes()
  if (
    serial === undefined ||
    (kind !== 1 && kind !== 2) ||
    keyId === undefined ||
    principalsRaw === undefined ||
    validAfter === undefined ||
    validBefore === undefined ||
    critical === undefined ||
    exts === undefined ||
    reserved === undefined ||
    signatureKey === undefined ||
    sigBlob === undefined ||
    !r.done
  ) {
    return undefined
  }
  const principals: string[] = []
  const pr = new WireReader(principalsRaw)
  while (!pr.done) {
    const p = pr.text()
    if (p === undefined || principals.length >= MAX_PRINCIPALS) return undefined
    principals.push(p)
  }
  const criticalOptions = readOptions(critical)
  const extensions = readOptions(exts)
  const sr = new WireReader(sigBlob)
  const signatureAlgorithm = sr.text()
  const signature = sr.bytes()
  if (criticalOptions === undefined || extensions === undefined || signatureAlgorithm === undefined || !signature) {
    return undefined
  }
  return {
    blob,
    type,
    keyType,
    key: keyBlob(keyType, fields),
    serial,
    certType: kind === 1 ? 'user' : 'host',
    keyId,
    principals,
    validAfter,
    validBefore,
    criticalOptions,
    extensions,
    signatureKey,
    signatureAlgorithm,
    signature,
    signedLength,
  }
}

/** A node:crypto public key for a plain key blob; undefined for types kay cannot verify signatures with. */
function publicKeyObject(blob: Buffer): { type: string; key: KeyObject } | undefined {
  const r = new WireReader(blob)
  const type = r.text()
  if (type === undefined) return undefined
  const fields = readKeyFields(r, type)
  if (fields === undefined || !r.done) return undefined
  const b64u = (b: Buffer) => b.toString('base64url')
  try {
    switch (type) {
      case 'ssh-ed25519':
        return {
          type,
          key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(fields[0] as Buffer) }, format: 'jwk' }),
        }
      case 'ecdsa-sha2-nistp256':
      case 'ecdsa-sha2-nistp384':
      case 'ecdsa-sha2-nistp521': {
        const ec = EC_CURVES[type] as (typeof EC_CURVES)[string]
        const q = fields[1] as Buffer
        const jwk = {
          kty: 'EC',
          crv: ec.crv,
          x: b64u(q.subarray(1, 1 + ec.size)),
          y: b64u(q.subarray(1 + ec.size)),
        }
        return { type, key: createPublicKey({ key: jwk, format: 'jwk' }) }
      }
      case 'ssh-rsa': {
        const unsigned = (b: Buffer) => {
          let i = 0
          while (i < b.length - 1 && b[i] === 0) i++
          return b.subarray(i)
        }
        const jwk = { kty: 'RSA', e: b64u(unsigned(fields[0] as Buffer)), n: b64u(unsigned(fields[1] as Buffer)) }
        return { type, key: createPublicKey({ key: jwk, format: 'jwk' }) }
      }
      default:
        return undefined
    }
  } catch {
    // Not a valid point or modulus: no key to verify with.
    return undefined
  }
}

/** An SSH mpint as a fixed-size big-endian integer (for IEEE P1363 ECDSA signatures); undefined if too long. */
function fixedSize(mpint: Buffer, size: number): Buffer | undefined {
  let i = 0
  while (i < mpint.length && mpint[i] === 0) i++
  const v = mpint.subarray(i)
  if (v.length > size) return undefined
  return Buffer.concat([Buffer.alloc(size - v.length), v])
}

/**
 * Verify an SSH signature (`alg` and value as in a signature blob) over `data` with a plain key blob. The algorithm
 * must fit the key: `ssh-ed25519` for ed25519, the curve's own name for ECDSA, `rsa-sha2-256|512` or `ssh-rsa` for
 * RSA. False for anything kay cannot verify.
 */
export function verifySshSignature(keyBlob: Buffer, alg: string, signature: Buffer, data: Buffer): boolean {
  const pk = publicKeyObject(keyBlob)
  if (pk === undefined) return false
  try {
    switch (pk.type) {
      case 'ssh-ed25519':
        return alg === 'ssh-ed25519' && signature.length === 64 && verify(null, data, pk.key, signature)
      case 'ecdsa-sha2-nistp256':
      case 'ecdsa-sha2-nistp384':
      case 'ecdsa-sha2-nistp521': {
        if (alg !== pk.type) return false
        const ec = EC_CURVES[pk.type] as (typeof EC_CURVES)[string]
        const sr = new WireReader(signature)
        const rr = sr.bytes()
        const ss = sr.bytes()
        if (rr === undefined || ss === undefined || !sr.done) return false
        const r = fixedSize(rr, ec.size)
        const s = fixedSize(ss, ec.size)
        if (r === undefined || s === undefined) return false
        return verify(ec.hash, data, { key: pk.key, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, s]))
      }
      case 'ssh-rsa': {
        const hash = { 'rsa-sha2-256': 'sha256', 'rsa-sha2-512': 'sha512', 'ssh-rsa': 'sha1' }[alg]
        return hash !== undefined && verify(hash, data, pk.key, signature)
      }
      default:
        return false
    }
  } catch {
    return false
  }
}

/** Is the CA's signature over the certificate valid (and made with a CA key type OpenSSH accepts)? */
export function verifyCertificate(cert: SshCertificate): boolean {
  const caType = new WireReader(cert.signatureKey).text()
  // A certificate cannot sign certificates (sshkey_type_is_valid_ca).
  if (caType === undefined || isCertificateType(caType)) return false
  return verifySshSignature(
    cert.signatureKey,
    cert.signatureAlgorithm,
    cert.signature,
    cert.blob.subarray(0, cert.signedLength),
  )
}

/** Why a host certificate was refused (stable names, used in error details). */
export type HostCertificateProblem =
  | 'not-host-certificate'
  | 'not-yet-valid'
  | 'expired'
  | 'principal'
  | 'critical-options'
  | 'signature-algorithm'
  | 'signature'

export interface HostCertificateCheck {
  /** The name dialed (lower-case HostName) or the HostKeyAlias: must be a principal when the certificate lists any. */
  name: string
  /** Now, in ms since the epoch (injected in tests). */
  nowMs: number
  /** Default {@link DEFAULT_CA_SIGNATURE_ALGORITHMS}. */
  caSignatureAlgorithms?: readonly string[]
}

/**
 * Check a host certificate as sshkey_cert_check_host() does, plus the CA signature (which OpenSSH checks when it
 * parses the key). Undefined when it passes, else the first problem found, in OpenSSH's order.
 */
export function checkHostCertificate(
  cert: SshCertificate,
  check: HostCertificateCheck,
): HostCertificateProblem | undefined {
  if (!verifyCertificate(cert)) return 'signature'
  if (cert.certType !== 'host') return 'not-host-certificate'
  const now = BigInt(Math.max(0, Math.floor(check.nowMs / 1000)))
  if (now < cert.validAfter) return 'not-yet-valid'
  if (now >= cert.validBefore) return 'expired'
  if (cert.principals.length > 0 && !cert.principals.includes(check.name)) return 'principal'
  if (cert.criticalOptions.length > 0) return 'critical-options'
  if (!(check.caSignatureAlgorithms ?? DEFAULT_CA_SIGNATURE_ALGORITHMS).includes(cert.signatureAlgorithm)) {
    return 'signature-algorithm'
  }
  return undefined
}

/** A certificate's validity window as OpenSSH prints it (`forever`, or ISO times). */
export function formatValidity(cert: SshCertificate): string {
  // Date holds ±8.64e15 ms; later times print as seconds since the epoch.
  const iso = (s: bigint) =>
    s > 8_640_000_000_000n ? `${s} s` : new Date(Number(s) * 1000).toISOString().replace(/\.000Z$/, 'Z')
  const always = cert.validAfter === 0n
  const forever = cert.validBefore === 0xffff_ffff_ffff_ffffn
  if (always && forever) return 'forever'
  if (always) return `before ${iso(cert.validBefore)}`
  if (forever) return `after ${iso(cert.validAfter)}`
  return `from ${iso(cert.validAfter)} to ${iso(cert.validBefore)}`
}
