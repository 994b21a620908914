import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import ssh2, { type Connection, type ServerChannel } from 'ssh2'
import { identifyCommand } from '../../../src/collection/commands.js'
import { generateHostKey } from '../../../src/sim/keys.js'
import { capturedFrame } from '../../fixtures/proc/frames.js'
import { listenOnLoopback } from './servers.js'

const { Server } = ssh2

/** What a hostile SSH server does once the key exchange is done (it speaks real SSH up to that point). */
export type HostileSshBehaviour =
  /** Never answers the user-auth request, and floods keepalive requests (it reads what the client sends). */
  | 'auth-stall-flood'
  /** Lets the client in, then stops reading its socket and floods want-reply global requests. */
  | 'flood-unread'
  /** Lets the client in, then writes random bytes without end on the encrypted transport. */
  | 'garbage-after-auth'
  /**
   * Lets the client in; answers kay's one-shot collect command properly, and every other exec (the stream loops
   * included) with endless channel data (within the window the client grants).
   */
  | 'exec-flood'

export interface HostileSshServer {
  readonly port: number
  readonly host: '127.0.0.1'
  /** Connections accepted so far. */
  readonly accepted: number
  /** Connections open now. */
  readonly open: number
  /** Collection streams the client opened (each one flooded). */
  readonly streams: number
  close(): Promise<void>
}

const CHUNK = 32 * 1024
/** The server's own send buffer bound: it floods, but never grows its own memory without bound. */
const SERVER_BACKLOG = 1024 * 1024

/** A hostile ssh2 server on 127.0.0.1 that lets any public key in (it wants the client to reach the next phase). */
export async function startHostileSshServer(behaviour: HostileSshBehaviour): Promise<HostileSshServer> {
  const conns = new Set<Connection>()
  let accepted = 0
  let streams = 0
  const server = new Server({ hostKeys: [{ key: generateHostKey().parsed }] }, (client) => {
    accepted++
    conns.add(client)
    client.on('error', () => {})
    client.on('close', () => conns.delete(client))
    const internal = client as unknown as {
      _sock: Socket
      _protocol: { ping(): void }
    }
    const sock = internal._sock
    /** Calls `step` while the connection is open and the server's own backlog is small; yields between batches. */
    const flood = (step: () => void) => {
      const pump = () => {
        if (sock.destroyed || !conns.has(client)) return
        for (let i = 0; i < 64 && sock.writableLength < SERVER_BACKLOG; i++) step()
        setImmediate(pump)
      }
      pump()
    }
    client.on('authentication', (ctx) => {
      if (behaviour === 'auth-stall-flood') {
        flood(() => internal._protocol.ping())
        return
      }
      ctx.accept()
    })
    client.on('ready', () => {
      if (behaviour === 'garbage-after-auth') {
        const junk = randomBytes(CHUNK)
        flood(() => sock.write(junk))
        return
      }
      if (behaviour === 'flood-unread') {
        sock.pause()
        // ssh2 reads through its own 'data' listener: stop it as well, so nothing the client sends is read.
        sock.removeAllListeners('data')
        flood(() => internal._protocol.ping())
        return
      }
      client.on('session', (accept) => {
        const session = accept()
        session.on('exec', (acceptExec, _reject, info) => {
          const ch: ServerChannel = acceptExec()
          ch.on('error', () => {})
          const kind = identifyCommand(info.command).kind
          if (kind === 'stream') streams++
          if (kind === 'collect') {
            ch.end(capturedFrame('local-a'))
            ch.exit(0)
            ch.close()
            return
          }
          const junk = randomBytes(CHUNK)
          const pump = () => {
            while (ch.writable && ch.write(junk));
            if (ch.writable) ch.once('drain', pump)
          }
          pump()
        })
      })
    })
  })
  const port = await listenOnLoopback(server)
  return {
    port,
    host: '127.0.0.1',
    get accepted() {
      return accepted
    },
    get open() {
      return conns.size
    },
    get streams() {
      return streams
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of conns) (c as unknown as { _sock: Socket })._sock.destroy()
        server.close(() => resolve())
      }),
  }
}
