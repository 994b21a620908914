import { ConnectError, errorFromJSON, isKayError, NotReadyError, type SerializedError } from '@kay/core'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { packCollectResults } from '../src/packed.js'
import {
  isSerializedError,
  isShardMessage,
  isShardRequest,
  PROTOCOL_VERSION,
  type ShardMessage,
  type ShardRequest,
} from '../src/protocol.js'

const RUNS = 500

// ------------------------------------------------------------------------------------------- seed corpus
// Real messages, shaped as the shard and the supervisor build them.

const notReady = new NotReadyError('sim0002: not ready (backoff)', {
  host: 'sim0002',
  details: {
    state: 'backoff',
    nextRetryAt: 1_700_000_001_000,
    lastError: { code: 'KAY_CONNECT_FAILED', message: 'sim0002: connect refused' },
  },
}).toJSON()
const connectFailed = new ConnectError('sim0003: connect failed: connect EMFILE 127.0.0.1:40001', {
  host: 'sim0003',
  details: { errno: 'EMFILE' },
}).toJSON()
const ready = { id: 'sim0001', state: 'ready', attempts: 0, handshakes: 1, readySince: 1_700_000_000_000, rttMs: 0.4 }
const backoff = {
  id: 'sim0002',
  state: 'backoff',
  attempts: 3,
  handshakes: 4,
  nextRetryAt: 1_700_000_001_000,
  lastError: connectFailed,
}
const metrics = {
  at: 1_700_000_000_000,
  cpuPct: 12.5,
  cpus: 4,
  memTotalBytes: 8_000_000_000,
  memUsedBytes: 2_000_000_000,
  memAvailableBytes: 6_000_000_000,
  swapTotalBytes: 0,
  swapUsedBytes: 0,
  load1: 0.5,
  load5: 0.4,
  load15: 0.3,
  uptimeSeconds: 86_400,
}
const target = { id: 'web001', hostname: '127.0.0.1', port: 2222, user: 'kay' }
const jumped = { id: 'db001', hostname: '10.0.0.5', port: 22, user: 'ops', jump: [target], connectTimeoutMs: 5000 }
const runResult = { stdout: 'ok\n', stderr: '', exitCode: 0, signal: null, durationMs: 3 }

/** Each seed with the top-level keys it cannot do without. */
const REQUESTS: Array<[ShardRequest, string[]]> = [
  [{ type: 'add', hosts: [target, jumped] }, ['hosts']],
  [{ type: 'remove', ids: ['web001', 'db001'] }, ['ids']],
  [{ type: 'collect', id: 1, timeoutMs: 10_000 }, ['id', 'timeoutMs']],
  [
    { type: 'run', id: 2, host: 'web001', command: 'uptime', opts: { timeoutMs: 5000 } },
    ['id', 'host', 'command', 'opts'],
  ],
  [
    { type: 'exec', id: 3, hosts: ['web001', 'db001'], command: 'cat', opts: { stdin: 'x', maxOutputBytes: 1024 } },
    ['id', 'hosts', 'command', 'opts'],
  ],
  [
    {
      type: 'exec',
      id: 7,
      hosts: ['web001'],
      command: 'cat',
      opts: { stdin: new Uint8Array([104, 105, 10]), stream: true },
    },
    ['id', 'hosts', 'command', 'opts'],
  ],
  [
    {
      type: 'copy',
      id: 8,
      hosts: ['web001'],
      spec: { direction: 'put', sources: ['/etc/hosts'], dest: '/tmp', recursive: false, timeoutMs: 30_000 },
    },
    ['id', 'hosts', 'spec'],
  ],
  [{ type: 'cancel', target: 7 }, ['target']],
  [{ type: 'hurry' }, []],
  [{ type: 'detail', id: 4, host: 'web001', timeoutMs: 10_000 }, ['id', 'host', 'timeoutMs']],
  [{ type: 'status', id: 5 }, ['id']],
  [{ type: 'stop', id: 6 }, ['id']],
  [{ type: 'crash', how: 'throw' }, ['how']],
  [{ type: 'resolved', id: 7, address: '127.0.0.1', family: 4 }, ['id', 'address']],
  [{ type: 'resolved', id: 8, error: notReady }, ['id', 'error']],
]

const MESSAGES: Array<[ShardMessage, string[]]> = [
  [{ type: 'ready', version: PROTOCOL_VERSION, shardIndex: 0 }, ['version', 'shardIndex']],
  [
    {
      type: 'collect-result',
      id: 1,
      results: [
        { host: 'sim0001', status: ready as never, metrics: metrics as never, collectMode: 'stream-bash' },
        { host: 'sim0002', status: backoff as never, error: notReady },
      ],
      seqs: [4, 2],
      droppedFrames: 0,
    },
    ['id', 'results', 'seqs', 'droppedFrames'],
  ],
  [
    {
      type: 'collect-result',
      id: 1,
      ...(({ results, seqs, packed }) => ({ results, seqs, packed }))(
        packCollectResults(
          [
            { host: 'sim0001', status: ready as never, metrics: metrics as never, collectMode: 'stream-perl' },
            { host: 'sim0002', status: backoff as never, error: notReady },
          ],
          [7, 9],
        ),
      ),
      droppedFrames: 3,
    },
    ['id', 'results', 'seqs', 'droppedFrames'],
  ],
  [{ type: 'run-result', id: 2, host: 'sim0001', result: runResult }, ['id', 'host']],
  [{ type: 'run-result', id: 2, host: 'sim0002', error: notReady }, ['id', 'host']],
  [
    {
      type: 'exec-items',
      id: 3,
      items: [
        { host: 'sim0001', result: runResult },
        { host: 'sim0002', error: notReady },
      ],
      done: true,
    },
    ['id', 'items', 'done'],
  ],
  [
    {
      type: 'exec-items',
      id: 7,
      items: [
        { host: 'sim0001', error: notReady, partial: { stdout: 'half', stderr: '' }, durationMs: 1000 },
        { host: 'sim0002', result: runResult, copied: { files: 1, directories: 0, bytes: 3 }, durationMs: 4 },
      ],
      chunks: [{ host: 'sim0001', stream: 'stdout', data: new Uint8Array([104, 97, 108, 102]) }],
      done: false,
    },
    ['id', 'items', 'done'],
  ],
  [{ type: 'detail-result', id: 4, host: 'sim0002', error: notReady }, ['id', 'host']],
  [
    {
      type: 'status-result',
      id: 5,
      statuses: [ready as never, backoff as never],
      seq: 12,
      stats: { hosts: 2, byState: { ready: 1, backoff: 1 }, handshakes: 5, droppedFrames: 0, byMode: { exec: 1 } },
    },
    ['id', 'statuses', 'seq', 'stats'],
  ],
  [{ type: 'stopped', id: 6 }, ['id']],
  [{ type: 'resolve', id: 7, hostname: 'web001.example' }, ['id', 'hostname']],
  [
    {
      type: 'events',
      events: [
        { kind: 'state', status: backoff as never, seq: 3 },
        { kind: 'pinned', host: 'sim0001', fingerprint: 'SHA256:abc' },
      ],
    },
    ['events'],
  ],
]

// ---------------------------------------------------------------------------------------- arbitraries

const KNOWN_TYPES = new Set([...REQUESTS, ...MESSAGES].map(([m]) => m.type))
const wrong = fc.constantFrom<unknown>(null, Symbol('x'), () => 1, Number.NaN, -1, 'text', [], {}, true, [null])
const id = fc.nat({ max: 2 ** 31 })
const str = fc.string({ maxLength: 20 })
const arbError = fc.record(
  {
    code: fc.constantFrom('KAY_NOT_READY', 'KAY_TIMEOUT', 'KAY_SHARD_RESTARTED', 'KAY_SOMETHING_NEW'),
    message: fc.string(),
    host: str,
    details: fc.dictionary(str, fc.jsonValue(), { maxKeys: 4 }),
  },
  { requiredKeys: ['code', 'message'] },
) as fc.Arbitrary<SerializedError>
const arbStatus = fc.record(
  {
    id: str,
    state: fc.constantFrom('idle', 'dialing', 'ready', 'backoff', 'quarantined', 'closed'),
    attempts: fc.nat(),
    handshakes: fc.nat(),
    nextRetryAt: fc.nat(),
    lastError: arbError,
  },
  { requiredKeys: ['id', 'state', 'attempts', 'handshakes'] },
)
const arbRunResult = fc.record({
  stdout: fc.string(),
  stderr: fc.string(),
  exitCode: fc.option(fc.integer({ min: 0, max: 255 })),
  signal: fc.option(fc.constantFrom('TERM', 'KILL')),
  durationMs: fc.nat(),
})
const arbTarget = fc.record(
  { id: str, hostname: str, port: fc.integer({ min: 1, max: 65_535 }), user: str, connectTimeoutMs: fc.nat() },
  { requiredKeys: ['id', 'hostname', 'port', 'user'] },
)
const arbOpts = fc.record(
  {
    timeoutMs: fc.nat(),
    maxOutputBytes: fc.nat(),
    stdin: fc.oneof(fc.string(), fc.uint8Array({ maxLength: 8 })),
    stream: fc.boolean(),
  },
  { requiredKeys: [] },
)
const arbRequest: fc.Arbitrary<ShardRequest> = fc.oneof(
  fc.record({ type: fc.constant('add' as const), hosts: fc.array(arbTarget, { maxLength: 5 }) }),
  fc.record({ type: fc.constant('remove' as const), ids: fc.array(str, { maxLength: 5 }) }),
  fc.record({ type: fc.constant('collect' as const), id, timeoutMs: fc.nat() }),
  fc.record({ type: fc.constant('run' as const), id, host: str, command: fc.string(), opts: arbOpts }),
  fc.record({ type: fc.constant('exec' as const), id, hosts: fc.array(str), command: fc.string(), opts: arbOpts }),
  fc.record({
    type: fc.constant('copy' as const),
    id,
    hosts: fc.array(str),
    spec: fc.record({
      direction: fc.constantFrom('put' as const, 'get' as const),
      sources: fc.array(str, { minLength: 1, maxLength: 3 }),
      dest: str,
      recursive: fc.boolean(),
      timeoutMs: fc.nat(),
    }),
  }),
  fc.record({ type: fc.constant('cancel' as const), target: id }),
  fc.record({ type: fc.constant('hurry' as const) }),
  fc.record({ type: fc.constant('detail' as const), id, host: str, timeoutMs: fc.nat() }),
  fc.record({ type: fc.constantFrom('status' as const, 'stop' as const), id }),
  fc.record({ type: fc.constant('crash' as const), how: fc.constantFrom('throw' as const, 'exit' as const) }),
) as fc.Arbitrary<ShardRequest>
const arbMessage: fc.Arbitrary<ShardMessage> = fc.oneof(
  fc.record({ type: fc.constant('ready' as const), version: fc.nat(), shardIndex: fc.nat() }),
  fc
    .record({
      type: fc.constant('collect-result' as const),
      id,
      results: fc.array(
        fc.record(
          {
            host: str,
            status: arbStatus,
            metrics: fc.constant(metrics),
            error: arbError,
            collectMode: fc.constant('exec'),
          },
          { requiredKeys: ['host', 'status'] },
        ),
        { maxLength: 5 },
      ),
      droppedFrames: fc.nat(),
    })
    .map((m) => ({ ...m, seqs: m.results.map((_, i) => i) })),
  fc.record(
    { type: fc.constant('run-result' as const), id, host: str, result: arbRunResult, error: arbError },
    { requiredKeys: ['type', 'id', 'host'] },
  ),
  fc.record({
    type: fc.constant('exec-items' as const),
    id,
    items: fc.array(
      fc.record(
        {
          host: str,
          result: arbRunResult,
          error: arbError,
          partial: fc.record({ stdout: fc.string(), stderr: fc.string() }),
          durationMs: fc.nat(),
        },
        { requiredKeys: ['host'] },
      ),
      { maxLength: 5 },
    ),
    chunks: fc.array(
      fc.record({ host: str, stream: fc.constantFrom('stdout' as const, 'stderr' as const), data: fc.uint8Array() }),
      { maxLength: 3 },
    ),
    done: fc.boolean(),
  }),
  fc.record(
    { type: fc.constant('detail-result' as const), id, host: str, error: arbError },
    { requiredKeys: ['type', 'id', 'host'] },
  ),
  fc.record({ type: fc.constant('stopped' as const), id }),
  fc.record({
    type: fc.constant('events' as const),
    events: fc.array(
      fc.oneof(
        fc.record({ kind: fc.constant('state' as const), status: arbStatus, seq: fc.nat() }),
        fc.record({ kind: fc.constant('pinned' as const), host: str, fingerprint: str }),
      ),
      { maxLength: 5 },
    ),
  }),
) as fc.Arbitrary<ShardMessage>

/** Fields that are lists (an empty one is valid). */
const LIST_KEYS = new Set(['hosts', 'ids', 'results', 'items', 'statuses', 'events'])
const validators = [isShardRequest, isShardMessage, isSerializedError]

// ---------------------------------------------------------------------------------------------- tests

describe('the worker wire protocol decoder', () => {
  it('accepts every real message of the seed corpus, and only on its own side', () => {
    for (const [m] of REQUESTS) {
      expect(isShardRequest(m), m.type).toBe(true)
      expect(isShardMessage(m), m.type).toBe(m.type === ('ready' as string))
    }
    for (const [m] of MESSAGES) expect(isShardMessage(m), m.type).toBe(true)
  })

  it('never throws on arbitrary values and rejects every one without a protocol type', () => {
    fc.assert(
      fc.property(fc.anything({ withNullPrototype: true, withMap: true, withSet: true, withTypedArray: true }), (v) => {
        for (const check of validators) expect(typeof check(v)).toBe('boolean')
        const type = typeof v === 'object' && v !== null ? (v as { type?: unknown }).type : undefined
        if (typeof type !== 'string' || !KNOWN_TYPES.has(type as never)) {
          expect(isShardRequest(v)).toBe(false)
          expect(isShardMessage(v)).toBe(false)
        }
      }),
      { numRuns: RUNS * 4 },
    )
  })

  it('never throws on objects that carry a protocol type and arbitrary fields, and rejects arrays and primitives', () => {
    const typed = fc
      .tuple(fc.constantFrom(...KNOWN_TYPES), fc.dictionary(fc.string({ maxLength: 8 }), fc.anything()))
      .map(([type, rest]) => ({ ...rest, type }))
    fc.assert(
      fc.property(typed, (v) => {
        expect(typeof isShardRequest(v)).toBe('boolean')
        expect(typeof isShardMessage(v)).toBe('boolean')
      }),
      { numRuns: RUNS * 2 },
    )
    for (const v of [
      null,
      undefined,
      0,
      'collect',
      [],
      [{ type: 'collect', id: 1, timeoutMs: 1 }],
      Object.create(null),
    ])
      expect(isShardRequest(v) || isShardMessage(v)).toBe(false)
  })

  it('rejects a real message with any required field missing or of the wrong type', () => {
    const all: Array<[Record<string, unknown>, string[], (v: unknown) => boolean]> = [
      ...REQUESTS.map(([m, k]) => [m, k, isShardRequest] as [Record<string, unknown>, string[], typeof isShardRequest]),
      ...MESSAGES.map(([m, k]) => [m, k, isShardMessage] as [Record<string, unknown>, string[], typeof isShardMessage]),
    ]
    fc.assert(
      fc.property(
        // A message with no fields of its own (`hurry`) has nothing to break.
        fc.constantFrom(...all.filter(([, required]) => required.length > 0)),
        fc.nat(),
        wrong,
        fc.boolean(),
        ([seed, required, check], pick, bad, drop) => {
          const key = required[pick % required.length]!
          const m: Record<string, unknown> = { ...seed }
          if (drop) delete m[key]
          else m[key] = bad
          // A few wrong values happen to be right for some fields (an array of hosts may be empty, an object opts),
          // except a collect reply's results, which must match its seqs one for one.
          const matched = key !== 'results' || !Array.isArray(m.seqs) || m.seqs.length === 0
          const stillValid =
            !drop &&
            ((Array.isArray(bad) && bad.length === 0 && LIST_KEYS.has(key) && matched) ||
              (isPlain(bad) && Object.keys(bad as object).length === 0 && (key === 'opts' || key === 'stats')) ||
              (typeof bad === 'string' && (key === 'host' || key === 'command' || key === 'hostname')) ||
              (typeof bad === 'boolean' && key === 'done'))
          expect(check(m)).toBe(stillValid)
        },
      ),
      { numRuns: RUNS },
    )
  })

  it('rejects payloads that would have crashed a shard (non-arrays, nested garbage, bad errors)', () => {
    const bad: unknown[] = [
      { type: 'add', hosts: 5 },
      { type: 'add', hosts: [{ id: 'a' }] },
      { type: 'add', hosts: [{ ...target, port: 70_000 }] },
      { type: 'add', hosts: [nestJumps(20)] },
      { type: 'remove', ids: 'web001' },
      { type: 'exec', id: 1, hosts: 'web001', command: 'x', opts: {} },
      { type: 'run', id: 1, host: 'a', command: 'x', opts: null },
      { type: 'run', id: 1, host: 'a', command: 'x', opts: { timeoutMs: '5' } },
      { type: 'collect', id: -1, timeoutMs: 1 },
      { type: 'collect', id: 1.5, timeoutMs: 1 },
      { type: 'collect', id: 1, timeoutMs: Number.POSITIVE_INFINITY },
      { type: 'crash', how: 'segfault' },
      { type: 'collect-result', id: 1, results: [{ host: 'a', status: null }], droppedFrames: 0 },
      { type: 'collect-result', id: 1, results: [], seqs: [], droppedFrames: -1 },
      { type: 'collect-result', id: 1, results: [], seqs: [1], droppedFrames: 0 },
      { type: 'status-result', id: 1, statuses: [], seq: -1, stats: {} },
      { type: 'events', events: [{ kind: 'state', status: ready, seq: 0.5 }] },
      { type: 'collect-result', id: 1, results: [{ host: 'a', status: ready, error: { code: 'EPERM', message: '' } }] },
      { type: 'run-result', id: 1, host: 'a', error: { code: 'KAY_TIMEOUT' } },
      { type: 'run-result', id: 1, host: 'a', result: { ...runResult, exitCode: '0' } },
      { type: 'exec-items', id: 1, items: [], done: 'yes' },
      { type: 'events', events: [{ kind: 'state' }] },
      { type: 'events', events: [{ kind: 'boom', host: 'a' }] },
    ]
    for (const v of bad) expect(isShardRequest(v) || isShardMessage(v), JSON.stringify(v)).toBe(false)
  })

  it('round-trips every valid message through structuredClone unchanged, and the copy still validates', () => {
    for (const [m] of [...REQUESTS, ...MESSAGES]) expect(structuredClone(m)).toStrictEqual(m)
    fc.assert(
      fc.property(arbRequest, (m) => {
        expect(isShardRequest(m)).toBe(true)
        const copy = structuredClone(m)
        expect(copy).toEqual(m)
        expect(isShardRequest(copy)).toBe(true)
      }),
      { numRuns: RUNS },
    )
    fc.assert(
      fc.property(arbMessage, (m) => {
        expect(isShardMessage(m)).toBe(true)
        const copy = structuredClone(m)
        expect(copy).toEqual(m)
        expect(isShardMessage(copy)).toBe(true)
      }),
      { numRuns: RUNS },
    )
  })
})

describe('errorFromJSON across the thread boundary', () => {
  it('re-creates any well-formed serialized error as a KayError with the same data, without throwing', () => {
    fc.assert(
      fc.property(arbError, (data) => {
        const copy = structuredClone(data)
        const err = errorFromJSON(copy)
        expect(isKayError(err)).toBe(true)
        expect(err.code).toBe(data.code)
        expect(err.message).toBe(data.message)
        expect(err.host).toBe(data.host)
        // toJSON is the inverse (empty details are omitted).
        const back: SerializedError = { code: data.code, message: data.message }
        if (data.host !== undefined) back.host = data.host
        if (data.details && Object.keys(data.details).length > 0) back.details = data.details
        expect(err.toJSON()).toEqual(back)
      }),
      { numRuns: RUNS },
    )
  })

  it('keeps the class of every known code, as the supervisor rebuilds them from a shard reply', () => {
    for (const e of [notReady, connectFailed]) {
      const err = errorFromJSON(structuredClone(e))
      expect(err.name).toBe(e.code === 'KAY_NOT_READY' ? 'NotReadyError' : 'ConnectError')
      expect(err.toJSON()).toStrictEqual(e)
    }
  })

  it('never throws for arbitrary values that pass the serialized-error check', () => {
    fc.assert(
      fc.property(fc.anything(), fc.string(), (v, message) => {
        for (const candidate of [v, { code: 'KAY_X', message, details: v }, { code: 'KAY_X', message, host: v }]) {
          if (isSerializedError(candidate)) expect(isKayError(errorFromJSON(candidate))).toBe(true)
        }
      }),
      { numRuns: RUNS },
    )
  })
})

function isPlain(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function nestJumps(depth: number): Record<string, unknown> {
  let t: Record<string, unknown> = { ...target }
  for (let i = 0; i < depth; i++) t = { ...target, jump: [t] }
  return t
}
