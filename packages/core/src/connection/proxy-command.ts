/**
 * ProxyCommand (ssh_config): the connection is the stdin/stdout of a command, as ssh runs it — through the user's
 * shell as `exec <command>`, with `%h` `%k` `%n` `%p` `%r` `%%` expanded. One command per connection, alive as long
 * as the connection: closing the stream ends the command and anything it started (SIGTERM to its own process
 * group), and the command ending closes the stream —
 * with an error naming its exit status and the tail of its stderr when it failed, so a broken bastion reads as
 * one, not as a bare "connection closed".
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { Duplex } from 'node:stream'
import { checkProxyCommand } from '../config/ssh-config.js'
import { ConfigError, ConnectError, type KayError } from '../errors.js'
import type { Connector, HostTarget } from '../types.js'

/** The tokens ssh expands in ProxyCommand that kay supports. */
const TOKEN_RE = /%(.)/g
const STDERR_TAIL = 1024

/**
 * `command` with %h (HostName), %p (port), %r (user), %n (the host as named before HostName), %k (HostKeyAlias, else
 * %n) and %% expanded, as ssh expands ProxyCommand.
 */
export function expandProxyCommand(command: string, target: HostTarget): string {
  checkProxyCommand(command)
  const named = target.originalHost ?? target.id
  return command.replace(TOKEN_RE, (_all, t: string) => {
    switch (t) {
      case 'h':
        return target.hostname
      case 'p':
        return String(target.port)
      case 'r':
        return target.user
      case 'n':
        return named
      case 'k':
        return target.hostKeyAlias ?? named
      default:
        return '%'
    }
  })
}

/** The stream over a ProxyCommand's stdio. */
class ProxyCommandStream extends Duplex {
  readonly #child: ChildProcess
  readonly #host: string
  #stderr = ''

  constructor(child: ChildProcess, host: string) {
    super()
    this.#child = child
    this.#host = host
    const out = child.stdout!
    out.on('data', (d: Buffer) => {
      if (!this.push(d)) out.pause()
    })
    child.stderr!.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString('utf8')).slice(-STDERR_TAIL)
    })
    // The command may exit while data is still being written to it; its exit is reported below.
    child.stdin!.on('error', () => {})
    child.on('error', (err) => this.destroy(this.#error(`cannot run ProxyCommand: ${err.message}`, err)))
    child.on('close', (code, signal) => {
      if (this.destroyed) return
      if (code === 0) this.push(null)
      else
        this.destroy(this.#error(`ProxyCommand exited with ${code === null ? `signal ${signal}` : `status ${code}`}`))
    })
  }

  #error(what: string, cause?: unknown): KayError {
    const tail = this.#stderr.trim()
    return new ConnectError(`${this.#host}: ${what}${tail ? `: ${tail}` : ''}`, { host: this.#host, cause })
  }

  override _read(): void {
    this.#child.stdout!.resume()
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#child.stdin!.write(chunk, () => cb())
  }

  /** The client has said all it will (ssh2 ends the stream after its disconnect): as ssh does, end the command. */
  override _final(cb: (err?: Error | null) => void): void {
    this.#child.stdin!.end(() => {
      cb()
      this.destroy()
    })
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const c = this.#child
    // The command runs in its own process group: end it and whatever it started (a shell's children too).
    if (c.pid !== undefined) {
      try {
        process.kill(-c.pid, 'SIGTERM')
      } catch {
        // The group is already gone.
      }
    }
    cb(err)
  }
}

/**
 * Connects through `target.proxyCommand`. Resolves once the command has started; what it does next (connects
 * or fails) shows on the stream, which the actor's handshake deadline covers like a TCP connect.
 */
export const proxyCommandConnector: Connector = (target) =>
  new Promise((resolve, reject) => {
    const command = target.proxyCommand
    if (command === undefined) {
      reject(new ConfigError(`${target.id}: no ProxyCommand`, { host: target.id }))
      return
    }
    let expanded: string
    try {
      expanded = expandProxyCommand(command, target)
    } catch (err) {
      reject(err)
      return
    }
    const child = spawn(process.env.SHELL || '/bin/sh', ['-c', `exec ${expanded}`], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group, so that closing the connection can end all of it
    })
    const onError = (err: Error) =>
      reject(new ConnectError(`${target.id}: cannot run ProxyCommand: ${err.message}`, { host: target.id, cause: err }))
    child.once('error', onError)
    child.once('spawn', () => {
      child.removeListener('error', onError)
      resolve(new ProxyCommandStream(child, target.id))
    })
  })
