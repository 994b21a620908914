/**
 * One look at the host key a host presents, without logging in: what `kay trust repin` shows and pins. The key
 * exchange runs as a normal dial's would (same connector, same host-key algorithm order, so the host presents the
 * key a connection would get); kay then refuses the key, so no authentication is ever attempted.
 */
import type { Duplex } from 'node:stream'
import { Client, type ServerHostKeyAlgorithm } from 'ssh2'
import ssh2Constants from 'ssh2/lib/protocol/constants.js'
import { ConfigError, ConnectError, HandshakeTimeoutError } from '../errors.js'
import type { HostTarget } from '../types.js'
import { directConnector } from './connector.js'

/**
 * The verifier's host-key algorithms, in its order (OpenSSH's, known types first), less any ssh2 cannot verify;
 * ssh2's defaults when it gives none. Certificates come from the kay ssh2 patch (CERT_SERVER_HOST_KEY, ADR 0010).
 */
export function hostKeyAlgorithms(preferred: readonly string[]): { serverHostKey?: ServerHostKeyAlgorithm[] } {
  // Without the patch (a stock ssh2) there are no certificate algorithms: hosts present plain keys.
  const supported = [...ssh2Constants.SUPPORTED_SERVER_HOST_KEY, ...(ssh2Constants.CERT_SERVER_HOST_KEY ?? [])]
  const list = preferred.filter((a) => supported.includes(a))
  if (list.length === 0) return {}
  return { serverHostKey: list as ServerHostKeyAlgorithm[] }
}

export interface ProbeOptions {
  /** Host-key algorithms in order (the verifier's `preferredHostKeyAlgorithms`). Default ssh2's. */
  hostKeyAlgorithms?: readonly string[]
  /** Deadline for TCP connect + key exchange, ms. Default the target's ConnectTimeout, else 10 s. */
  timeoutMs?: number
}

/**
 * The host key blob `target` presents (a certificate when it presents one). Rejects with ConnectError (refused,
 * reset, not SSH) or HandshakeTimeoutError; ConfigError for a ProxyJump host (only direct and ProxyCommand hosts
 * are probed).
 */
export async function probeHostKey(target: HostTarget, opts: ProbeOptions = {}): Promise<Buffer> {
  if (target.jump && target.jump.length > 0) {
    throw new ConfigError(
      `${target.id}: cannot look at its host key through ProxyJump yet; run 'kay trust forget ${target.id}' and ` +
        'let the next connection pin the key it presents',
    )
  }
  const timeoutMs = opts.timeoutMs ?? target.connectTimeoutMs ?? 10_000
  let sock: Duplex | undefined
  let timer: NodeJS.Timeout | undefined
  const client = new Client()
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(new HandshakeTimeoutError(`${target.id}: no host key within ${timeoutMs} ms`, { host: target.id })),
        timeoutMs,
      )
      let key: Buffer | undefined
      // ssh2 may emit several errors for one failure: a permanent listener, the first one counts.
      client.on('error', (err) => {
        if (key === undefined) {
          reject(new ConnectError(`${target.id}: ${err.message}`, { host: target.id, cause: err }))
        }
      })
      client.on('close', () => {
        if (key === undefined) {
          reject(new ConnectError(`${target.id}: closed before presenting a host key`, { host: target.id }))
        }
      })
      directConnector(target)(target).then(
        (s) => {
          sock = s
          client.connect({
            sock: s,
            username: target.user || 'kay',
            // Seen, then refused: the probe never authenticates.
            hostVerifier: ((k: Buffer, verify: (ok: boolean) => void) => {
              key = Buffer.from(k)
              resolve(key)
              verify(false)
            }) as never,
            algorithms: { ...hostKeyAlgorithms(opts.hostKeyAlgorithms ?? []), compress: ['none'] },
            readyTimeout: 0,
          })
        },
        (err: Error) =>
          reject(new ConnectError(`${target.id}: connect failed: ${err.message}`, { host: target.id, cause: err })),
      )
    })
  } finally {
    clearTimeout(timer)
    client.end()
    sock?.destroy()
  }
}
