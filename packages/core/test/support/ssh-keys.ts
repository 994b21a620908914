/**
 * Keys and certificates for trust tests, made by the real ssh-keygen (what operators use), plus a small builder
 * for certificates ssh-keygen will not make (critical options on a host certificate, a certificate as CA).
 */
import { execFile } from 'node:child_process'
import { generateKeyPairSync, sign } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface KeyFiles {
  /** Private key path (0600). */
  path: string
  pubPath: string
  /** `type base64` (no comment). */
  line: string
  blob: Buffer
  type: string
}

const TYPE_ARGS: Record<string, string[]> = {
  ed25519: ['-t', 'ed25519'],
  ecdsa: ['-t', 'ecdsa', '-b', '256'],
  ecdsa384: ['-t', 'ecdsa', '-b', '384'],
  rsa: ['-t', 'rsa', '-b', '2048'],
}

/** A public key line's `type base64` and blob. */
export function lineOf(text: string): { line: string; blob: Buffer; type: string } {
  const [type, b64] = text.trim().split(/\s+/) as [string, string]
  return { line: `${type} ${b64}`, blob: Buffer.from(b64, 'base64'), type }
}

/** `ssh-keygen -t <type>` at `<dir>/<name>` (no passphrase). */
export async function keygen(dir: string, name: string, type: keyof typeof TYPE_ARGS = 'ed25519'): Promise<KeyFiles> {
  const path = join(dir, name)
  await rm(path, { force: true })
  await rm(`${path}.pub`, { force: true })
  await run('ssh-keygen', [...(TYPE_ARGS[type] as string[]), '-q', '-N', '', '-C', name, '-f', path])
  const pub = lineOf(await readFile(`${path}.pub`, 'utf8'))
  return { path, pubPath: `${path}.pub`, ...pub }
}

export interface CertOptions {
  /** `-h`: a host certificate (default true). */
  host?: boolean
  /** `-n`, comma-separated; omitted: no principals (valid for any name). */
  principals?: string
  /** `-V`, e.g. `20300101:20300201` (UTC) or `-5m:+1h`. Default: always valid. */
  validity?: string
  /** `-I`. Default `kay-test`. */
  id?: string
  /** `-z`. */
  serial?: number
  /** `-t` for an RSA CA: `rsa-sha2-512` (default), `rsa-sha2-256` or `ssh-rsa` (SHA-1). */
  sigAlg?: string
  /** More ssh-keygen options (`-O …`). */
  extra?: string[]
}

/** `ssh-keygen -s <ca>` over `<key>.pub`; returns the certificate (`<key>-cert.pub`). */
export async function signCert(
  ca: KeyFiles,
  key: KeyFiles,
  o: CertOptions = {},
): Promise<{ path: string; line: string; blob: Buffer }> {
  const args = ['-q', '-s', ca.path, '-I', o.id ?? 'kay-test']
  if (o.host ?? true) args.push('-h')
  if (o.principals !== undefined) args.push('-n', o.principals)
  if (o.validity !== undefined) args.push('-V', o.validity)
  if (o.serial !== undefined) args.push('-z', String(o.serial))
  if (o.sigAlg !== undefined) args.push('-t', o.sigAlg)
  args.push(...(o.extra ?? []), key.pubPath)
  // -V times are local: read them as UTC, whatever the machine's zone.
  await run('ssh-keygen', args, { env: { ...process.env, TZ: 'UTC' } })
  const path = key.path.endsWith('.pub') ? key.path.replace(/\.pub$/, '-cert.pub') : `${key.path}-cert.pub`
  return { path, ...lineOf(await readFile(path, 'utf8')) }
}

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
