/**
 * The actor, collector and trust against real OpenSSH sshd on loopback (CI installs it: never skipped there).
 */
import { execFile } from 'node:child_process'
import { access, chmod, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostCollector } from '../../src/collection/collector.js'
import type { StreamFlavour } from '../../src/collection/index.js'
import { HostActor, type HostActorOptions } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import {
  type ClientKey,
  makeClientKey,
  requireSshd,
  SSHD_LOG,
  type SshdServer,
  startSshd,
  until,
} from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import { KnownHostsStore } from '../../src/trust/known-hosts.js'
import type { Identity } from '../../src/types.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

// Real sshd is a requirement of this tier (.ci/setup-sshd.sh installs it); without it these tests fail loudly.
const d = describe
/** A stream loop's process: every flavour's script carries its frame end, `kay-end`, in its command line. */
const STREAM_LOOP = /kay-end/

/** The absolute path of a tool on this machine's PATH. */
async function which(tool: string): Promise<string> {
  for (const d of ['/usr/local/bin', '/usr/bin', '/bin']) {
    const p = join(d, tool)
    if (
      await access(p).then(
        () => true,
        () => false,
      )
    )
      return realpath(p)
  }
  throw new Error(`${tool} not found`)
}

let dir: string
let key: ClientKey
let identity: Identity
const actors: HostActor[] = []

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-sshd-actor-'))
  key = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
})

afterAll(async () => {
  await Promise.all(actors.splice(0).map((a) => a.close()))
  if (dir) await rm(dir, { recursive: true, force: true })
})

function actorFor(s: SshdServer, extra: Partial<HostActorOptions> = {}): HostActor {
  const a = new HostActor({
    target: { id: `sshd-${s.port}`, hostname: s.host, port: s.port, user: s.user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
    backoff: { baseMs: 20, capMs: 200 },
    ...extra,
  })
  actors.push(a)
  return a
}

d('HostActor against real OpenSSH sshd', () => {
  it('runs 50 commands over one connection: sshd logs one accepted key and 50 sessions', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      const a = actorFor(s)
      a.start()
      await waitForState(a, 'ready')
      for (let i = 0; i < 50; i++) expect((await a.run(`echo run${i}`)).stdout).toBe(`run${i}\n`)
      await s.waitForCount(SSHD_LOG.startingSession, 50)
      expect(await s.count(SSHD_LOG.acceptedPublickey)).toBe(1)
      expect(a.status().handshakes).toBe(1)
      await a.close()
    } finally {
      await s.stop()
    }
  })

  it('respects MaxSessions 2: many concurrent runs queue and retry instead of failing', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey], maxSessions: 2 })
    try {
      const a = actorFor(s, { maxChannels: 4 })
      a.start()
      await waitForState(a, 'ready')
      const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => a.run(`echo m${i}`)))
      expect(rs.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 12 }, (_, i) => `m${i}`))
      expect(await s.count(SSHD_LOG.acceptedPublickey)).toBe(1)
      await a.close()
    } finally {
      await s.stop()
    }
  })

  it('signals the remote process on timeout: no sleep is left behind, the connection is kept', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      const a = actorFor(s)
      a.start()
      await waitForState(a, 'ready')
      await expect(a.run('sleep 30', { timeoutMs: 300 })).rejects.toMatchObject({ code: 'KAY_TIMEOUT' })
      await s.waitForProcesses((ps) => !ps.some((p) => /\bsleep 30\b/.test(p.cmd)), 5000)
      expect((await a.run('echo after')).stdout).toBe('after\n')
      expect(a.status().handshakes).toBe(1)
      await a.close()
    } finally {
      await s.stop()
    }
  })

  it('heals after sshd is restarted', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      const a = actorFor(s)
      a.start()
      await waitForState(a, 'ready')
      await s.restart()
      await until('loss noticed', () => a.state !== 'ready', 5000)
      await waitForState(a, 'ready', 10_000)
      expect((await a.run('echo healed')).stdout).toBe('healed\n')
      // Dials while sshd was down were refused at TCP; exactly one new authenticated connection.
      expect(await s.count(SSHD_LOG.acceptedPublickey)).toBe(2)
      await a.close()
    } finally {
      await s.stop()
    }
  })

  it('types an auth failure against a password-only sshd and never sends a password', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey], authMethods: 'password' })
    try {
      const a = actorFor(s)
      a.start()
      await waitForState(a, 'backoff')
      const st = a.status()
      expect(st.lastError?.code).toBe('KAY_AUTH_FAILED')
      expect(st.lastError?.details?.methodsOffered).toEqual(['password'])
      expect(await s.count(/Failed password|Accepted password/)).toBe(0)
      await a.close()
    } finally {
      await s.stop()
    }
  })
})

d('TOFU pinning end to end against real sshd', () => {
  it('pins on first use (0600), trusts after, refuses a new key with both fingerprints, never rewrites the pin', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    const pinFile = join(dir, 'pins', 'known_hosts')
    const store = () => new KnownHostsStore({ path: pinFile, userFiles: [], globalFiles: [], policy: 'accept-new' })
    try {
      const first = actorFor(s, { verifier: store() })
      const pinned: string[] = []
      first.on('pinned', (p) => pinned.push(p.fingerprint))
      first.start()
      await waitForState(first, 'ready')
      expect(pinned).toEqual([s.fingerprint])
      expect((await stat(pinFile)).mode & 0o777).toBe(0o600)
      expect((await stat(join(dir, 'pins'))).mode & 0o777).toBe(0o700)
      await first.close()
      const before = await readFile(pinFile)

      const second = actorFor(s, { verifier: store() })
      second.start()
      await waitForState(second, 'ready')
      await second.close()

      const oldFp = s.fingerprint
      await s.restart({ newHostKey: true })
      const third = actorFor(s, { verifier: store() })
      third.start()
      await waitForState(third, 'quarantined')
      const err = third.status().lastError!
      expect(err.code).toBe('KAY_HOST_KEY_MISMATCH')
      expect(err.details).toMatchObject({ expected: [oldFp], offered: s.fingerprint })
      expect(err.message).toContain('kay trust repin')
      expect(Buffer.compare(await readFile(pinFile), before)).toBe(0)
      await third.close()
    } finally {
      await s.stop()
    }
  })
})

/** Closes the collector and its actor, then waits until no collection loop is left on `s`. */
async function closeAndWaitNoLoop(s: SshdServer, a: HostActor, c: HostCollector): Promise<void> {
  c.close()
  await a.close()
  await s.waitForProcesses((ps) => !ps.some((p) => STREAM_LOOP.test(p.cmd)), 5000)
}

/**
 * An actor and collector on `s`, the stream probed as soon as the connection is ready; `viaExec` is one sample taken
 * over exec on the same connection (a second collector in exec mode), to compare the stream's numbers with.
 */
async function collectorOn(s: SshdServer, flavours?: StreamFlavour[]) {
  const a = actorFor(s)
  const c = new HostCollector(a, { streamTimeoutMs: 2000, ...(flavours ? { flavours } : {}) })
  a.start()
  await waitForState(a, 'ready')
  await until('the stream probe done', () => c.phase === 'streaming' || c.phase === 'exec', 10_000)
  const execOnly = new HostCollector(a, { mode: 'exec' })
  const viaExec = { ...(await execOnly.collect()), mode: execOnly.mode }
  execOnly.close()
  return { a, c, viaExec }
}

d('collection against real sshd', () => {
  it('collects the same metrics over the stream as over exec, with no new session per tick', async () => {
    const s = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      const { a, c, viaExec } = await collectorOn(s)
      expect(viaExec.mode).toBe('exec')
      expect(c.mode).toBe('stream-perl')
      // Two sessions so far: the stream (opened when the connection was ready) and the exec sample to compare with.
      const sessions = await s.count(SSHD_LOG.startingSession)
      expect(sessions).toBe(2)
      let viaStream = await c.collect()
      for (let i = 0; i < 10; i++) viaStream = await c.collect()
      expect(await s.count(SSHD_LOG.startingSession)).toBe(sessions)
      for (const k of ['cpus', 'memTotalBytes', 'swapTotalBytes'] as const) expect(viaStream[k]).toBe(viaExec[k])
      expect(viaStream.uptimeSeconds).toBeGreaterThanOrEqual(viaExec.uptimeSeconds)

      // Kill the remote loop: the tick still reports the host (exec fallback), then the stream comes back.
      const loop = (await s.processes()).find((p) => STREAM_LOOP.test(p.cmd))
      expect(loop).toBeDefined()
      process.kill(loop!.pid, 'SIGKILL')
      const m = await c.collect()
      expect(m.memTotalBytes).toBe(viaExec.memTotalBytes)

      // No collector process outlives its channel.
      await closeAndWaitNoLoop(s, a, c)
    } finally {
      await s.stop()
    }
  })
})

d('stream loop flavour on real sshd', () => {
  /**
   * A host whose PATH lacks an interpreter: authorized_keys' `environment="PATH=…"` (allowed for PATH only) points
   * the session at a directory of symlinks to the tools the loops use, without `perl` (and without `python3`, `bash`).
   */
  async function sshdWithPath(tools: readonly string[]): Promise<SshdServer> {
    const s = await startSshd({ extraConfig: ['PermitUserEnvironment PATH'] })
    const bin = join(s.dir, 'bin')
    await mkdir(bin, { mode: 0o755 })
    await chmod(bin, 0o755)
    for (const t of tools) await symlink(await which(t), join(bin, t))
    await s.setAuthorizedKeys([`environment="PATH=${bin}" ${key.publicKey}`])
    return s
  }

  const cases: Array<[missing: string, tools: string[], mode: string, flavours?: StreamFlavour[]]> = [
    ['perl', ['python3', 'awk', 'bash', 'sh', 'cat', 'df'], 'stream-python'],
    ['perl and python3', ['awk', 'bash', 'sh', 'cat', 'df'], 'stream-awk'],
    ['perl, python3 and awk', ['bash', 'sh', 'cat', 'df'], 'stream-bash'],
    // Pinned to sh, so that the sh loop's one-awk-per-request path runs (the awk loop would win otherwise).
    ['perl, python3 and bash (the sh loop, pinned, runs awk)', ['sh', 'awk', 'cat', 'df'], 'stream-sh', ['sh']],
    ['perl, python3, awk and bash (the sh loop runs cat)', ['sh', 'cat', 'df'], 'stream-sh'],
  ]
  for (const [missing, tools, mode, flavours] of cases) {
    it(`uses the next loop on a host without ${missing}: ${mode}`, async () => {
      const s = await sshdWithPath(tools)
      try {
        const { a, c, viaExec } = await collectorOn(s, flavours)
        expect(c.mode).toBe(mode)
        const m = await c.collect()
        expect(m.memTotalBytes).toBe(viaExec.memTotalBytes)
        expect(m.cpus).toBe(viaExec.cpus)
        await closeAndWaitNoLoop(s, a, c)
      } finally {
        await s.stop()
      }
    })
  }
})

d('host-key algorithm preference', () => {
  it('asks first for the key type already pinned, so a host with several key types is trusted, not unknown', async () => {
    const ecdsa = join(dir, 'host_ecdsa')
    await new Promise<void>((resolve, reject) => {
      execFile('ssh-keygen', ['-q', '-t', 'ecdsa', '-N', '', '-f', ecdsa], (err) => (err ? reject(err) : resolve()))
    })
    // The harness's own ed25519 key comes first in sshd_config; ssh2 would pick ed25519 by default.
    const s = await startSshd({ authorizedKeys: [key.publicKey], extraConfig: [`HostKey ${ecdsa}`] })
    try {
      const pub = (await readFile(`${ecdsa}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ')
      const pinFile = join(dir, 'ecdsa_pins')
      await writeFile(pinFile, `[${s.host}]:${s.port} ${pub}\n`, { mode: 0o600 })
      const before = await readFile(pinFile)
      // Strict: an unknown key would be refused, so reaching ready proves the ECDSA key was negotiated.
      const store = new KnownHostsStore({ path: pinFile, userFiles: [], globalFiles: [], policy: 'yes' })
      const a = actorFor(s, { verifier: store })
      a.start()
      await waitForState(a, 'ready')
      expect(Buffer.compare(await readFile(pinFile), before)).toBe(0)
      await a.close()
    } finally {
      await s.stop()
    }
  })
})
