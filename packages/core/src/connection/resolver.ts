/**
 * Name resolution for dials, outside the dial slot (DESIGN.md invariant 10: DNS never holds a dial slot). A host's
 * name is resolved before its dial asks for a slot, through one bounded, caching resolver, and the address it
 * returns is what the connector dials (no second lookup inside `net.connect`).
 *
 * - Bounded on its own: at most `concurrency` lookups in flight, the rest wait in order (bounded too).
 * - Cached: an answer for `positiveTtlMs` (or the shorter TTL a lookup reports), a failure for `negativeTtlMs` —
 *   a name that does not resolve fails at once, every tick, without a lookup per tick.
 * - Coalesced: concurrent lookups of one name are one lookup.
 * - Fair to good names: a name whose last lookup failed waits behind names that never failed, so when failures'
 *   cache entries expire together they never hold up the rest.
 * - Injectable: `lookup` is the one seam (tests never query a real DNS server); the default is `dns.lookup`, i.e.
 *   getaddrinfo with /etc/hosts and nsswitch, as ssh resolves.
 */
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { type Clock, systemClock, type TimerHandle } from '../clock.js'
import { AbortedError, KayError, QueueFullError, ResolveError } from '../errors.js'

export interface ResolvedAddress {
  address: string
  family: 4 | 6
}

/** One lookup's answer; `ttlMs` (optional) shortens how long it is cached. */
export interface LookupAnswer extends ResolvedAddress {
  ttlMs?: number
}

/**
 * Looks one name up. Rejects when the name does not resolve. Must settle: `signal` fires when kay no longer wants the
 * answer (its deadline passed, or the resolver closed), and a lookup that can stop then should.
 */
export type LookupFn = (hostname: string, signal: AbortSignal) => Promise<LookupAnswer>

/** What a dial asks: the address to connect to for a name. */
export interface Resolver {
  resolve(hostname: string, signal?: AbortSignal): Promise<ResolvedAddress>
}

export interface CachingResolverOptions {
  /** Default: `dns.lookup` (getaddrinfo, in libuv's thread pool). */
  lookup?: LookupFn
  /**
   * Lookups in flight. Default with `dns.lookup`: libuv's thread pool (UV_THREADPOOL_SIZE, 4 unless set; the kay CLI
   * sets 128) less 16 threads kept for file I/O, at least 2 — each getaddrinfo holds a thread until it returns; with an
   * injected lookup (asynchronous: a pending query costs a promise), 1024.
   */
  concurrency?: number
  /** Lookups waiting for a slot; past it, KAY_QUEUE_FULL. Default 100_000. */
  maxQueued?: number
  /** A lookup not answered within this is a failure (KAY_RESOLVE_FAILED), ms. Default 5000. */
  timeoutMs?: number
  /** How long an answer is reused, ms (a lookup's own shorter TTL wins). Default 60_000. 0: never cached. */
  positiveTtlMs?: number
  /** How long a failure is reused, ms. Default 30_000. 0: never cached. */
  negativeTtlMs?: number
  clock?: Clock
}

export interface ResolverStats {
  inFlight: number
  queued: number
  cached: number
  /** Lookups started (cache misses). */
  lookups: number
  maxInFlight: number
}

interface Entry {
  /** Neither while the first lookup is in flight. */
  answer: ResolvedAddress | undefined
  error: KayError | undefined
  expiresAt: number
  /** The last lookup of this name failed: a new one waits behind names that never failed. */
  failedBefore: boolean
  /** The lookup in flight or queued, shared by every caller asking meanwhile. */
  pending: Promise<ResolvedAddress> | undefined
}

interface Job {
  hostname: string
  entry: Entry
  resolve: (a: ResolvedAddress) => void
  reject: (e: KayError) => void
}

/** getaddrinfo through Node, first address (as ssh tries them in order, kay dials the first). */
const systemLookup: LookupFn = async (hostname) => {
  const r = await dnsLookup(hostname)
  return { address: r.address, family: r.family === 6 ? 6 : 4 }
}

function threadPoolSize(): number {
  const n = Number(process.env.UV_THREADPOOL_SIZE)
  return Number.isInteger(n) && n > 0 ? n : 4
}

/** The cache entries kept at most; past it the oldest are dropped (a fleet has one per distinct name). */
const MAX_ENTRIES = 200_000

export class CachingResolver implements Resolver {
  readonly #lookup: LookupFn
  readonly #concurrency: number
  readonly #maxQueued: number
  readonly #timeoutMs: number
  readonly #positiveTtlMs: number
  readonly #negativeTtlMs: number
  readonly #clock: Clock
  readonly #cache = new Map<string, Entry>()
  /** Names that never failed first, then the rest. */
  readonly #fresh: Job[] = []
  readonly #retry: Job[] = []
  readonly #aborts = new Set<AbortController>()
  #inFlight = 0
  #maxInFlight = 0
  #lookups = 0
  #closed = false

  constructor(opts: CachingResolverOptions = {}) {
    this.#lookup = opts.lookup ?? systemLookup
    this.#concurrency = opts.concurrency ?? (opts.lookup === undefined ? Math.max(2, threadPoolSize() - 16) : 1024)
    this.#maxQueued = opts.maxQueued ?? 100_000
    this.#timeoutMs = opts.timeoutMs ?? 5000
    this.#positiveTtlMs = opts.positiveTtlMs ?? 60_000
    this.#negativeTtlMs = opts.negativeTtlMs ?? 30_000
    this.#clock = opts.clock ?? systemClock
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1) {
      throw new RangeError(`resolver concurrency must be an integer >= 1, got ${this.#concurrency}`)
    }
  }

  resolve(hostname: string, signal?: AbortSignal): Promise<ResolvedAddress> {
    const family = isIP(hostname)
    if (family !== 0) return Promise.resolve({ address: hostname, family: family as 4 | 6 })
    if (this.#closed) return Promise.reject(new ResolveError(`${hostname}: resolver closed`, { details: { hostname } }))
    const now = this.#clock.now()
    let entry = this.#cache.get(hostname)
    if (entry && !entry.pending && entry.expiresAt > now) {
      if (entry.answer) return Promise.resolve(entry.answer)
      if (entry.error) return Promise.reject(cachedError(entry.error))
    }
    if (!entry) {
      entry = { answer: undefined, error: undefined, expiresAt: 0, failedBefore: false, pending: undefined }
      this.#remember(hostname, entry)
    }
    if (!entry.pending) {
      if (this.#fresh.length + this.#retry.length >= this.#maxQueued) {
        return Promise.reject(new QueueFullError(`${hostname}: ${this.#maxQueued} name lookups already waiting`))
      }
      entry.pending = this.#enqueue(hostname, entry)
    }
    return signal ? withAbort(entry.pending, signal, hostname) : entry.pending
  }

  stats(): ResolverStats {
    return {
      inFlight: this.#inFlight,
      queued: this.#fresh.length + this.#retry.length,
      cached: this.#cache.size,
      lookups: this.#lookups,
      maxInFlight: this.#maxInFlight,
    }
  }

  /** Reject every queued lookup, ask the ones in flight to stop, forget the cache. Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const job of [...this.#fresh.splice(0), ...this.#retry.splice(0)]) {
      job.entry.pending = undefined
      job.reject(new ResolveError(`${job.hostname}: resolver closed`, { details: { hostname: job.hostname } }))
    }
    for (const a of this.#aborts) a.abort()
    this.#cache.clear()
  }

  #remember(hostname: string, entry: Entry): void {
    if (this.#cache.size >= MAX_ENTRIES) {
      // Oldest first (Map keeps insertion order); an entry in use stays.
      for (const [name, e] of this.#cache) {
        if (this.#cache.size < MAX_ENTRIES) break
        if (!e.pending) this.#cache.delete(name)
      }
    }
    this.#cache.set(hostname, entry)
  }

  #enqueue(hostname: string, entry: Entry): Promise<ResolvedAddress> {
    return new Promise<ResolvedAddress>((resolve, reject) => {
      const job: Job = { hostname, entry, resolve, reject }
      ;(entry.failedBefore ? this.#retry : this.#fresh).push(job)
      this.#pump()
    })
  }

  #pump(): void {
    while (this.#inFlight < this.#concurrency) {
      const job = this.#fresh.shift() ?? this.#retry.shift()
      if (!job) return
      this.#start(job)
    }
  }

  #start(job: Job): void {
    this.#inFlight++
    this.#lookups++
    if (this.#inFlight > this.#maxInFlight) this.#maxInFlight = this.#inFlight
    const abort = new AbortController()
    this.#aborts.add(abort)
    let settled = false
    const finish = (answer: LookupAnswer | undefined, error: KayError | undefined) => {
      if (settled) return
      settled = true
      this.#clock.clearTimeout(timer)
      const { entry } = job
      entry.pending = undefined
      if (answer) {
        const ttl = Math.min(this.#positiveTtlMs, answer.ttlMs ?? Number.POSITIVE_INFINITY)
        entry.answer = { address: answer.address, family: answer.family }
        entry.error = undefined
        entry.failedBefore = false
        entry.expiresAt = this.#clock.now() + Math.max(0, ttl)
        job.resolve(entry.answer)
      } else {
        entry.answer = undefined
        entry.error = error
        entry.failedBefore = true
        entry.expiresAt = this.#clock.now() + this.#negativeTtlMs
        job.reject(error!)
      }
    }
    // The deadline fails the callers now; the slot stays held until the lookup itself settles (getaddrinfo cannot be
    // cancelled and holds a thread until it returns), so `concurrency` bounds real lookups, not just waiting callers.
    const timer: TimerHandle = this.#clock.setTimeout(() => {
      abort.abort()
      finish(
        undefined,
        new ResolveError(`${job.hostname}: name lookup timed out after ${this.#timeoutMs} ms`, {
          details: { hostname: job.hostname, errno: 'ETIMEDOUT' },
        }),
      )
    }, this.#timeoutMs)
    let p: Promise<LookupAnswer>
    try {
      p = this.#lookup(job.hostname, abort.signal)
    } catch (err) {
      p = Promise.reject(err)
    }
    p.then(
      (a) => {
        if (!isAnswer(a)) {
          finish(undefined, lookupError(job.hostname, new Error(`the lookup returned no address: ${String(a)}`)))
        } else finish(a, undefined)
      },
      (err: unknown) => finish(undefined, lookupError(job.hostname, err)),
    ).finally(() => {
      this.#aborts.delete(abort)
      this.#inFlight--
      if (!this.#closed) this.#pump()
    })
  }
}

function isAnswer(a: unknown): a is LookupAnswer {
  const x = a as LookupAnswer | undefined
  return typeof x?.address === 'string' && isIP(x.address) !== 0
}

function lookupError(hostname: string, err: unknown): KayError {
  if (err instanceof KayError) return err
  const errno = (err as NodeJS.ErrnoException | undefined)?.code
  const why = errno === 'ENOTFOUND' ? 'no such host' : err instanceof Error ? err.message : String(err)
  return new ResolveError(`${hostname}: name does not resolve: ${why}`, {
    cause: err,
    details: { hostname, ...(errno ? { errno } : {}) },
  })
}

/** A cached failure, answered again: same code and message, marked as cached. */
function cachedError(err: KayError): KayError {
  return new ResolveError(err.message, { details: { ...err.details, cached: true } })
}

/** `p`, or KAY_ABORTED as soon as `signal` fires (the shared lookup goes on for the other callers). */
function withAbort<T>(p: Promise<T>, signal: AbortSignal, hostname: string): Promise<T> {
  if (signal.aborted) return Promise.reject(new AbortedError(`${hostname}: name lookup aborted`))
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortedError(`${hostname}: name lookup aborted`))
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

let shared: CachingResolver | undefined

/** The resolver a HostActor dialing plain TCP uses when none is given: one per thread, `dns.lookup`, defaults. */
export function defaultResolver(): CachingResolver {
  shared ??= new CachingResolver()
  return shared
}
