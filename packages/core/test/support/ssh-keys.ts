/**
 * Certificates ssh-keygen will not make (critical options on a host certificate, a certificate as the CA key), for
 * the certificate checks' unit tests. Keys and ordinary certificates come from `@kay/core/testing` (ssh-keygen).
 */
import { generateKeyPairSync, sign } from 'node:crypto'

function str(b: Buffer | string): Buffer {
  const v = typeof b === 'string' ? Buffer.from(b) : b
  const len = Buffer.alloc(4)
  len.writeUInt32BE(v.length)
  return Buffer.concat([len, v])
}

function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(n)
  return b
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

/** An ed25519 CA made in memory, for {@link buildCertificate}. */
export function memoryCa(): { blob: Buffer; sign(data: Buffer): Buffer } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32)
  return {
    blob: Buffer.concat([str('ssh-ed25519'), str(raw)]),
    sign: (data) => Buffer.concat([str('ssh-ed25519'), str(sign(null, data, privateKey))]),
  }
}

/**
 * An ed25519 certificate of the ed25519 key `keyBlob`, signed by `ca`, with any fields (what ssh-keygen refuses
 * to make: critical options on a host certificate, a certificate blob as the CA key).
 */
export function buildCertificate(
  keyBlob: Buffer,
  ca: { blob: Buffer; sign(data: Buffer): Buffer },
  o: {
    certType?: 1 | 2
    principals?: string[]
    validAfter?: bigint
    validBefore?: bigint
    critical?: Array<[string, string]>
    signatureKey?: Buffer
  } = {},
): Buffer {
  // keyBlob = string "ssh-ed25519", string pk
  const pk = keyBlob.subarray(4 + 11 + 4)
  const options = (list: Array<[string, string]>) =>
    str(Buffer.concat(list.map(([n, d]) => Buffer.concat([str(n), str(d.length === 0 ? Buffer.alloc(0) : str(d))]))))
  const body = Buffer.concat([
    str('ssh-ed25519-cert-v01@openssh.com'),
    str(Buffer.alloc(32, 7)),
    str(pk),
    u64(1n),
    u32(o.certType ?? 2),
    str('built'),
    str(Buffer.concat((o.principals ?? []).map((p) => str(p)))),
    u64(o.validAfter ?? 0n),
    u64(o.validBefore ?? 0xffff_ffff_ffff_ffffn),
    options(o.critical ?? []),
    options([]),
    str(''),
    str(o.signatureKey ?? ca.blob),
  ])
  return Buffer.concat([body, str(ca.sign(body))])
}
