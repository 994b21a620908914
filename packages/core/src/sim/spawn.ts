import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ClosedError, ConfigError, errorFromJSON, TimeoutError } from '../errors.js'
import {
  type ChildMessage,
  isChildMessage,
  type ParentMessage,
  type SimMethod,
  type SpawnSimFleetOptions,
} from './protocol.js'
import type { RestartOptions, SimFleetStats, SimHostInfo, SimHostSettings } from './types.js'

export type { SpawnSimFleetOptions } from './protocol.js'

/** A fleet running in a child process: the same controls as {@link SimFleet}, asynchronous, over IPC. */
export interface RemoteSimFleet {
  readonly pid: number
  readonly hosts: readonly SimHostInfo[]
  setFault(which: number | string, settings: SimHostSettings): Promise<void>
  drop(which: number | string): Promise<void>
  restart(which: number | string, opts?: RestartOptions): Promise<SimHostInfo>
  stats(): Promise<SimFleetStats>
  resetStats(): Promise<void>
  /** Close the fleet and wait for the child to exit (killed if it does not within `timeoutMs`). Idempotent. */
  close(timeoutMs?: number): Promise<void>
}

export interface SpawnOptions {
  /** How long to wait for the child to report its hosts. Default 60 s (2,000 hosts start in a few seconds). */
  startTimeoutMs?: number
}

const CLOSE_TIMEOUT_MS = 5000

/**
 * Where the child entry is and how to run it: from source (`.ts`, through tsx with the kay-source
 * condition) or from the built `dist` (`.js`, plain node).
 */
function childEntry(): { path: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts')
  const path = fileURLToPath(new URL(fromSource ? './main.ts' : './main.js', import.meta.url))
  return { path, execArgv: fromSource ? ['--conditions=kay-source', '--import', 'tsx'] : [] }
}

/**
 * Start a simulated fleet in a child process (for benchmarks and the demo, so the fleet's CPU is not the
 * collector's). The child exits when `close()` is called or when this process dies.
 */
export async function spawnSimFleet(opts: SpawnSimFleetOptions, spawn: SpawnOptions = {}): Promise<RemoteSimFleet> {
  if (!Array.isArray(opts.authorizedKeys) || opts.authorizedKeys.some((k) => typeof k !== 'string')) {
    throw new ConfigError('spawnSimFleet: authorizedKeys must be OpenSSH public key lines (strings)')
  }
  const entry = childEntry()
  const child = fork(entry.path, [], {
    execArgv: entry.execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  })
  const remote = new Remote(child)
  try {
    await remote.start(opts, spawn.startTimeoutMs ?? 60_000)
  } catch (err) {
    await remote.close()
    throw err
  }
  return remote
}

class Remote implements RemoteSimFleet {
  readonly #child: ChildProcess
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  readonly #exited: Promise<void>
  #nextId = 1
  #hosts: SimHostInfo[] = []
  #exitedNow = false
  #closing: Promise<void> | undefined
  #onReady: ((m: ChildMessage) => void) | undefined

  constructor(child: ChildProcess) {
    this.#child = child
    this.#exited = new Promise((resolve) => {
      child.once('exit', () => {
        this.#exitedNow = true
        const err = new ClosedError('simulator child process exited')
        for (const p of this.#pending.values()) p.reject(err)
        this.#pending.clear()
        this.#onReady?.({ kind: 'kay-sim:failed', error: err.toJSON() })
        resolve()
      })
    })
    child.on('error', () => {})
    child.on('message', (m: unknown) => {
      if (!isChildMessage(m)) return
      if (m.kind === 'kay-sim:reply') {
        const p = this.#pending.get(m.id)
        if (!p) return
        this.#pending.delete(m.id)
        if (m.ok) p.resolve(m.value)
        else p.reject(errorFromJSON(m.error))
        return
      }
      this.#onReady?.(m)
    })
  }

  get pid(): number {
    return this.#child.pid ?? -1
  }

  get hosts(): readonly SimHostInfo[] {
    return this.#hosts
  }

  start(opts: SpawnSimFleetOptions, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#onReady = undefined
        reject(new TimeoutError(`simulator child did not start within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#onReady = (m) => {
        clearTimeout(timer)
        this.#onReady = undefined
        if (m.kind === 'kay-sim:ready') {
          this.#hosts = m.hosts
          resolve()
        } else if (m.kind === 'kay-sim:failed') {
          reject(errorFromJSON(m.error))
        }
      }
      this.#send({ kind: 'kay-sim:start', opts })
    })
  }

  #send(msg: ParentMessage): void {
    if (this.#exitedNow || !this.#child.connected) throw new ClosedError('simulator child process is gone')
    this.#child.send(msg)
  }

  #call<T>(method: SimMethod, args: unknown[]): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const id = this.#nextId++
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      try {
        this.#send({ kind: 'kay-sim:call', id, method, args })
      } catch (err) {
        this.#pending.delete(id)
        reject(err)
      }
    })
  }

  setFault(which: number | string, settings: SimHostSettings): Promise<void> {
    return this.#call('setFault', [which, settings])
  }

  drop(which: number | string): Promise<void> {
    return this.#call('drop', [which])
  }

  async restart(which: number | string, opts: RestartOptions = {}): Promise<SimHostInfo> {
    const info = await this.#call<SimHostInfo>('restart', [which, opts])
    const i = this.#hosts.findIndex((h) => h.name === info.name)
    if (i >= 0) this.#hosts[i] = info
    return info
  }

  stats(): Promise<SimFleetStats> {
    return this.#call('stats', [])
  }

  resetStats(): Promise<void> {
    return this.#call('resetStats', [])
  }

  close(timeoutMs = CLOSE_TIMEOUT_MS): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#exitedNow) return
      const kill = setTimeout(() => this.#child.kill('SIGKILL'), timeoutMs)
      try {
        await this.#call('close', []).catch(() => {})
        // The child exits on its own after replying; disconnecting also tells it to go.
        if (this.#child.connected) this.#child.disconnect()
        await this.#exited
      } finally {
        clearTimeout(kill)
      }
    })()
    return this.#closing
  }
}
