import { createHash } from 'node:crypto'
import { type Socket, connect as tcpConnect } from 'node:net'
import {
  type ClientChannel,
  type ConnectConfig,
  type ParsedKey,
  type PublicKeyAuthMethod,
  Client as SshClient,
} from 'ssh2'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type GeneratedKey,
  generateClientKey,
  type SimFleet,
  type SimFleetOptions,
  type SimHostInfo,
  startSimFleet,
} from '../../src/sim/index.js'
import { until } from '../../src/testing/index.js'
import { ManualClock } from '../support/manual-clock.js'

const key = generateClientKey()
const otherKey = generateClientKey()

const fleets: SimFleet[] = []
const clients: SshClient[] = []
const sockets: Socket[] = []

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy()
  for (const s of sockets.splice(0)) s.destroy()
  await Promise.all(fleets.splice(0).map((f) => f.close()))
})

async function fleet(opts: Partial<SimFleetOptions> = {}): Promise<SimFleet> {
  const f = await startSimFleet({ hosts: 2, authorizedKeys: [key.publicKey], ...opts })
  fleets.push(f)
  return f
}

/** Connect a plain ssh2 client; resolves when ready, rejects with the client's first error. */
/** `with`: the client key to offer (default: the authorized one); null for none. */
type ConnectOpts = ConnectConfig & { with?: GeneratedKey | null }

function connect(host: SimHostInfo, extra: ConnectOpts = {}): Promise<SshClient> {
  const c = new SshClient()
  clients.push(c)
  const { with: k = key, ...cfg } = extra
  const base: ConnectConfig = { host: host.host, port: host.port, username: 'kay', readyTimeout: 5000 }
  if (k) base.privateKey = k.privateKey
  return new Promise((resolve, reject) => {
    c.on('error', reject)
    c.on('ready', () => resolve(c))
    c.connect({ ...base, ...cfg })
  })
}

function connectError(host: SimHostInfo, extra: ConnectOpts = {}): Promise<Error & { level?: string }> {
  return connect(host, extra).then(
    () => {
      throw new Error('connected, expected a failure')
    },
    (err: Error) => err,
  )
}

interface Result {
  out: string
  err: string
  code: number | null
  signal: string | undefined
}

const results = new WeakMap<ClientChannel, Promise<Result>>()

/**
 * Open an exec channel. Listeners go on inside the exec callback: the exit status can arrive in the same read
 * as the channel confirmation, and ssh2 emits 'exit' once, before any awaiting code would run.
 */
function openExec(c: SshClient, cmd: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) =>
    c.exec(cmd, (err, ch) => {
      if (err) return reject(err)
      results.set(ch, listen(ch))
      resolve(ch)
    }),
  )
}

function collectResult(ch: ClientChannel): Promise<Result> {
  return results.get(ch) ?? listen(ch)
}

function listen(ch: ClientChannel): Promise<Result> {
  return new Promise((resolve) => {
    const r: Result = { out: '', err: '', code: null, signal: undefined }
    ch.on('data', (d: Buffer) => {
      r.out += d.toString('latin1')
    })
    ch.stderr.on('data', (d: Buffer) => {
      r.err += d.toString()
    })
    ch.on('exit', (code: number | null, signal?: string) => {
      r.code = code
      r.signal = signal
    })
    ch.on('close', () => resolve(r))
  })
}

async function run(c: SshClient, cmd: string): Promise<Result> {
  return collectResult(await openExec(c, cmd))
}

function sections(out: string): Map<string, string> {
  const m = new Map<string, string>()
  const parts = out.split(/^@@kay (\S+)\n/m)
  for (let i = 1; i < parts.length; i += 2) m.set(parts[i] ?? '', parts[i + 1] ?? '')
  return m
}

function rawSocket(host: SimHostInfo): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: host.host, port: host.port }, () => resolve(s))
    sockets.push(s)
    s.on('error', reject)
  })
}

function closed(s: Socket): Promise<void> {
  return new Promise((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())))
}

describe('the simulated fleet', () => {
  it('lists hosts on loopback with zero-padded names, distinct ports and ed25519 host keys', async () => {
    const f = await fleet({ hosts: 3 })
    expect(f.hosts.map((h) => h.name)).toEqual(['sim0001', 'sim0002', 'sim0003'])
    expect(new Set(f.hosts.map((h) => h.port)).size).toBe(3)
    for (const h of f.hosts) {
      expect(h.host).toBe('127.0.0.1')
      expect(h.hostKey).toMatch(/^ssh-ed25519 AAAA[\w+/]+=*$/)
      expect(h.fingerprint).toMatch(/^SHA256:[\w+/]{43}$/)
    }
    expect(new Set(f.hosts.map((h) => h.fingerprint)).size).toBe(3)
  })

  it('presents the host key whose fingerprint it lists', async () => {
    const f = await fleet()
    const h = f.hosts[1]!
    let seen = ''
    await connect(h, {
      hostVerifier: (k: Buffer) => {
        seen = `SHA256:${createHash('sha256').update(k).digest('base64').replace(/=+$/, '')}`
        return true
      },
    })
    expect(seen).toBe(h.fingerprint)
  })

  it('binds each host to its own 127.77.x.y address on one shared port in ips mode', async () => {
    const f = await fleet({ hosts: 3, bindAddresses: 'ips' })
    expect(f.hosts.map((h) => h.host)).toEqual(['127.77.0.1', '127.77.0.2', '127.77.0.3'])
    expect(new Set(f.hosts.map((h) => h.port)).size).toBe(1)
    const c = await connect(f.hosts[2]!)
    expect((await run(c, 'hostname')).out).toBe('sim0003\n')
  })

  it('rejects bad options with a KAY_CONFIG error', async () => {
    await expect(startSimFleet({ hosts: 0, authorizedKeys: [] })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    await expect(startSimFleet({ hosts: 1, authorizedKeys: ['not a key'] })).rejects.toMatchObject({
      code: 'KAY_CONFIG',
    })
    const f = await fleet()
    expect(() => f.setFault(0, { maxSessions: -1 })).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
    expect(() => f.host(99)).toThrow(expect.objectContaining({ code: 'KAY_CONFIG' }))
    expect(f.host('sim0002').index).toBe(1)
  })

  it('closes every listener and leaves no server handle behind, and closing twice is harmless', async () => {
    const servers = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap').length
    const before = servers()
    const f = await startSimFleet({ hosts: 5, authorizedKeys: [key.publicKey] })
    expect(servers()).toBe(before + 5)
    const c = await connect(f.hosts[0]!)
    const sleeping = openExec(c, 'sleep 30')
    await sleeping
    await f.close()
    await f.close()
    expect(servers()).toBe(before)
    const err = await connectError(f.hosts[0]!)
    expect(err.message).toMatch(/ECONNREFUSED/)
  })
})

describe('authentication', () => {
  it('accepts an authorized key and refuses any other, counting the failure', async () => {
    const f = await fleet()
    await connect(f.hosts[0]!)
    const err = await connectError(f.hosts[0]!, { with: otherKey })
    expect(err.level).toBe('client-authentication')
    const s = f.host(0).stats()
    expect(s.handshakesCompleted).toBe(1)
    expect(s.authFailures).toBeGreaterThanOrEqual(1)
    expect(s.passwordAttempts).toBe(0)
  })

  it('accepts a pre-parsed authorized key', async () => {
    const f = await fleet({ authorizedKeys: [otherKey.parsed] })
    const c = await connect(f.hosts[0]!, { with: otherKey })
    expect((await run(c, 'true')).code).toBe(0)
  })

  it('refuses a key whose signature does not verify', async () => {
    const f = await fleet()
    // Offer the authorized public key but sign with another private key.
    const forged: ParsedKey = Object.assign(Object.create(otherKey.parsed), {
      getPublicSSH: () => key.parsed.getPublicSSH(),
    })
    const forgedMethod: PublicKeyAuthMethod = { type: 'publickey', username: 'kay', key: forged }
    const err = await connectError(f.hosts[0]!, {
      with: null,
      authHandler: [forgedMethod],
    })
    expect(err.level).toBe('client-authentication')
    expect(f.host(0).stats().handshakesCompleted).toBe(0)
  })

  it('accepts only the configured users when a user list is given', async () => {
    const f = await fleet({ users: ['ops'] })
    await expect(connect(f.hosts[0]!, { username: 'ops' })).resolves.toBeInstanceOf(SshClient)
    expect((await connectError(f.hosts[0]!, { username: 'root' })).level).toBe('client-authentication')
  })

  it('offers only password when passwordOnly is set and records password attempts', async () => {
    const f = await fleet({ hostDefaults: { passwordOnly: true } })
    const err = await connectError(f.hosts[0]!)
    expect(err.level).toBe('client-authentication')
    expect(f.host(0).stats().passwordAttempts).toBe(0)
    await connectError(f.hosts[0]!, { with: null, password: 'hunter2' })
    expect(f.host(0).stats().passwordAttempts).toBe(1)
  })
})

describe('the collection protocol', () => {
  it('answers kay-collect with every section, realistic /proc content and exit 0', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    const r = await run(c, ': kay-collect v1; exec sh -c "..."')
    expect(r.code).toBe(0)
    const s = sections(r.out)
    expect([...s.keys()]).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df'])
    expect(s.get('loadavg')).toMatch(/^\d+\.\d\d \d+\.\d\d \d+\.\d\d \d+\/\d+ \d+\n$/)
    for (const field of ['MemTotal', 'MemFree', 'MemAvailable', 'Buffers', 'Cached', 'SwapTotal', 'SwapFree']) {
      expect(s.get('meminfo')).toMatch(new RegExp(`^${field}: +\\d+ kB$`, 'm'))
    }
    const stat = s.get('stat') ?? ''
    const cpuLines = stat.split('\n').filter((l) => /^cpu\d* /.test(l))
    expect(cpuLines[0]).toMatch(/^cpu {2}\d+( \d+){9}$/)
    expect(cpuLines.length - 1).toBeGreaterThanOrEqual(2)
    expect(cpuLines.length - 1).toBeLessThanOrEqual(64)
    for (const l of cpuLines.slice(1)) expect(l.split(' ')).toHaveLength(11)
    expect(stat).toMatch(/^ctxt \d+$/m)
    expect(stat).toMatch(/^btime \d+$/m)
    expect(stat).toMatch(/^processes \d+$/m)
    expect(s.get('uptime')).toMatch(/^\d+\.\d\d \d+\.\d\d\n$/)
    expect(s.get('netdev')).toMatch(/^Inter-\|/)
    expect(s.get('netdev')).toMatch(/^ +lo: /m)
    expect(s.get('netdev')).toMatch(/^ +eth0: /m)
    expect(s.get('df')).toMatch(
      /^Filesystem +1024-blocks +Used +Available +Capacity +Mounted on\n\S+ +\d+ +\d+ +\d+ +\d+% \/\n$/,
    )
  })

  it('moves counters forward with time and keeps hosts different from each other', async () => {
    const clock = new ManualClock()
    const f = await fleet({ clock, hosts: 2 })
    const c = await connect(f.hosts[0]!)
    const first = sections((await run(c, ': kay-collect v1;')).out)
    clock.advance(5000)
    const second = sections((await run(c, ': kay-collect v1;')).out)
    const cpuTotal = (s: Map<string, string>) =>
      (s.get('stat') ?? '')
        .split('\n')[0]!
        .split(/ +/)
        .slice(1)
        .reduce((a, b) => a + Number(b), 0)
    const up = (s: Map<string, string>) => Number((s.get('uptime') ?? '').split(' ')[0])
    const rx = (s: Map<string, string>) => Number(/eth0: +(\d+)/.exec(s.get('netdev') ?? '')?.[1])
    expect(up(second) - up(first)).toBeCloseTo(5, 5)
    expect(cpuTotal(second)).toBeGreaterThan(cpuTotal(first))
    expect(rx(second)).toBeGreaterThan(rx(first))
    const other = sections((await run(await connect(f.hosts[1]!), ': kay-collect v1;')).out)
    expect(other.get('meminfo')).not.toBe(second.get('meminfo'))
  })

  it('answers kay-detail with the ps top-20 and the full df table', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    const r = await run(c, ': kay-detail v1;')
    const s = sections(r.out)
    expect(r.code).toBe(0)
    expect([...s.keys()]).toEqual(['stat', 'meminfo', 'loadavg', 'uptime', 'netdev', 'df', 'ps'])
    const ps = (s.get('ps') ?? '').trimEnd().split('\n')
    expect(ps).toHaveLength(21)
    expect(ps[0]).toMatch(/^ +PID USER +%CPU %MEM +RSS COMMAND$/)
    expect((s.get('df') ?? '').trimEnd().split('\n').length).toBeGreaterThan(2)
  })

  describe('the stream loop', () => {
    const token = '0123456789abcdef'

    /** Open a stream channel and read frames; `next()` resolves with the text up to and including an end marker. */
    async function stream(c: SshClient, flavour = 'bash') {
      const ch = await openExec(c, `: kay-stream v1 ${flavour} ${token}; exec ${flavour} -c '...'`)
      const done = collectResult(ch)
      let buf = ''
      let chunks = 0
      let wake: (() => void) | undefined
      ch.on('data', (d: Buffer) => {
        buf += d.toString('latin1')
        chunks++
        wake?.()
      })
      const next = async (pred: (b: string) => boolean = (b) => /^@@kay-end \S+ \d+\n/m.test(b)) => {
        await until('a frame', () => pred(buf), 3000)
        const out = buf
        buf = ''
        return out
      }
      return { ch, done, next, chunks: () => chunks, pending: () => buf }
    }

    it('answers each request with the sections and an end marker carrying the token and seq', async () => {
      const f = await fleet()
      const c = await connect(f.hosts[0]!)
      const s = await stream(c)
      s.ch.write('1\n')
      const a = await s.next()
      expect([...sections(a).keys()]).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev'])
      expect(a.endsWith(`\n@@kay-end ${token} 1\n`)).toBe(true)
      s.ch.write('2 df\n')
      const b = await s.next()
      expect(sections(b).has('df')).toBe(true)
      expect(b.endsWith(`@@kay-end ${token} 2\n`)).toBe(true)
      s.ch.end()
      const r = await s.done
      expect(r.code).toBe(0)
      const st = f.host(0).stats()
      expect(st.streamRequests).toBe(2)
      expect(st.commands).toBe(1)
    })

    it('exits 127 with "command not found" for a flavour the host lacks', async () => {
      const f = await fleet({ hostDefaults: { streamFlavours: ['sh'] } })
      const c = await connect(f.hosts[0]!)
      const bash = await run(c, `: kay-stream v1 bash ${token}; exec bash -c '...'`)
      expect(bash).toMatchObject({ code: 127, err: 'bash: command not found\n' })
      const s = await stream(c, 'sh')
      s.ch.write('7\n')
      expect(await s.next()).toMatch(/@@kay-end 0123456789abcdef 7\n$/)
    })

    it('forges the token, replays the previous seq or splits the marker when told to', async () => {
      const f = await fleet()
      const c = await connect(f.hosts[0]!)
      f.setFault(0, { streamFault: 'forge-token' })
      const s = await stream(c)
      s.ch.write('1\n')
      const forged = /@@kay-end (\S+) (\d+)\n$/.exec(await s.next())
      expect(forged?.[1]).not.toBe(token)
      expect(forged?.[2]).toBe('1')

      f.setFault(0, { streamFault: 'stale-seq' })
      s.ch.write('2\n')
      expect(await s.next()).toMatch(new RegExp(`@@kay-end ${token} 1\n$`))

      f.setFault(0, { streamFault: 'split-marker' })
      const before = s.chunks()
      s.ch.write('3\n')
      expect(await s.next()).toMatch(new RegExp(`\n@@kay-end ${token} 3\n$`))
      expect(s.chunks() - before).toBeGreaterThanOrEqual(3)
    })

    it('writes garbage instead of a frame when told to', async () => {
      const f = await fleet({ hostDefaults: { streamFault: 'garbage' } })
      const s = await stream(await connect(f.hosts[0]!))
      s.ch.write('1\n')
      const junk = await s.next((b) => b.length >= 200)
      expect(junk).not.toMatch(/@@kay-end/)
      expect(junk).toContain('\u0000')
    })

    it('stops answering but keeps the channel open when stalled', async () => {
      const f = await fleet({ hostDefaults: { streamFault: 'stall' } })
      const c = await connect(f.hosts[0]!)
      const s = await stream(c)
      let closedCh = false
      s.ch.on('close', () => {
        closedCh = true
      })
      s.ch.write('1\n')
      await until('one stream request', () => f.host(0).stats().streamRequests === 1, 3000)
      s.ch.end() // even EOF does not unstick it
      // A command on the same connection, answered: the host has read the EOF before it.
      expect((await run(c, 'echo after')).out).toBe('after\n')
      expect(s.pending()).toBe('')
      expect(closedCh).toBe(false)
    })

    it('exits with status 1 after the next request when told to', async () => {
      const f = await fleet()
      const s = await stream(await connect(f.hosts[0]!))
      s.ch.write('1\n')
      await s.next()
      f.setFault(0, { streamFault: 'exit' })
      s.ch.write('2\n')
      const r = await s.done
      expect(r.code).toBe(1)
      expect(r.out).not.toContain(`@@kay-end ${token} 2`)
    })
  })
})

describe('ad-hoc commands', () => {
  it('runs the built-in commands with their output and exit status', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[1]!)
    expect(await run(c, 'echo hello "big world"')).toMatchObject({ out: 'hello big world\n', code: 0 })
    expect((await run(c, 'uname -a')).out).toMatch(/^Linux sim0002 .* GNU\/Linux\n$/)
    expect(await run(c, 'hostname')).toMatchObject({ out: 'sim0002\n', code: 0 })
    expect((await run(c, 'true')).code).toBe(0)
    expect((await run(c, 'false')).code).toBe(1)
    expect((await run(c, 'exit 42')).code).toBe(42)
    expect(await run(c, 'stderr oops here')).toMatchObject({ out: '', err: 'oops here\n', code: 0 })
    expect((await run(c, 'cat /proc/loadavg')).out).toMatch(/^[\d.]+ [\d.]+ [\d.]+ \d+\/\d+ \d+\n$/)
    expect((await run(c, 'cat /proc/net/dev')).out).toMatch(/eth0:/)
    expect((await run(c, 'cat /etc/shadow')).code).toBe(1)
    expect(await run(c, 'rm -rf /')).toMatchObject({ err: 'sh: 1: rm: not found\n', code: 127 })
    expect((await run(c, 'sleep 0.005')).code).toBe(0)
    expect(f.host(1).stats().commands).toBe(12)
  })

  it('ends a sleep on a TERM signal and records the signal', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    const ch = await openExec(c, 'sleep 30')
    const done = collectResult(ch)
    ch.signal('TERM')
    const r = await done
    expect(r.code).toBeNull()
    expect(r.signal).toBe('SIGTERM')
    expect(f.host(0).stats().signalsReceived).toBe(1)
  })

  it('floods exactly the bytes asked for, and stops when the channel goes away', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    const r = await run(c, 'flood 3000000')
    expect(r.code).toBe(0)
    expect(r.out.length).toBe(3_000_000)

    // A flood of 10 GB against a reader that stops: the server waits on the SSH window instead of buffering.
    const big = await openExec(c, 'flood 10000000000')
    let got = 0
    big.on('data', (d: Buffer) => {
      got += d.length
      if (got > 1_000_000) big.pause()
    })
    await until('over 1 MB received', () => got > 1_000_000, 3000)
    // A command on the same connection, answered: whatever the flood sent before that answer has arrived.
    expect((await run(c, 'echo still here')).out).toBe('still here\n')
    expect(got).toBeLessThan(16 * 1024 * 1024)
    big.close()
  })

  it('refuses a shell request', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    await expect(
      new Promise((resolve, reject) => c.shell((err, ch) => (err ? reject(err) : resolve(ch)))),
    ).rejects.toThrow()
  })

  it('answers want-reply global requests (keepalive probes) with a failure that proves liveness', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!, { keepaliveInterval: 15, keepaliveCountMax: 3 })
    let failed: Error | undefined
    c.on('error', (e: Error) => {
      failed = e
    })
    await until('keepalive probes', () => f.host(0).stats().globalRequests >= 3, 3000)
    expect(failed).toBeUndefined()
    const reply = await new Promise<Error | null | undefined>((resolve) =>
      c.unforwardIn('127.0.0.1', 1, (err) => resolve(err)),
    )
    expect(reply).toBeInstanceOf(Error)
    expect((await run(c, 'true')).code).toBe(0)
  })
})

describe('fault knobs', () => {
  it('refuses TCP connections right after accept', async () => {
    const f = await fleet({ hostDefaults: { refuse: true } })
    const err = await connectError(f.hosts[0]!)
    expect(err.message).toMatch(/Connection lost before handshake|ECONNRESET/)
    expect(f.host(0).stats()).toMatchObject({ accepted: 1, refused: 1, handshakesStarted: 0 })
    f.setFault(0, { refuse: false })
    await connect(f.hosts[0]!)
  })

  it('delays the banner by handshakeDelayMs and counts the connection as a handshake meanwhile', async () => {
    const f = await fleet({ hostDefaults: { handshakeDelayMs: 60 } })
    const t0 = Date.now()
    const ready = connect(f.hosts[0]!)
    await until('one handshake in progress', () => f.stats().currentHandshakes === 1, 3000)
    expect(f.host(0).stats().handshakesStarted).toBe(0)
    await ready
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55)
    expect(f.stats()).toMatchObject({ currentHandshakes: 0, maxConcurrentHandshakes: 1 })
  })

  it('stalls the handshake: TCP accepted, no banner ever', async () => {
    const f = await fleet({ hostDefaults: { stallHandshake: true } })
    const err = await connectError(f.hosts[0]!, { readyTimeout: 100 })
    expect(err.message).toMatch(/Timed out while waiting for handshake/)
    expect(f.host(0).stats().handshakesStarted).toBe(0)
  })

  it('writes a garbage banner', async () => {
    const f = await fleet({ hostDefaults: { garbageBanner: true } })
    const err = await connectError(f.hosts[0]!, { readyTimeout: 1000 })
    expect(err.message).toMatch(/Invalid header/)
    expect(f.host(0).stats().handshakesStarted).toBe(0)
  })

  it('goes half-open for existing and new connections, and resumes both when cleared', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    f.setFault(0, { halfOpen: true })
    let answered = false
    const pending = run(c, 'echo late').then((r) => {
      answered = true
      return r
    })
    const fresh = connect(f.hosts[0]!)
    let freshReady = false
    void fresh.then(() => {
      freshReady = true
    })
    await until('two connections', () => f.host(0).stats().currentConnections === 2, 3000)
    // What must not happen has no event to wait on: a window in which neither connection gets an answer.
    await new Promise((r) => setTimeout(r, 30))
    expect(answered).toBe(false)
    expect(freshReady).toBe(false)
    expect(f.host(0).stats().handshakesStarted).toBe(1)
    f.setFault(0, { halfOpen: false })
    expect((await pending).out).toBe('late\n')
    await fresh
  })

  it('drops every current connection of a host', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    const gone = new Promise<void>((resolve) => c.once('close', () => resolve()))
    f.drop(0)
    await gone
    await until('no connection left', () => f.host(0).stats().currentConnections === 0, 3000)
    await connect(f.hosts[0]!)
  })

  it('restarts on the same port with a new host key, refusing connections while down', async () => {
    const f = await fleet()
    const before = f.hosts[0]!
    const c = await connect(before)
    const gone = new Promise<void>((resolve) => c.once('close', () => resolve()))
    const restarted = f.restart(0, { newHostKey: true, downMs: 50 })
    await gone
    const err = await connectError(before)
    expect(err.message).toMatch(/ECONNREFUSED/)
    const after = await restarted
    expect(after.port).toBe(before.port)
    expect(after.fingerprint).not.toBe(before.fingerprint)
    expect(f.hosts[0]!.fingerprint).toBe(after.fingerprint)
    let seen = ''
    await connect(after, {
      hostVerifier: (k: Buffer) => {
        seen = `SHA256:${createHash('sha256').update(k).digest('base64').replace(/=+$/, '')}`
        return true
      },
    })
    expect(seen).toBe(after.fingerprint)
    const same = await f.restart(0)
    expect(same.fingerprint).toBe(after.fingerprint)
  })

  it('rejects a restart that the fleet closes during its down time, leaving nothing listening', async () => {
    const f = await startSimFleet({ hosts: 1, authorizedKeys: [key.publicKey] })
    const restarting = f.restart(0, { downMs: 10_000 })
    await f.close()
    await expect(restarting).rejects.toMatchObject({ code: 'KAY_CLOSED' })
    expect((await connectError(f.hosts[0]!)).message).toMatch(/ECONNREFUSED/)
  })

  it('drops connections past maxStartups before any banner', async () => {
    const f = await fleet({ hostDefaults: { maxStartups: 2, stallHandshake: true } })
    const socks = await Promise.all([0, 1, 2, 3].map(() => rawSocket(f.hosts[0]!)))
    await until('four connections accepted', () => f.host(0).stats().accepted === 4, 3000)
    const dropped = socks.filter((s) => s.closed || s.readableEnded)
    await Promise.all(socks.slice(2).map(closed))
    expect(f.host(0).stats().startupsDropped).toBe(2)
    expect(dropped.length).toBeLessThanOrEqual(2)
    expect(f.stats()).toMatchObject({ currentHandshakes: 2, maxConcurrentHandshakes: 2 })
  })

  it('shares one MaxStartups-like limit across hosts when sharedMaxStartups is set', async () => {
    const f = await fleet({ hosts: 3, sharedMaxStartups: 2, hostDefaults: { stallHandshake: true } })
    await rawSocket(f.hosts[0]!)
    await rawSocket(f.hosts[1]!)
    await until('two handshakes in progress', () => f.stats().currentHandshakes === 2, 3000)
    const third = await rawSocket(f.hosts[2]!)
    await closed(third)
    expect(f.host(2).stats().startupsDropped).toBe(1)
  })

  it('refuses channels past maxSessions with reason 2 and accepts again once one closes', async () => {
    const f = await fleet({ hostDefaults: { maxSessions: 2 } })
    const c = await connect(f.hosts[0]!)
    const a = await openExec(c, 'sleep 30')
    await openExec(c, 'sleep 30')
    const err = (await openExec(c, 'true').catch((e: unknown) => e)) as Error & { reason?: number }
    expect(err).toBeInstanceOf(Error)
    expect(err.reason).toBe(2)
    const aClosed = collectResult(a)
    a.signal('KILL')
    await aClosed
    expect((await run(c, 'true')).code).toBe(0)
    expect(f.host(0).stats()).toMatchObject({ channelsRejected: 1, maxConcurrentChannels: 2, channelsOpened: 3 })
  })

  it('opens hostile server-to-client channels after auth, which a plain client refuses and survives', async () => {
    const f = await fleet({ hostDefaults: { hostileChannels: true } })
    const c = await connect(f.hosts[0]!)
    await until('two hostile refusals', () => f.host(0).stats().hostileRefused === 2, 3000)
    expect(f.host(0).stats().hostileAccepted).toBe(0)
    expect((await run(c, 'echo ok')).out).toBe('ok\n')
  })

  it('corrupts the /proc sections per procFault', async () => {
    const f = await fleet()
    const c = await connect(f.hosts[0]!)
    const collect = async () => sections((await run(c, ': kay-collect v1;')).out)

    f.setFault(0, { procFault: 'malformed' })
    const bad = await collect()
    expect(bad.get('loadavg')).toBe('nan nan\n')
    expect(bad.get('meminfo')).not.toMatch(/^MemTotal: +\d+ kB$/m)

    f.setFault(0, { procFault: 'huge-line' })
    const huge = await collect()
    expect(Math.max(...(huge.get('meminfo') ?? '').split('\n').map((l) => l.length))).toBeGreaterThan(256 * 1024)

    f.setFault(0, { procFault: 'binary' })
    const bin = await collect()
    expect(bin.get('stat')).toContain('\u0000')

    f.setFault(0, { procFault: 'absurd' })
    const absurd = await collect()
    expect(absurd.get('meminfo')).toMatch(/^MemTotal: +0 kB$/m)
    expect(absurd.get('uptime')).toMatch(/^-/)

    f.setFault(0, { procFault: 'none' })
    expect((await collect()).get('loadavg')).toMatch(/^\d+\.\d\d /)
  })
})

describe('stats', () => {
  it('counts handshakes, channels and commands per host and fleet-wide, and resets', async () => {
    const f = await fleet({ hosts: 2 })
    const a = await connect(f.hosts[0]!)
    await connect(f.hosts[1]!)
    await Promise.all([run(a, 'true'), run(a, 'echo x'), run(a, ': kay-collect v1;')])
    await connectError(f.hosts[1]!, { with: otherKey })
    await until('two connections in total', () => f.stats().totals.currentConnections === 2, 3000)
    const s = f.stats()
    expect(s.hosts).toHaveLength(2)
    expect(s.hosts[0]).toMatchObject({
      name: 'sim0001',
      handshakesStarted: 1,
      handshakesCompleted: 1,
      channelsOpened: 3,
      commands: 3,
    })
    expect(s.hosts[0]!.maxConcurrentChannels).toBeGreaterThanOrEqual(1)
    expect(s.totals).toMatchObject({ handshakesStarted: 3, handshakesCompleted: 2, commands: 3 })
    expect(s.totals.authFailures).toBeGreaterThanOrEqual(1)
    expect(s.currentHandshakes).toBe(0)
    expect(s.maxConcurrentHandshakes).toBeGreaterThanOrEqual(1)
    // A snapshot is plain data, not a live view.
    expect(JSON.parse(JSON.stringify(s))).toEqual(s)

    f.resetStats()
    const r = f.stats()
    expect(r.totals).toMatchObject({ handshakesStarted: 0, commands: 0, authFailures: 0, currentConnections: 2 })
    expect(r.maxConcurrentHandshakes).toBe(0)
  })
})
