/**
 * kay's ssh2 patch for OpenSSH certificates (patches/ssh2@1.17.0.patch, hunks marked "kay patch: certificates";
 * docs/adr/0010-ssh2-certificates.md), hunk by hunk, without a network: the installed ssh2 carries it, reads
 * certificate blobs (text, binary, as a kex host key) as their certified key, lets a client ask for host
 * certificates, and signs user auth with a certificate under the plain algorithm name. The handshakes themselves
 * are tested against real sshd (test/trust/certificates.sshd.test.ts, known-hosts.ssh.test.ts).
 */
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import ssh2, { type ParsedKey } from 'ssh2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type KeyFiles, keygen, signCert } from '../../src/testing/index.js'
import { verifySshSignature } from '../../src/trust/certificates.js'

const require = createRequire(import.meta.url)
const constants = require(require.resolve('ssh2/lib/protocol/constants.js')) as { CERT_SERVER_HOST_KEY?: string[] }
const { parseDERKey } = require(require.resolve('ssh2/lib/protocol/keyParser.js')) as {
  parseDERKey(data: Buffer, type: string): ParsedKey | Error
}

let dir: string
let ca: KeyFiles
const users: Record<'ed25519' | 'ecdsa' | 'rsa', { key: KeyFiles; cert: { path: string; blob: Buffer } }> = {} as never

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-ssh2-cert-'))
  ca = await keygen(dir, 'ca')
  for (const t of ['ed25519', 'ecdsa', 'rsa'] as const) {
    const key = await keygen(dir, `user_${t}`, t)
    users[t] = { key, cert: await signCert(ca, key, { host: false, principals: 'kay' }) }
  }
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('ssh2 with kay’s certificate patch', () => {
  it('is the patched ssh2', () => {
    expect(constants.CERT_SERVER_HOST_KEY).toContain('ssh-ed25519-cert-v01@openssh.com')
    expect(constants.CERT_SERVER_HOST_KEY).toContain('rsa-sha2-512-cert-v01@openssh.com')
    expect(readFileSync(require.resolve('ssh2/lib/protocol/utils.js'), 'utf8')).toContain('function certPlainName(')
  })

  it.each(['ed25519', 'ecdsa', 'rsa'] as const)(
    'reads a %s certificate (text, binary, kex form) as its key',
    async (t) => {
      const { key, cert } = users[t]
      const priv = ssh2.utils.parseKey(await readFile(key.path)) as ParsedKey
      const data = Buffer.from('exchange hash')
      const sig = priv.sign(data)
      const typeLen = cert.blob.readUInt32BE(0)
      const forms = [
        ssh2.utils.parseKey(await readFile(cert.path)),
        ssh2.utils.parseKey(cert.blob),
        parseDERKey(cert.blob.subarray(4 + typeLen), cert.blob.toString('latin1', 4, 4 + typeLen)),
      ]
      for (const parsed of forms) {
        if (parsed instanceof Error) throw parsed
        expect(parsed.type).toBe(`${key.type}-cert-v01@openssh.com`)
        expect(parsed.getPublicSSH().equals(cert.blob)).toBe(true)
        // What verifies a host's kex signature: the certified key.
        expect(parsed.verify(data, sig)).toBe(true)
      }
      // An unpatched-looking misparse (the nonce read as the key) would not verify.
      expect(ssh2.utils.parseKey(Buffer.concat([cert.blob.subarray(0, 8), Buffer.alloc(10)]))).toBeInstanceOf(Error)
    },
  )

  it('lets a client ask for host certificates, and only what it knows', () => {
    const client = new ssh2.Client()
    client.on('error', () => {})
    const sock = new PassThrough()
    expect(() =>
      client.connect({
        sock,
        username: 'x',
        // @types/ssh2 knows no certificate algorithms.
        algorithms: {
          serverHostKey: ['ssh-ed25519-cert-v01@openssh.com', 'rsa-sha2-256-cert-v01@openssh.com'] as never[],
        },
      }),
    ).not.toThrow()
    client.end()
    expect(() =>
      new ssh2.Client().connect({
        sock: new PassThrough(),
        username: 'x',
        algorithms: { serverHostKey: ['ssh-dss-cert-v01@openssh.com' as never] },
      }),
    ).toThrow(/Unsupported algorithm/)
  })

  it.each([
    ['ed25519', 'ssh-ed25519-cert-v01@openssh.com', 'ssh-ed25519'],
    ['ecdsa', 'ecdsa-sha2-nistp256-cert-v01@openssh.com', 'ecdsa-sha2-nistp256'],
    ['rsa', 'rsa-sha2-256-cert-v01@openssh.com', 'rsa-sha2-256'],
  ] as const)('signs user auth with a %s certificate as %s, the signature named %s', async (t, algo, sigName) => {
    const { key, cert } = users[t]
    const priv = ssh2.utils.parseKey(await readFile(key.path)) as ParsedKey
    const certParsed = ssh2.utils.parseKey(cert.blob) as ParsedKey
    const certified = Object.create(priv, {
      type: { value: certParsed.type },
      getPublicSSH: { value: () => cert.blob },
    }) as ParsedKey
    const seen = await new Promise<{ algo: string; key: Buffer; signature: Buffer; blob: Buffer }>(
      (resolve, reject) => {
        const server = new ssh2.Server({ hostKeys: [readFileSync(ca.path)] }, (conn) => {
          conn.on('error', () => {})
          conn.on('authentication', (ctx) => {
            if (ctx.method !== 'publickey') return ctx.reject(['publickey'])
            if (!ctx.signature || !ctx.blob) return ctx.accept() // the "would you accept this key" query
            resolve({ algo: ctx.key.algo, key: ctx.key.data, signature: ctx.signature, blob: ctx.blob })
            ctx.reject()
            server.close()
          })
        })
        server.listen(0, '127.0.0.1', () => {
          const port = (server.address() as { port: number }).port
          const c = new ssh2.Client()
          c.on('error', () => {})
          c.on('close', () => server.close())
          c.connect({
            host: '127.0.0.1',
            port,
            username: 'kay',
            hostVerifier: () => true,
            authHandler: [{ type: 'publickey', username: 'kay', key: certified } as never],
          })
        })
        server.on('error', reject)
      },
    )
    expect(seen.algo).toBe(algo)
    expect(seen.key.equals(cert.blob)).toBe(true)
    // ssh2's server leaves a signature blob whose name differs from the key algorithm as it came: name + value.
    const nameLen = seen.signature.readUInt32BE(0)
    expect(seen.signature.toString('latin1', 4, 4 + nameLen)).toBe(sigName)
    const value = seen.signature.subarray(4 + nameLen + 4)
    expect(verifySshSignature(key.blob, sigName, value, seen.blob)).toBe(true)
  })
})
