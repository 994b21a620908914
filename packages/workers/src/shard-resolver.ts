/**
 * How a shard's actors resolve names: by asking the supervisor, whose one CachingResolver (core/connection/resolver)
 * serves every shard — one cache and one bound on lookups in flight for the whole fleet, and an injected lookup
 * (a function, which cannot cross threads) works for every shard.
 */
import { isIP } from 'node:net'
import { AbortedError, ClosedError, errorFromJSON, type ResolvedAddress, type Resolver } from '@kay/core'
import type { ShardMessage, ShardRequest } from './protocol.js'

interface Waiter {
  resolve: (a: ResolvedAddress) => void
  reject: (e: Error) => void
}

export class SupervisorResolver implements Resolver {
  readonly #post: (m: ShardMessage) => void
  readonly #pending = new Map<number, Waiter>()
  #next = 1
  #closed = false

  constructor(post: (m: ShardMessage) => void) {
    this.#post = post
  }

  resolve(hostname: string, signal?: AbortSignal): Promise<ResolvedAddress> {
    const family = isIP(hostname)
    if (family !== 0) return Promise.resolve({ address: hostname, family: family as 4 | 6 })
    if (this.#closed) return Promise.reject(new ClosedError(`${hostname}: shard stopping`))
    if (signal?.aborted) return Promise.reject(new AbortedError(`${hostname}: name lookup aborted`))
    const id = this.#next++
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        // The supervisor's answer, when it comes, finds no waiter and is dropped.
        if (this.#pending.delete(id)) reject(new AbortedError(`${hostname}: name lookup aborted`))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#pending.set(id, {
        resolve: (a) => {
          signal?.removeEventListener('abort', onAbort)
          resolve(a)
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort)
          reject(e)
        },
      })
      this.#post({ type: 'resolve', id, hostname })
    })
  }

  /** The supervisor's answer to one `resolve`. */
  settle(m: ShardRequest & { type: 'resolved' }): void {
    const w = this.#pending.get(m.id)
    if (!w) return
    this.#pending.delete(m.id)
    if (m.address !== undefined) w.resolve({ address: m.address, family: m.family ?? (isIP(m.address) === 6 ? 6 : 4) })
    else w.reject(errorFromJSON(m.error!))
  }

  /** Fail every lookup still waiting (the shard is stopping). */
  close(): void {
    this.#closed = true
    for (const [id, w] of this.#pending) {
      this.#pending.delete(id)
      w.reject(new ClosedError('shard stopping'))
    }
  }
}
