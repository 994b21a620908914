/**
 * Micro bench: kay's own work per host per tick on the stream path, without the transport.
 *
 * 1,000 hosts whose channels are fakes that answer each request line with a real perl-loop frame (captured once
 * from this machine's /proc by running the loop locally), delivered in one batch per tick as ssh2 delivers a
 * socket read: a fresh Buffer per frame, from an I/O-phase callback. Two tasks run over the same fakes:
 * - `floor`: what the real-sshd bench's `ssh2-floor` does per host on top of ssh2 (a promise and a timer per host,
 *   the frame searched for its end marker, nothing parsed);
 * - `kay`: the shard's real tick (`collectTick`: HostCollector, frame decoder, parse, metrics, status, packing).
 * kay minus floor is what kay adds per host-tick before caches and threads (the real-sshd bench is the judge;
 * this one is quiet enough to compare changes to the tick path).
 *
 *   node --conditions=kay-source --import tsx bench/micro/tick-path.bench.ts
 *   KAY_BENCH_ONLY=kay …   # one task only (kay or floor), e.g. under --cpu-prof
 *
 * On this 2-vCPU VM, run-to-run spread is about ±2 µs on the p50: compare changes over several interleaved runs.
 */
import { execFileSync } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { type HostActor, HostCollector, NotReadyError } from '@kay/core'
import { identifyCommand, streamCommand } from '@kay/core/internal'
import { Bench } from 'tinybench'
import { collectTick, type ShardEntry } from '../../packages/workers/src/shard.js'
import { type FloorChannel, floorTick, watchFloorChannel } from '../load/lib.js'

const HOSTS = 1000

/** One perl-loop frame body from this machine (without its end marker line), with and without df. */
function captureBodies(): { plain: Buffer; df: Buffer } {
  const out = execFileSync('sh', ['-c', streamCommand('perl', 'capture')], { input: '1\n2 df\n' }).toString('latin1')
  const [plain, df] = out.split(/@@kay-end capture \d+\n/)
  if (!plain || !df) throw new Error('could not capture a perl-loop frame')
  return { plain: Buffer.from(plain, 'latin1'), df: Buffer.from(df, 'latin1') }
}
const BODIES = captureBodies()

/** Frames to deliver at the next I/O-phase callback, as one socket read would deliver them. */
let due: Array<() => void> = []
function deliverSoon(fn: () => void): void {
  if (due.length === 0) setImmediate(flush)
  due.push(fn)
}
function flush(): void {
  const d = due
  due = []
  for (const fn of d) fn()
}

class FakeChannel extends EventEmitter {
  readonly stderr = { resume() {} }
  constructor(readonly token: string) {
    super()
  }
  write(line: string): boolean {
    const sp = line.indexOf(' ')
    const seq = line.slice(0, sp === -1 ? line.length - 1 : sp)
    const body = sp === -1 ? BODIES.plain : BODIES.df
    const marker = `@@kay-end ${this.token} ${seq}\n`
    deliverSoon(() => {
      // A fresh buffer per frame, as ssh2 hands out one per packet.
      const b = Buffer.allocUnsafe(body.length + marker.length)
      body.copy(b, 0)
      b.write(marker, body.length, 'latin1')
      this.emit('data', b)
    })
    return true
  }
  close(): void {}
}

/** The parts of HostActor a collector uses on the stream path. */
class FakeActor extends EventEmitter {
  readonly state = 'ready'
  channel: FakeChannel | undefined
  constructor(readonly id: string) {
    super()
  }
  status() {
    return { id: this.id, state: this.state, attempts: 0, handshakes: 1, rttMs: 0.4, readySince: 1_795_800_000_000 }
  }
  notReady() {
    return new NotReadyError(`${this.id}: not ready`, { host: this.id })
  }
  reserveChannel() {
    return true
  }
  releaseReservedChannel() {}
  suspect() {}
  /** The exec path (unused once the streams are up): the same sections as a stream frame. */
  run() {
    return Promise.resolve({
      stdout: BODIES.df.toString('latin1'),
      stderr: '',
      exitCode: 0,
      signal: null,
      durationMs: 1,
    })
  }
  openExec(command: string, setup?: (c: FakeChannel) => void): Promise<FakeChannel> {
    const id = identifyCommand(command)
    if (id.kind !== 'stream') throw new Error(`not a stream command: ${command.slice(0, 40)}`)
    const c = new FakeChannel(id.token)
    this.channel = c
    setup?.(c)
    return Promise.resolve(c)
  }
}

const actors = Array.from({ length: HOSTS }, (_, i) => new FakeActor(`web${String(i).padStart(5, '0')}.dc1`))
const entries: ShardEntry[] = actors.map((a) => {
  const actor = a as unknown as HostActor
  return { actor, collector: new HostCollector(actor, { flavours: ['perl'] }) }
})

// The streams are opened when the (fake) connections are ready, i.e. at once; the first tick is their probe frame.
await collectTick(entries, 1000)
await new Promise((r) => setTimeout(r, 20))
{
  const { results, packed } = await collectTick(entries, 1000)
  if (packed.hosts.length !== HOSTS) throw new Error(`streams not up: ${results[0]?.error?.code ?? '?'}`)
}

// The floor: per host what real-sshd.ts's ssh2-floor client does (a promise, a timer, a search for the end marker).
const floorConns: FloorChannel[] = actors.map((a) => {
  const channel = new FakeChannel(`floor${a.id.slice(3, 8)}`)
  const c: FloorChannel = { token: channel.token, channel, tail: '' }
  watchFloorChannel(c)
  return c
})
let floorSeq = 0
async function floorOnce(): Promise<void> {
  if ((await floorTick(floorConns, ++floorSeq)) !== HOSTS) throw new Error('floor: a frame was missed')
}

async function kayTick(): Promise<void> {
  const { packed } = await collectTick(entries, 10_000)
  if (packed.hosts.length !== HOSTS) throw new Error('kay: a host fell out of the packed rows')
}

const bench = new Bench({ time: 3000, warmupTime: 1000 })
const only = process.env.KAY_BENCH_ONLY
if (only !== 'kay') bench.add('floor: promise + timer + marker search', floorOnce)
if (only !== 'floor') bench.add('kay: collectTick (collector, decoder, parse, metrics, status, packing)', kayTick)
await bench.run()
for (const t of bench.tasks) {
  const l = (t.result as { latency?: { mean: number; p50?: number; min: number } } | undefined)?.latency
  const per = (ms: number | undefined) => (((ms ?? Number.NaN) * 1000) / HOSTS).toFixed(2)
  console.log(`${t.name.padEnd(78)} µs per host-tick: min ${per(l?.min)}, p50 ${per(l?.p50)}, mean ${per(l?.mean)}`)
}
