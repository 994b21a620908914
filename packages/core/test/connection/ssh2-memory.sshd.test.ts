/**
 * The ssh2 patch's memory hunks (patches/ssh2@1.17.0.patch, `(kay patch: memory)`), against real OpenSSH sshd: what
 * a connection keeps for its whole life. Connections that offer the same algorithms share one KexInit; the remote
 * ident and the GCM tag buffer are their own memory, not slices that keep a shared 8 KiB pool slab alive; the key
 * exchange drops its completion closure (which holds the shared secret) and its ephemeral key pair once done — and rekeys still work after
 * that, the session ID unchanged.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from 'ssh2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ClientKey, makeClientKey, requireSshd, type SshdServer, startSshd } from '../../src/testing/index.js'

interface Internals {
  _protocol: {
    _offer: object
    _remoteIdentRaw: Buffer
    _decipher: { _tag?: Buffer }
    _kex: { type: string; sessionID: Uint8Array; finish: unknown; _keys: unknown }
  }
}

let dir: string
let key: ClientKey

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-ssh2-memory-'))
  key = await makeClientKey(dir)
})

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** A connected ssh2 client that trusts only this sshd's host key; counts completed key exchanges. */
function connect(s: SshdServer): Promise<{ client: Client; handshakes: () => number }> {
  const hostKey = Buffer.from(s.hostKeyPublic.split(' ')[1]!, 'base64')
  const client = new Client()
  let handshakes = 0
  client.on('handshake', () => handshakes++)
  return new Promise((resolve, reject) => {
    client.once('ready', () => resolve({ client, handshakes: () => handshakes }))
    client.once('error', reject)
    client.connect({
      host: s.host,
      port: s.port,
      username: s.user,
      privateKey: key.privateKey,
      hostVerifier: (k: Buffer) => k.equals(hostKey),
      // As the actor offers them: no compression; GCM, so the decipher has a tag buffer; X25519 key exchange.
      algorithms: { compress: ['none'], cipher: ['aes128-gcm@openssh.com'], kex: ['curve25519-sha256'] },
      readyTimeout: 10_000,
    })
  })
}

function exec(client: Client, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, ch) => {
      if (err) return reject(err)
      const out: Buffer[] = []
      ch.on('data', (b: Buffer) => out.push(b))
      ch.stderr.resume()
      ch.on('close', () => resolve(Buffer.concat(out).toString()))
    })
  })
}

/** A Buffer that owns its memory (not a slice of a larger, shared ArrayBuffer). */
function ownsMemory(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.buffer.byteLength === b.length
}

describe('ssh2 memory per connection (patched), against real sshd', () => {
  it('shares the KexInit, keeps no pool slices, drops the handshake closure, and still rekeys', async () => {
    // The server renegotiates keys after every 4 KiB: the command below makes it rekey many times.
    const s = await startSshd({ authorizedKeys: [key.publicKey], extraConfig: ['RekeyLimit 4K'] })
    const clients: Client[] = []
    try {
      const a = await connect(s)
      const b = await connect(s)
      clients.push(a.client, b.client)
      const pa = (a.client as unknown as Internals)._protocol
      const pb = (b.client as unknown as Internals)._protocol
      expect(pa._offer).toBe(pb._offer)
      for (const p of [pa, pb]) {
        expect(p._remoteIdentRaw.toString()).toMatch(/^SSH-2\.0-OpenSSH_/)
        expect(ownsMemory(p._remoteIdentRaw)).toBe(true)
        expect(p._decipher._tag).toBeInstanceOf(Buffer)
        expect(ownsMemory(p._decipher._tag!)).toBe(true)
        expect(Object.hasOwn(p._kex, 'finish')).toBe(false)
        expect(p._kex.type).toBe('25519')
        expect(p._kex._keys).toBeNull()
      }
      const sessionID = Buffer.from(pa._kex.sessionID)
      expect(sessionID.length).toBeGreaterThan(0)

      const out = await exec(a.client, 'seq 1 20000')
      expect(out).toBe(`${Array.from({ length: 20000 }, (_, i) => i + 1).join('\n')}\n`)
      expect(a.handshakes()).toBeGreaterThan(5)
      expect(await exec(a.client, 'echo still-here')).toBe('still-here\n')
      expect(Buffer.from(pa._kex.sessionID).equals(sessionID)).toBe(true)
      expect(Object.hasOwn(pa._kex, 'finish')).toBe(false)
      expect(pa._kex._keys).toBeNull()
      expect(pa._offer).toBe(pb._offer)
    } finally {
      for (const c of clients) c.end()
      await s.stop()
    }
  })
})
