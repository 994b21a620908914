import { randomBytes } from 'node:crypto'
import type { ServerChannel } from 'ssh2'
import type { Clock, TimerHandle } from '../clock.js'
import { scriptOf } from '../collection/commands.js'
import { junkBytes, NODE_SECTIONS, type ProcModel, renderSections, type SectionName, SLOW_SECTIONS } from './procfs.js'
import type { ResolvedHostSettings, SimCounters, StreamFlavour } from './types.js'

/** What a running command needs from its host and connection. */
export interface ExecContext {
  readonly hostName: string
  /** The host's settings now (faults can change while a command runs). */
  settings(): Readonly<ResolvedHostSettings>
  /** The host's /proc model, advanced to now. */
  model(): ProcModel
  readonly counters: SimCounters
  readonly clock: Clock
  /** Arm a timer the fleet clears on close. */
  setTimer(fn: () => void, ms: number): TimerHandle
  clearTimer(handle: TimerHandle | undefined): void
  /** Run `fn` if the connection goes away first; returns the unregister function. */
  onConnectionClose(fn: () => void): () => void
}

/** A command in progress: signals (`TERM`, `KILL`, …) reach it through here. */
export interface RunningCommand {
  signal(name: string): void
}

const COLLECT_SECTIONS: readonly SectionName[] = ['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df']
const STREAM_SECTIONS: readonly SectionName[] = ['loadavg', 'meminfo', 'stat', 'uptime', 'netdev']
const STREAM_SECTIONS_DF: readonly SectionName[] = [...STREAM_SECTIONS, 'df']
const DETAIL_SECTIONS: readonly SectionName[] = ['stat', 'meminfo', 'loadavg', 'uptime', 'netdev', 'df', 'ps']
/**
 * A node request's sections (the sim has an interface with a device, so netdev comes as well), with df and the
 * slow ones when asked for.
 */
function nodeSections(df: boolean, slow: boolean): SectionName[] {
  return [...STREAM_SECTIONS, ...NODE_SECTIONS, ...(df ? (['df'] as const) : []), ...(slow ? SLOW_SECTIONS : [])]
}
/** Signals that end a command (as they end `sleep`, `sh` and the loops on a real host). */
const FATAL_SIGNALS = new Set(['TERM', 'KILL', 'INT', 'HUP'])
/** A stream request line is a few bytes; a longer one is a broken client. */
const MAX_REQUEST_LINE = 4096
const EMPTY = Buffer.alloc(0)
const FLOOD_CHUNK = Buffer.alloc(64 * 1024, 'kay flood 0123456789abcdefghijklmnopqrstuvwxyz\n')
const CAT_PATHS: Record<string, SectionName> = {
  '/proc/loadavg': 'loadavg',
  '/proc/meminfo': 'meminfo',
  '/proc/stat': 'stat',
  '/proc/uptime': 'uptime',
  '/proc/net/dev': 'netdev',
}

/**
 * Run one exec request on an accepted channel, as `$SHELL -c '<command>'` would on the simulated host.
 * The channel ends (exit status or signal, then EOF + close) when the command finishes.
 */
export function runExec(ctx: ExecContext, channel: ServerChannel, command: string): RunningCommand {
  const exec = new Exec(ctx, channel)
  exec.start(command)
  return exec
}

class Exec implements RunningCommand {
  readonly #ctx: ExecContext
  readonly #ch: ServerChannel
  #done = false
  #cleanups: Array<() => void> = []
  #unregister: () => void

  constructor(ctx: ExecContext, channel: ServerChannel) {
    this.#ctx = ctx
    this.#ch = channel
    this.#unregister = ctx.onConnectionClose(() => this.#stop())
    channel.on('error', () => this.#stop())
    channel.once('close', () => this.#stop())
  }

  start(command: string): void {
    // kay's own commands come wrapped for any login shell: the simulated host reads the script inside.
    const cmd = (scriptOf(command) ?? command).trimStart()
    if (cmd.startsWith(': kay-collect v1;')) {
      this.#sections(COLLECT_SECTIONS, false)
      return
    }
    if (cmd.startsWith(': kay-collect v1 node')) {
      // The sh loop answering `1 node[ slow]`: its sections, then its end marker.
      const slow = cmd.startsWith(': kay-collect v1 node slow;')
      this.#sections(nodeSections(false, slow), false, '@@kay-end collect 1\n')
      return
    }
    if (cmd.startsWith(': kay-detail v1;')) {
      this.#sections(DETAIL_SECTIONS, true)
      return
    }
    if (cmd.startsWith(': kay-stream v1')) {
      this.#stream(cmd)
      return
    }
    const words = splitWords(cmd)
    const [name = '', ...args] = words
    switch (name) {
      case 'echo':
        this.#out(`${args.join(' ')}\n`, 0)
        return
      case 'uname':
        this.#out(
          args[0] === '-a'
            ? `Linux ${this.#ctx.hostName} 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64 GNU/Linux\n`
            : 'Linux\n',
          0,
        )
        return
      case 'hostname':
        this.#out(`${this.#ctx.hostName}\n`, 0)
        return
      case 'true':
        this.#out('', 0)
        return
      case 'false':
        this.#out('', 1)
        return
      case 'exit':
        this.#out('', toStatus(args[0]))
        return
      case 'sleep':
        this.#sleep(args[0])
        return
      case 'cat':
        this.#cat(args[0])
        return
      case 'flood':
        this.#flood(args[0])
        return
      case 'stderr':
        this.#err(`${args.join(' ')}\n`, 0)
        return
      default:
        this.#err(`sh: 1: ${name}: not found\n`, 127)
        return
    }
  }

  signal(name: string): void {
    if (this.#done || !FATAL_SIGNALS.has(name)) return
    this.#finish({ signal: name })
  }

  /** Stop side effects (timers, loops) without answering: the channel or connection is gone. */
  #stop(): void {
    if (this.#done) return
    this.#done = true
    this.#release()
  }

  #release(): void {
    for (const fn of this.#cleanups) fn()
    this.#cleanups = []
    this.#unregister()
  }

  #finish(end: { status: number } | { signal: string }): void {
    if (this.#done) return
    this.#done = true
    this.#release()
    const ch = this.#ch
    if (!ch.writable) return
    // The exit status goes out as its own packet: send it only after the output queued before it (an empty
    // write's callback runs once every earlier chunk has reached the transport), as sshd does.
    ch.write(EMPTY, () => {
      if ('status' in end) ch.exit(end.status)
      else ch.exit(end.signal, false, '')
      ch.end()
    })
  }

  /** Discard stdin so the channel's end/close events fire for commands that do not read it. */
  #drainStdin(): void {
    this.#ch.resume()
  }

  #out(text: string, status: number): void {
    this.#drainStdin()
    if (text) this.#ch.write(text)
    this.#finish({ status })
  }

  #err(text: string, status: number): void {
    this.#drainStdin()
    this.#ch.stderr.write(text)
    this.#finish({ status })
  }

  #sections(names: readonly SectionName[], dfAll: boolean, trailer = ''): void {
    this.#drainStdin()
    this.#ch.write(renderSections(this.#ctx.model(), names, this.#ctx.settings().procFault, dfAll))
    if (trailer) this.#ch.write(trailer)
    this.#finish({ status: 0 })
  }

  #cat(path: string | undefined): void {
    const section = path === undefined ? undefined : CAT_PATHS[path]
    if (section === undefined) {
      this.#err(`cat: ${path ?? ''}: No such file or directory\n`, 1)
      return
    }
    this.#out(this.#ctx.model().section(section), 0)
  }

  #sleep(arg: string | undefined): void {
    const seconds = Number(arg)
    if (arg === undefined || !Number.isFinite(seconds) || seconds < 0) {
      this.#err(`sleep: invalid time interval '${arg ?? ''}'\n`, 1)
      return
    }
    this.#drainStdin()
    const timer = this.#ctx.setTimer(() => this.#finish({ status: 0 }), seconds * 1000)
    this.#cleanups.push(() => this.#ctx.clearTimer(timer))
  }

  /** Write `n` bytes as fast as the channel takes them, never holding more than the channel's own buffer. */
  #flood(arg: string | undefined): void {
    let left = Number(arg)
    if (!Number.isSafeInteger(left) || left < 0) {
      this.#err(`flood: bad byte count '${arg ?? ''}'\n`, 1)
      return
    }
    this.#drainStdin()
    const ch = this.#ch
    const pump = (): void => {
      while (!this.#done && left > 0) {
        const n = Math.min(left, FLOOD_CHUNK.length)
        left -= n
        if (!ch.write(n === FLOOD_CHUNK.length ? FLOOD_CHUNK : FLOOD_CHUNK.subarray(0, n))) {
          ch.once('drain', pump)
          return
        }
      }
      if (!this.#done) this.#finish({ status: 0 })
    }
    this.#cleanups.push(() => ch.removeListener('drain', pump))
    pump()
  }

  #stream(cmd: string): void {
    const m = /^:\s+kay-stream\s+v1\s+(\S+)\s+([^\s;]+)\s*;/.exec(cmd)
    if (!m) {
      this.#err('sh: 1: kay-stream: usage: kay-stream v1 <flavour> <token>\n', 2)
      return
    }
    const flavour = m[1] ?? ''
    const token = m[2] ?? ''
    if (!this.#ctx.settings().streamFlavours.includes(flavour as StreamFlavour)) {
      this.#err(`${flavour}: command not found\n`, 127)
      return
    }
    const ch = this.#ch
    let buf = ''
    let prevSeq: string | undefined
    let stalled = false
    const onLine = (line: string): void => {
      const req = /^(\d+)( df)?( node)?( slow)?\s*$/.exec(line)
      if (!req || stalled || this.#done) return
      const seq = req[1] ?? '0'
      const settings = this.#ctx.settings()
      this.#ctx.counters.streamRequests++
      switch (settings.streamFault) {
        case 'stall':
          stalled = true
          return
        case 'exit':
          this.#finish({ status: 1 })
          return
        case 'garbage':
          ch.write(junkBytes(200 + Math.floor(Math.random() * 300)))
          return
        default:
      }
      const names = req[3] ? nodeSections(!!req[2], !!req[4]) : req[2] ? STREAM_SECTIONS_DF : STREAM_SECTIONS
      const body = renderSections(this.#ctx.model(), names, settings.procFault)
      let endToken = token
      let endSeq = seq
      if (settings.streamFault === 'forge-token') endToken = randomBytes(8).toString('hex')
      if (settings.streamFault === 'stale-seq') endSeq = prevSeq ?? String(BigInt(seq) - 1n)
      prevSeq = seq
      const marker = `@@kay-end ${endToken} ${endSeq}\n`
      if (settings.streamFault === 'split-marker') {
        // Separate writes go out as separate SSH data packets: the reader must reassemble the marker.
        ch.write(body)
        const cut1 = 3 + Math.floor(Math.random() * 5)
        const cut2 = cut1 + 5 + Math.floor(Math.random() * 10)
        ch.write(marker.slice(0, cut1))
        ch.write(marker.slice(cut1, cut2))
        ch.write(marker.slice(cut2))
      } else {
        ch.write(Buffer.concat([body, Buffer.from(marker)]))
      }
    }
    ch.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1')
      let nl = buf.indexOf('\n')
      while (nl >= 0 && !this.#done) {
        onLine(buf.slice(0, nl))
        buf = buf.slice(nl + 1)
        nl = buf.indexOf('\n')
      }
      if (buf.length > MAX_REQUEST_LINE && !this.#done) {
        ch.stderr.write('kay-stream: request line too long\n')
        this.#finish({ status: 2 })
      }
    })
    // stdin EOF: the loop's `read` fails and it exits 0 (unless it is stuck, as with the 'stall' fault).
    ch.on('end', () => {
      if (!stalled) this.#finish({ status: 0 })
    })
  }
}

/** Shell-like word split: whitespace separated, single or double quotes group (no escapes, no expansion). */
function splitWords(cmd: string): string[] {
  const out: string[] = []
  const re = /'([^']*)'|"([^"]*)"|(\S+)/g
  for (let m = re.exec(cmd); m !== null; m = re.exec(cmd)) out.push(m[1] ?? m[2] ?? m[3] ?? '')
  return out
}

function toStatus(arg: string | undefined): number {
  const n = Number.parseInt(arg ?? '0', 10)
  return Number.isFinite(n) ? ((n % 256) + 256) % 256 : 2
}
