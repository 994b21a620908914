// The collection commands run for real, locally: each is started the way sshd starts it (`<login shell> -c
// '<command>'`) under every shell on this machine, fed requests on stdin, and its output decoded and parsed.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  COLLECT_COMMAND,
  DETAIL_COMMAND,
  type Frame,
  FrameDecoder,
  forAnyLoginShell,
  identifyCommand,
  parseCollection,
  parseDetail,
  parseSections,
  randomStreamToken,
  STREAM_FLAVOURS,
  type StreamFlavour,
  scriptOf,
  streamCommand,
  streamRequest,
} from '../../src/collection/index.js'

/** busybox's sh as a login shell: busybox picks its applet by the name it was run as. */
const busyboxDir = mkdtempSync(join(tmpdir(), 'kay-busybox-sh-'))
symlinkSync(
  ['/usr/bin/busybox', '/bin/busybox'].find((p) => existsSync(p)) ?? '/usr/bin/busybox',
  join(busyboxDir, 'sh'),
)
afterAll(() => rmSync(busyboxDir, { recursive: true, force: true }))

// Every login shell sshd may run kay's commands under (sh is dash on Debian); .ci/setup-tools.sh installs them.
const SHELLS = [
  '/bin/sh',
  '/bin/bash',
  '/usr/bin/zsh',
  '/usr/bin/fish',
  '/usr/bin/tcsh',
  '/usr/bin/csh',
  join(busyboxDir, 'sh'),
]
const TIMEOUT_MS = 15_000

const started: ChildProcess[] = []

afterEach(() => {
  // Only the process groups these tests started, by pid.
  for (const c of started.splice(0)) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(-c.pid, 'SIGKILL')
      } catch {}
    }
  }
})

interface Running {
  child: ChildProcess
  decoder: FrameDecoder
  stderr: () => string
  nextFrame: () => Promise<Frame>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stdout: () => string
}

function start(shell: string, command: string, token = 'x', env: NodeJS.ProcessEnv = process.env): Running {
  // detached: the command gets its own process group, so "nothing left behind" can be checked by group.
  const child = spawn(shell, ['-c', command], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env })
  started.push(child)
  // A child that exits at once (interpreter missing) closes its stdin: EPIPE on our write is expected.
  child.stdin!.on('error', () => {})
  const decoder = new FrameDecoder({ token })
  const frames: Frame[] = []
  const waiting: Array<(f: Frame) => void> = []
  let out = ''
  let err = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8')
    for (const f of decoder.push(chunk)) {
      const w = waiting.shift()
      if (w) w(f)
      else frames.push(f)
    }
  })
  child.stderr!.on('data', (chunk: Buffer) => {
    err += chunk.toString('utf8')
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }))
  })
  return {
    child,
    decoder,
    exited,
    stderr: () => err,
    stdout: () => out,
    nextFrame: () => {
      const f = frames.shift()
      if (f) return Promise.resolve(f)
      return withTimeout(new Promise<Frame>((resolve) => waiting.push(resolve)), 'frame')
    },
  }
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
  })
  return Promise.race([p, t]).finally(() => clearTimeout(timer))
}

function groupGone(pid: number): boolean {
  try {
    process.kill(-pid, 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

/** Section names in order, and every section body ends with a newline. */
function sectionsOf(body: string): string[] {
  const m = parseSections(body)
  for (const [name, content] of m) expect(content.endsWith('\n'), `${name} ends with a newline`).toBe(true)
  return [...m.keys()]
}

/** A device interface's byte counters now, from sysfs; undefined if they cannot be read. */
function sysCounters(name: string): [number, number] | undefined {
  try {
    const at = `/sys/class/net/${name}/statistics`
    return [Number(readFileSync(`${at}/rx_bytes`, 'utf8')), Number(readFileSync(`${at}/tx_bytes`, 'utf8'))]
  } catch {
    return undefined
  }
}

/** The interfaces a tick counts on this machine (the rule in commands.ts) and their counters now, by name. */
function deviceInterfaces(): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>()
  for (const name of readdirSync('/sys/class/net').sort()) {
    if (existsSync(`/sys/devices/virtual/net/${name}`)) continue
    const c = sysCounters(name)
    if (c) out.set(name, c)
  }
  return out
}

/** The section starts with /proc/net/dev's two header lines, as this machine's /proc/net/dev does. */
function expectProcNetDevHeader(section: string): void {
  expect(section.split('\n').slice(0, 2)).toEqual(readFileSync('/proc/net/dev', 'utf8').split('\n').slice(0, 2))
}

/**
 * A tick's netdev section as this machine should give it: one `<name>: <rx> 0 0 0 0 0 0 0 <tx>` line per device
 * interface, its counters between those read `before` the request and those read now; /proc/net/dev itself when
 * there is no device interface.
 */
function expectNetdev(section: string, before: Map<string, [number, number]>): void {
  if (before.size === 0) {
    expectProcNetDevHeader(section)
    return
  }
  const lines = section.trimEnd().split('\n')
  expect(lines.map((l) => l.slice(0, l.indexOf(':'))).sort()).toEqual([...before.keys()])
  for (const line of lines) {
    const m = /^(\S+): (\d+) 0 0 0 0 0 0 0 (\d+)$/.exec(line)
    expect(m, line).not.toBeNull()
    const [rx0, tx0] = before.get(m![1]!)!
    const [rx1, tx1] = sysCounters(m![1]!)!
    expect(Number(m![2])).toBeGreaterThanOrEqual(rx0)
    expect(Number(m![2])).toBeLessThanOrEqual(rx1)
    expect(Number(m![3])).toBeGreaterThanOrEqual(tx0)
    expect(Number(m![3])).toBeLessThanOrEqual(tx1)
  }
}

describe.each(SHELLS)('under %s as the login shell', (shell) => {
  for (const flavour of STREAM_FLAVOURS) {
    it(`runs the ${flavour} stream loop: answers requests, ignores malformed ones, exits 0 on EOF`, async () => {
      const token = randomStreamToken()
      const r = start(shell, streamCommand(flavour, token), token)
      const nics = deviceInterfaces()
      r.decoder.expect(1)
      r.child.stdin!.write(streamRequest(1))
      const f1 = await r.nextFrame()
      expect(f1.seq).toBe(1)
      expect(sectionsOf(f1.body)).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev'])
      const s1 = parseCollection(f1.body, 1000)
      expect(s1.metrics.cpus).toBeGreaterThan(0)
      expect(s1.metrics.rootFsUsedPct).toBeUndefined()
      // The bodies are the files verbatim (line counts of files that do not change shape), except that every loop
      // sends less: perl, python, awk and sh (with awk) what the parser reads (meminfo up to SReclaimable), bash
      // meminfo up to the first `Z` (the Zswap lines, where the kernel has them); all of them stat up to its cpu lines.
      const keys = (text: string) => text.split('\n').map((l) => l.split(/[\s:]/)[0])
      const procMeminfo = keys(readFileSync('/proc/meminfo', 'utf8'))
      const procStat = keys(readFileSync('/proc/stat', 'utf8'))
      const upTo = (k: Array<string | undefined>, last: number) => (last < 0 ? k : [...k.slice(0, last + 1), ''])
      const beforeZ = procMeminfo.findIndex((k) => k?.includes('Z')) - 1
      const meminfoKeys = {
        perl: upTo(procMeminfo, procMeminfo.indexOf('SReclaimable')),
        python: upTo(procMeminfo, procMeminfo.indexOf('SReclaimable')),
        awk: upTo(procMeminfo, procMeminfo.indexOf('SReclaimable')),
        bash: beforeZ < 0 ? procMeminfo : upTo(procMeminfo, beforeZ),
        sh: upTo(procMeminfo, procMeminfo.indexOf('SReclaimable')),
      }[flavour]
      expect(keys(parseSections(f1.body).get('meminfo')!)).toEqual(meminfoKeys)
      expect(meminfoKeys).toEqual(
        expect.arrayContaining(['MemTotal', 'MemFree', 'MemAvailable', 'SwapTotal', 'SwapFree']),
      )
      expect(keys(parseSections(f1.body).get('stat')!)).toEqual([...procStat.filter((k) => k?.startsWith('cpu')), ''])
      expectNetdev(parseSections(f1.body).get('netdev')!, nics)

      r.child.stdin!.write("junk\n1x\n 2\n-3\n2 dff\n2df\n$(id)\n'\n\n")
      // A process started between two requests moves /proc/loadavg's last-pid field: the second frame must show it,
      // i.e. each request reads the files afresh (the perl loop rewinds descriptors it opened once).
      execFileSync('true')
      r.decoder.expect(2)
      r.child.stdin!.write(streamRequest(2, true))
      const f2 = await r.nextFrame()
      expect(f2.seq).toBe(2)
      const lastPid = (body: string) => Number(parseSections(body).get('loadavg')!.trim().split(' ')[4])
      expect(lastPid(f2.body)).not.toBe(lastPid(f1.body))
      expect(sectionsOf(f2.body)).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df'])
      const s2 = parseCollection(f2.body, 6000, s1.sample)
      // perl and python read it with statfs(2), the others fork df: either way it is what `df -P /` says (±1).
      expect(Math.abs(s2.metrics.rootFsUsedPct! - rootDfPct())).toBeLessThanOrEqual(1)
      // Two frames can fall in the same jiffy: then there is no CPU % yet, which is right.
      expect(s2.metrics.uptimeSeconds).toBeGreaterThanOrEqual(s1.metrics.uptimeSeconds)

      r.decoder.expect(3)
      r.child.stdin!.end(streamRequest(3))
      expect((await r.nextFrame()).seq).toBe(3)
      expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
      expect(r.decoder.dropped).toEqual({ 'foreign-token': 0, 'stale-seq': 0, unexpected: 0 })
      expect(r.decoder.pendingBytes).toBe(0)
      expect(r.stderr()).toBe('')
      expect(groupGone(r.child.pid!)).toBe(true)
    })

    it(`exits non-zero at once when the ${flavour} interpreter is not on PATH`, async () => {
      const r = start(shell, streamCommand(flavour, 'abc'), 'abc', { PATH: '/nonexistent' })
      r.child.stdin!.end(streamRequest(1))
      const t0 = performance.now()
      const { code } = await withTimeout(r.exited, 'exit')
      expect(code).toBe(127)
      expect(performance.now() - t0).toBeLessThan(TIMEOUT_MS)
      expect(r.stdout()).toBe('')
    })
  }

  it('runs the one-shot collect command: every section, exit 0', async () => {
    const nics = deviceInterfaces()
    const r = start(shell, COLLECT_COMMAND)
    r.child.stdin!.end()
    expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
    expect(sectionsOf(r.stdout())).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df'])
    expectNetdev(parseSections(r.stdout()).get('netdev')!, nics)
    expect(parseCollection(r.stdout(), 0).metrics.rootFsUsedPct).toBeGreaterThanOrEqual(0)
    expect(r.stderr()).toBe('')
  })

  it('runs the one-shot detail command: every section including ps, exit 0', async () => {
    const r = start(shell, DETAIL_COMMAND)
    r.child.stdin!.end()
    expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
    expect(sectionsOf(r.stdout())).toEqual(['stat', 'meminfo', 'loadavg', 'uptime', 'netdev', 'df', 'ps'])
    const d = parseDetail(parseSections(r.stdout()), undefined, 0)
    expect(d.processes.length).toBeGreaterThan(0)
    expect(d.processes.length).toBeLessThanOrEqual(20)
    expect(d.filesystems.some((f) => f.mount === '/')).toBe(true)
  })
})

/** Root filesystem use % as `df -P /` prints it here. */
function rootDfPct(): number {
  return Number(/(\d+)% \/$/m.exec(execFileSync('df', ['-P', '/'], { encoding: 'utf8' }))![1])
}

/**
 * Runs a stream command for one request with df and checks the df section came from forking `df` (its own
 * filesystem name, not the loop's `rootfs`) and agrees with `df -P /` (±1 for writes in between); exit 0.
 */
async function expectForkedDf(command: string, token: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const r = start('/bin/sh', command, token, env)
  r.decoder.expect(1)
  r.child.stdin!.end(streamRequest(1, true))
  const df = parseSections((await r.nextFrame()).body).get('df')!
  const root = /^(\S+) .* (\d+)% \/$/m.exec(df)
  expect(root?.[1]).not.toBe('rootfs')
  expect(Math.abs(Number(root?.[2]) - rootDfPct())).toBeLessThanOrEqual(1)
  expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
}

describe('the perl loop without statfs', () => {
  it('forks df for the df section when syscall() fails (an architecture it does not know, or a refused call)', async () => {
    // A module loaded through PERL5OPT makes every syscall() fail, as on an unknown architecture.
    const lib = mkdtempSync(join(tmpdir(), 'kay-nosyscall-'))
    try {
      writeFileSync(
        join(lib, 'KayNoSyscall.pm'),
        'package KayNoSyscall; BEGIN { *CORE::GLOBAL::syscall = sub { -1 } } 1;\n',
      )
      const token = randomStreamToken()
      const env = { ...process.env, PERL5LIB: lib, PERL5OPT: '-MKayNoSyscall' }
      await expectForkedDf(streamCommand('perl', token), token, env)
    } finally {
      rmSync(lib, { recursive: true, force: true })
    }
  })
})

/** A directory holding only `tools` (symlinks), to run a loop under a PATH that lacks the others. */
function pathOf(tools: Record<string, string>): string {
  const bin = mkdtempSync(join(tmpdir(), 'kay-path-'))
  for (const [name, target] of Object.entries(tools)) symlinkSync(target, join(bin, name))
  return bin
}

/** Runs a loop for two requests (the second with df) under `PATH=bin`; returns both frames' bodies. */
async function loopFrames(flavour: StreamFlavour, loginShell: string, bin: string): Promise<string[]> {
  const token = randomStreamToken()
  const r = start(loginShell, streamCommand(flavour, token), token, { PATH: bin })
  r.decoder.expect(1)
  r.child.stdin!.write(streamRequest(1))
  const f1 = await r.nextFrame()
  r.decoder.expect(2)
  r.child.stdin!.end(streamRequest(2, true))
  const f2 = await r.nextFrame()
  expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
  expect(r.stderr()).toBe('')
  return [f1.body, f2.body]
}

describe('the sh and awk loops', () => {
  const which = (t: string) => execFileSync('/bin/sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).trim()

  it('falls back to cat per file when awk is not on the PATH: whole files, same metrics', async () => {
    const bin = pathOf({ sh: which('sh'), cat: which('cat'), df: which('df') })
    try {
      const [b1, b2] = await loopFrames('sh', '/bin/sh', bin)
      expect(sectionsOf(b1!)).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev'])
      // cat sends the whole of /proc/stat, intr line included (awk stops before it).
      expect(parseSections(b1!).get('stat')).toMatch(/^intr /m)
      const s1 = parseCollection(b1!, 1000)
      expect(s1.metrics.memTotalBytes).toBeGreaterThan(0)
      expect(parseCollection(b2!, 2000, s1.sample).metrics.rootFsUsedPct).toBeGreaterThanOrEqual(0)
    } finally {
      rmSync(bin, { recursive: true, force: true })
    }
  })

  const busybox = ['/usr/bin/busybox', '/bin/busybox'].find((p) => existsSync(p))
  // Installed by .ci/setup-tools.sh: the shell and awk of Alpine and other busybox hosts.
  it.runIf(busybox !== undefined).each(['sh', 'awk'] as const)(
    'runs the %s loop under busybox sh, awk, cat and df',
    async (flavour) => {
      const bin = pathOf({ sh: busybox!, awk: busybox!, cat: busybox!, df: busybox! })
      try {
        const [b1, b2] = await loopFrames(flavour, join(bin, 'sh'), bin)
        expect(sectionsOf(b1!)).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev'])
        expect(parseSections(b1!).get('stat')).not.toMatch(/^intr /m)
        expect(parseSections(b1!).get('meminfo')!.trimEnd().split('\n').at(-1)).toMatch(/^SReclaimable:/)
        const s1 = parseCollection(b1!, 1000)
        expect(s1.metrics.cpus).toBeGreaterThan(0)
        expect(sectionsOf(b2!)).toEqual(['loadavg', 'meminfo', 'stat', 'uptime', 'netdev', 'df'])
        const s2 = parseCollection(b2!, 2000, s1.sample)
        expect(Math.abs(s2.metrics.rootFsUsedPct! - rootDfPct())).toBeLessThanOrEqual(1)
      } finally {
        rmSync(bin, { recursive: true, force: true })
      }
    },
  )
})

describe('the python loop without statvfs', () => {
  it('runs df for the df section when os.statvfs fails', async () => {
    // The loop as sent, with os.statvfs replaced by one that fails (python runs -I -S: no environment hook).
    const token = randomStreamToken()
    const script = scriptOf(streamCommand('python', token))!
    const failing = script.replace(
      'import os,sys,re,time\n',
      'import os,sys,re,time\ndef nostatvfs(p):raise OSError(38,"refused")\nos.statvfs=nostatvfs\n',
    )
    expect(failing).not.toBe(script)
    await expectForkedDf(forAnyLoginShell(failing), token)
  })
})

describe('a host where no interface has a device (a container as the target, or no /sys)', () => {
  // The login shell is a wrapper that runs the command in a new mount namespace whose /sys/class/net is an empty
  // tmpfs (root only, as CI runs; nothing outside the namespace sees the mount).
  let dir: string
  let wrapper: string
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kay-nonic-'))
    wrapper = join(dir, 'sh')
    writeFileSync(
      wrapper,
      '#!/bin/sh\nexec unshare -m sh -c \'mount -t tmpfs kay /sys/class/net && exec sh "$@"\' sh "$@"\n',
    )
    chmodSync(wrapper, 0o755)
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  /** /proc/net/dev as sent: its two header lines, then lines for every interface, lo included. */
  const expectProcNetDev = (section: string) => {
    expectProcNetDevHeader(section)
    expect(section).toMatch(/^ *lo:/m)
  }

  for (const flavour of STREAM_FLAVOURS) {
    it(`the ${flavour} loop sends /proc/net/dev, and the rates leave lo out`, async () => {
      const token = randomStreamToken()
      const r = start(wrapper, streamCommand(flavour, token), token)
      r.decoder.expect(1)
      r.child.stdin!.end(streamRequest(1))
      const body = (await r.nextFrame()).body
      expectProcNetDev(parseSections(body).get('netdev')!)
      const names = parseCollection(body, 1000).sample.interfaces!.map((i) => i.name)
      expect(names.length).toBeGreaterThan(0)
      expect(names).not.toContain('lo')
      expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
    })
  }

  it('the one-shot collect command sends /proc/net/dev', async () => {
    const r = start(wrapper, COLLECT_COMMAND)
    r.child.stdin!.end()
    expect(await withTimeout(r.exited, 'exit')).toEqual({ code: 0, signal: null })
    expectProcNetDev(parseSections(r.stdout()).get('netdev')!)
    expect(r.stderr()).toBe('')
  })
})

describe('command strings', () => {
  it('name themselves with the heads of the protocol', () => {
    expect(scriptOf(COLLECT_COMMAND)!.startsWith(': kay-collect v1;')).toBe(true)
    expect(scriptOf(DETAIL_COMMAND)!.startsWith(': kay-detail v1;')).toBe(true)
    for (const flavour of STREAM_FLAVOURS) {
      const cmd = streamCommand(flavour, '0123456789abcdef')
      expect(scriptOf(cmd)!.startsWith(`: kay-stream v1 ${flavour} 0123456789abcdef;exec `)).toBe(true)
      expect(identifyCommand(cmd)).toEqual({ kind: 'stream', flavour, token: '0123456789abcdef' })
    }
    expect(identifyCommand(COLLECT_COMMAND)).toEqual({ kind: 'collect' })
    expect(identifyCommand(DETAIL_COMMAND)).toEqual({ kind: 'detail' })
    expect(identifyCommand('uptime')).toEqual({ kind: 'other' })
    expect(identifyCommand(': kay-stream v1 fish abc;')).toEqual({ kind: 'other' })
  })

  it('refuses tokens that would need quoting', () => {
    for (const bad of ['', "a'b", '$(id)', 'a b', 'x;y', 'a'.repeat(65), 'é']) {
      expect(() => streamCommand('bash', bad)).toThrow(/token/)
    }
  })

  it('makes random 16-hex-char tokens and canonical request lines', () => {
    const t = randomStreamToken()
    expect(t).toMatch(/^[0-9a-f]{16}$/)
    expect(randomStreamToken()).not.toBe(t)
    expect(streamRequest(12)).toBe('12\n')
    expect(streamRequest(12, true)).toBe('12 df\n')
    expect(() => streamRequest(-1)).toThrow(/seq/)
  })
})
