import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { type ClientChannel, Client as SshClient } from 'ssh2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type ClientKey,
  fingerprintOfLine,
  isAlive,
  makeClientKey,
  processTable,
  requireSshd,
  SSHD_LOG,
  type SshdServer,
  startSshd,
  startSshdFleet,
} from '../src/testing/index.js'

const execFileP = promisify(execFile)

/** Run a command with the system OpenSSH client, keys only, no host key prompts. */
async function systemSsh(server: SshdServer, key: ClientKey, command: string): Promise<string> {
  const { stdout } = await execFileP('ssh', [
    ...['-i', key.privateKeyPath, '-p', String(server.port)],
    ...['-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'],
    ...['-o', 'LogLevel=ERROR', '-o', 'IdentitiesOnly=yes'],
    `${server.user}@${server.host}`,
    command,
  ])
  return stdout
}

interface Connected {
  client: SshClient
  hostKey: Buffer
}

/** Connect with ssh2; resolves with the client and the host key it was shown. */
function connect(server: SshdServer, key: ClientKey): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const client = new SshClient()
    let hostKey: Buffer = Buffer.alloc(0)
    client.on('error', reject)
    client.once('ready', () => resolve({ client, hostKey }))
    client.connect({
      host: server.host,
      port: server.port,
      username: server.user,
      privateKey: key.privateKey,
      readyTimeout: 5_000,
      hostVerifier: (k: Buffer) => {
        hostKey = k
        return true
      },
    })
  })
}

function exec(client: SshClient, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, ch) => {
      if (err) return reject(err)
      let out = ''
      ch.on('data', (d: Buffer) => {
        out += d.toString()
      })
      ch.on('close', () => resolve(out))
    })
  })
}

/** Open an exec channel and leave it running; resolves once the channel is open (or with the open error). */
function openChannel(client: SshClient, command: string): Promise<ClientChannel | Error> {
  return new Promise((resolve) => {
    client.exec(command, (err, ch) => resolve(err ?? ch))
  })
}

/** The `SHA256:…` fingerprint of a raw host key blob as ssh2 hands it to hostVerifier. */
function blobFingerprint(blob: Buffer): string {
  return fingerprintOfLine(`ssh-ed25519 ${blob.toString('base64')}`)
}

// This tier needs real sshd (.ci/setup-sshd.sh installs it); without it the suite fails loudly instead of skipping.
describe('real sshd harness', () => {
  let keyDir: string
  let key: ClientKey

  beforeAll(async () => {
    if (!requireSshd())
      throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
    keyDir = await mkdtemp(join(tmpdir(), 'kay-harness-keys-'))
    key = await makeClientKey(keyDir)
  })
  afterAll(async () => {
    await rm(keyDir, { recursive: true, force: true })
  })

  it('makes client keys with a private file only its owner can read', async () => {
    expect((await stat(key.privateKeyPath)).mode & 0o777).toBe(0o600)
    expect(key.publicKey).toMatch(/^ssh-ed25519 AAAA\S+ /)
    const { stdout } = await execFileP('ssh-keygen', ['-lf', key.publicKeyPath])
    expect(stdout).toContain(key.fingerprint)
  })

  it('lets kaytest in by key from the system ssh client and from ssh2, one Accepted publickey per connection', async () => {
    const server = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      expect(server.host).toBe('127.0.0.1')
      expect(server.user).toBe('kaytest')
      expect(await isAlive(server.pid)).toBe(true)
      expect(await systemSsh(server, key, 'echo hi')).toBe('hi\n')
      await server.waitForCount(SSHD_LOG.acceptedPublickey, 1)
      expect(await server.count(SSHD_LOG.acceptedPublickey)).toBe(1)

      const { client } = await connect(server, key)
      try {
        // Three channels on one connection: three sessions, still only one more authentication.
        expect(await exec(client, 'echo one')).toBe('one\n')
        expect(await exec(client, 'echo two')).toBe('two\n')
        expect(await exec(client, 'echo $0')).toBe('sh\n')
      } finally {
        client.end()
      }
      await server.waitForCount(SSHD_LOG.disconnected, 2)
      expect(await server.count(SSHD_LOG.acceptedPublickey)).toBe(2)
      expect(await server.count(SSHD_LOG.startingSession)).toBe(4)
      expect(await server.count(SSHD_LOG.connection)).toBe(2)
    } finally {
      await server.stop()
    }
  })

  it('reports the host key fingerprint as ssh-keygen does, and a restart with a new host key changes it', async () => {
    const server = await startSshd({ authorizedKeys: [key.publicKey] })
    try {
      const { stdout } = await execFileP('ssh-keygen', ['-lf', `${server.hostKeyPath}.pub`])
      expect(stdout.split(' ')[1]).toBe(server.fingerprint)
      const first = await connect(server, key)
      first.client.end()
      expect(blobFingerprint(first.hostKey)).toBe(server.fingerprint)

      const { port, pid, fingerprint } = server
      await server.restart({ newHostKey: true })
      expect(server.port).toBe(port)
      expect(server.pid).not.toBe(pid)
      expect(server.fingerprint).not.toBe(fingerprint)
      const second = await connect(server, key)
      second.client.end()
      expect(blobFingerprint(second.hostKey)).toBe(server.fingerprint)

      await server.restart()
      expect(server.fingerprint).toBe(blobFingerprint(second.hostKey))
      // The log survives restarts: three listener starts.
      expect(await server.count(SSHD_LOG.listening)).toBe(3)
    } finally {
      await server.stop()
    }
  })

  it('stop ends established connections and leaves no process of that sshd behind', async () => {
    const server = await startSshd({ authorizedKeys: [key.publicKey] })
    const { client } = await connect(server, key)
    client.on('error', () => undefined)
    const ch = await openChannel(client, 'sleep 30')
    expect(ch).not.toBeInstanceOf(Error)
    const procs = await server.waitForProcesses((ps) => ps.some((p) => p.cmd === 'sleep 30'))
    expect(procs.some((p) => p.cmd.startsWith('sshd: kaytest'))).toBe(true)

    const pids = [server.pid, ...procs.map((p) => p.pid)]
    const { configPath, dir } = server
    await server.stop()
    await server.stop()
    client.end()
    const alive = await Promise.all(pids.map(isAlive))
    expect(alive.every((a) => !a)).toBe(true)
    const table = await processTable()
    expect(table.filter((p) => p.cmd.includes(configPath))).toEqual([])
    expect(existsSync(dir)).toBe(false)
  })

  it('applies rewritten authorized_keys to the next login', async () => {
    const server = await startSshd({ authorizedKeys: [] })
    try {
      await expect(connect(server, key)).rejects.toMatchObject({ level: 'client-authentication' })
      await server.setAuthorizedKeys([key.publicKey])
      const { client } = await connect(server, key)
      expect(await exec(client, 'echo in')).toBe('in\n')
      client.end()
    } finally {
      await server.stop()
    }
  })

  it('in password-only mode rejects every login and logs the failure', async () => {
    const server = await startSshd({ authMethods: 'password', authorizedKeys: [key.publicKey] })
    try {
      await expect(connect(server, key)).rejects.toMatchObject({ level: 'client-authentication' })
      await server.waitForCount(SSHD_LOG.closedPreauth, 1)
      expect(await server.count(SSHD_LOG.acceptedPublickey)).toBe(0)
    } finally {
      await server.stop()
    }
  })

  it('enforces MaxSessions: channels past the limit fail with reason 2 and the connection stays up', async () => {
    const server = await startSshd({ authorizedKeys: [key.publicKey], maxSessions: 2 })
    try {
      const { client } = await connect(server, key)
      // `cat` holds each channel open until we end its stdin: no timing involved.
      const opened = await Promise.all(Array.from({ length: 4 }, () => openChannel(client, 'cat')))
      const channels = opened.filter((c): c is ClientChannel => !(c instanceof Error))
      const failures = opened.filter((c): c is Error => c instanceof Error)
      expect(channels).toHaveLength(2)
      expect(failures.map((e) => (e as Error & { reason?: number }).reason)).toEqual([2, 2])
      // resume(): a channel emits close only after its output was consumed.
      await Promise.all(channels.map((c) => new Promise((r) => c.once('close', r).resume().end())))
      expect(await exec(client, 'echo still-up')).toBe('still-up\n')
      client.end()
    } finally {
      await server.stop()
    }
  })

  it('refuses addresses outside 127.0.0.0/8 and bad limits with a config error', async () => {
    for (const address of ['10.0.0.1', '0.0.0.0', '::1', 'localhost', '127.0.0.256']) {
      await expect(startSshd({ address })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    }
    await expect(startSshd({ maxStartups: '10:30' })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    await expect(startSshdFleet({ count: 1, addressBase: '10.1.' })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })

  it('says sshd is available here, so CI never skips', () => {
    const saved = process.env.CI
    process.env.CI = '1'
    try {
      expect(requireSshd()).toBe(true)
    } finally {
      if (saved === undefined) delete process.env.CI
      else process.env.CI = saved
    }
  })

  it('runs a fleet of three on 127.77.0.x with distinct host keys and accounts its CPU', async () => {
    const fleet = await startSshdFleet({ count: 3, authorizedKeys: [key.publicKey] })
    try {
      expect(fleet.servers.map((s) => s.host)).toEqual(['127.77.0.1', '127.77.0.2', '127.77.0.3'])
      expect(new Set(fleet.servers.map((s) => s.fingerprint)).size).toBe(3)
      const before = await fleet.cpuUsageUsec()
      for (const server of fleet.servers) {
        const { client, hostKey } = await connect(server, key)
        expect(blobFingerprint(hostKey)).toBe(server.fingerprint)
        expect(await exec(client, 'echo fleet')).toBe('fleet\n')
        client.end()
      }
      const after = await fleet.cpuUsageUsec()
      if (fleet.cgroupPath === null) {
        expect([before, after]).toEqual([null, null])
      } else {
        expect(existsSync(fleet.cgroupPath)).toBe(true)
        expect(after).toBeGreaterThan(before!)
      }
      expect(await fleet.pssKb()).toBeGreaterThan(0)
    } finally {
      await fleet.stop()
    }
    expect(fleet.servers.every((s) => s.pid === 0)).toBe(true)
    if (fleet.cgroupPath !== null) expect(existsSync(fleet.cgroupPath)).toBe(false)
    expect(existsSync(fleet.dir)).toBe(false)
  })
})
