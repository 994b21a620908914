import { randomBytes } from 'node:crypto'
import { createServer, type Server, type Socket } from 'node:net'

/** What a hostile server does with each accepted socket. */
export type HostileBehaviour =
  /** Accept TCP, never send a byte. */
  | 'silent'
  /** Send 64 KiB of random bytes instead of a banner, then keep the socket open and quiet. */
  | 'garbage-burst'
  /** Send random bytes without end (backpressure-aware, bounded to 256 MiB) until the client closes. */
  | 'garbage-stream'
  /** Send a valid SSH version line, then nothing: the key exchange never starts on our side. */
  | 'banner-then-stall'
  /** Send a version line and the first bytes of a KEXINIT packet whose length promises more, then nothing. */
  | 'truncated-kexinit'
  /** Send a valid version line, then random bytes without end (the first "packet length" is garbage). */
  | 'banner-then-garbage'
  /** Send a valid version line, then a packet length of 2 GiB and zero bytes without end. */
  | 'huge-packet-length'
  /** Send pre-banner text lines of 8000 bytes without end (ssh2 and OpenSSH allow 1024 such lines). */
  | 'long-greeting'

export interface HostileServer {
  readonly port: number
  readonly host: '127.0.0.1'
  /** Sockets accepted so far. */
  readonly accepted: number
  /** Sockets open now (the client must close them after its deadline). */
  readonly open: number
  /** Bytes the server wrote (garbage streams). */
  readonly bytesWritten: number
  close(): Promise<void>
}

const GARBAGE_CHUNK = 16 * 1024
const GARBAGE_STREAM_MAX = 256 * 1024 * 1024
const BANNER = 'SSH-2.0-hostile_1.0\r\n'
const STREAMING: ReadonlySet<HostileBehaviour> = new Set([
  'garbage-stream',
  'banner-then-garbage',
  'huge-packet-length',
  'long-greeting',
])

/** Writes `next()` chunks until the client closes or GARBAGE_STREAM_MAX is sent, honouring backpressure. */
function stream(sock: Socket, write: (b: Buffer | string) => boolean, next: () => Buffer): void {
  let sent = 0
  const pump = () => {
    while (!sock.destroyed && sent < GARBAGE_STREAM_MAX) {
      const chunk = next()
      sent += chunk.length
      if (!write(chunk)) {
        sock.once('drain', pump)
        return
      }
    }
  }
  pump()
}

/** Listens on 127.0.0.1, a free port; resolves with the port. */
export async function listenOnLoopback(server: {
  once(event: 'error', fn: (err: Error) => void): unknown
  listen(port: number, host: string, fn: () => void): unknown
  address(): ReturnType<Server['address']>
}): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('hostile server: no TCP address')
  return addr.port
}

/**
 * A purpose-built TCP server on 127.0.0.1 that misbehaves before or during the SSH handshake in one fixed way.
 * It holds every socket until the client closes it, so a test can see whether the client let go.
 */
export async function startHostileServer(behaviour: HostileBehaviour): Promise<HostileServer> {
  const sockets = new Set<Socket>()
  let accepted = 0
  let bytesWritten = 0
  // A streaming peer keeps sending after the client half-closes (ssh2 answers a parse error with end() only); it
  // sees the client go when its writes fail. The quiet ones close when the client does.
  const server: Server = createServer({ allowHalfOpen: STREAMING.has(behaviour) }, (sock) => {
    accepted++
    sockets.add(sock)
    sock.on('error', () => {})
    sock.on('close', () => sockets.delete(sock))
    sock.resume() // read and discard whatever the client sends (its banner, its KEXINIT)
    const write = (b: Buffer | string) => {
      bytesWritten += Buffer.byteLength(b)
      return sock.write(b)
    }
    switch (behaviour) {
      case 'silent':
        return
      case 'garbage-burst':
        write(randomBytes(64 * 1024))
        return
      case 'garbage-stream':
        stream(sock, write, () => randomBytes(GARBAGE_CHUNK))
        return
      case 'banner-then-stall':
        write(BANNER)
        return
      case 'banner-then-garbage':
        write(BANNER)
        stream(sock, write, () => randomBytes(GARBAGE_CHUNK))
        return
      case 'huge-packet-length': {
        write(Buffer.concat([Buffer.from(BANNER), Buffer.from([0x7f, 0xff, 0xff, 0xf0])]))
        const zeros = Buffer.alloc(GARBAGE_CHUNK)
        stream(sock, write, () => zeros)
        return
      }
      case 'long-greeting': {
        const line = Buffer.from(`${'x'.repeat(7998)}\r\n`)
        stream(sock, write, () => line)
        return
      }
      case 'truncated-kexinit': {
        // uint32 packet_length = 1020, padding_length = 4, SSH_MSG_KEXINIT (20), 7 of the 16 cookie bytes.
        const head = Buffer.from([0, 0, 3, 0xfc, 4, 20, 1, 2, 3, 4, 5, 6, 7])
        write(Buffer.concat([Buffer.from(BANNER), head]))
        return
      }
    }
  })
  const port = await listenOnLoopback(server)
  return {
    port,
    host: '127.0.0.1',
    get accepted() {
      return accepted
    },
    get open() {
      return sockets.size
    },
    get bytesWritten() {
      return bytesWritten
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
