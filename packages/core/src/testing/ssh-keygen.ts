/**
 * Keys and OpenSSH certificates for tests, made by the real ssh-keygen (what operators use): host keys of each type,
 * CAs, host and user certificates with chosen principals and validity windows.
 */
import { execFile } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { SSH_KEYGEN_PATH } from './sshd.js'

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

/** Key types {@link keygen} makes. */
export type KeyType = 'ed25519' | 'ecdsa' | 'ecdsa384' | 'rsa'

const TYPE_ARGS: Record<KeyType, string[]> = {
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
export async function keygen(dir: string, name: string, type: KeyType = 'ed25519'): Promise<KeyFiles> {
  const path = join(dir, name)
  await rm(path, { force: true })
  await rm(`${path}.pub`, { force: true })
  await run(SSH_KEYGEN_PATH, [...TYPE_ARGS[type], '-q', '-N', '', '-C', name, '-f', path])
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
  await run(SSH_KEYGEN_PATH, args, { env: { ...process.env, TZ: 'UTC' } })
  const path = key.path.endsWith('.pub') ? key.path.replace(/\.pub$/, '-cert.pub') : `${key.path}-cert.pub`
  return { path, ...lineOf(await readFile(path, 'utf8')) }
}
