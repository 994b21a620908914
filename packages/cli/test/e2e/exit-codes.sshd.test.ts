/**
 * Every exit code of the README's table, produced through the CLI against real OpenSSH sshd (127.80.x.y), each with
 * its one-line message: no stack trace for an operator's mistake, no doubled "warning:".
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { makeClientKey, until } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { killRunning, runKay, startKay } from './support/kay.js'
import { type SshdFixture, startSshdFixture } from './support/sshd-fleet.js'

let fx: SshdFixture

beforeAll(async () => {
  fx = await startSshdFixture(2, {
    addressBase: '127.80.',
    extraConfig: (port) => `Host hdead\n  HostName 127.80.0.250\n  Port ${port}\n  User kaytest\n`,
  })
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

/** kay with the fixture's files; `noAgent` hides any ssh-agent of the machine running the tests. */
const kay = ([command, ...rest]: string[], opts: { conn?: string[] } = {}) =>
  // The connection flags go right after the command: anything after `--` is the remote command.
  runKay([command!, ...(opts.conn ?? fx.connArgs), ...rest], { timeoutMs: 60_000, env: { SSH_AUTH_SOCK: '' } })

const oneLine = (stderr: string) => {
  const lines = stderr.split('\n').filter((l) => l !== '' && !l.includes('pinned host key'))
  expect(lines, stderr).toHaveLength(1)
  expect(stderr).not.toMatch(/^\s+at /m)
  return lines[0]!
}

describe('exit codes (README table) against real sshd', { timeout: 180_000 }, () => {
  test('0: every host succeeded', async () => {
    const r = await kay(['exec', 'h[1-2]', '--', 'true'])
    expect(r.code).toBe(0)
  })

  test('1: usage errors, an empty selection, unusable local keys, a port in use — one line each', async () => {
    const unknown = await kay(['exec', 'h1', '--nosuch', '--', 'true'])
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toMatch(/^kay: KAY_CONFIG: unknown option --nosuch/)

    const empty = await kay(['exec', '-w', 'h[1-3]', '-x', 'h[1-3]', '--', 'true'])
    expect(empty.code).toBe(1)
    expect(oneLine(empty.stderr)).toBe('kay: KAY_CONFIG: no hosts left: -x excludes all 3 selected hosts')

    const dir = join(fx.dir, 'keys')
    await mkdir(dir, { recursive: true })
    const enc = await makeClientKey(dir, 'encrypted')
    const { execFile } = await import('node:child_process')
    await new Promise<void>((resolve, reject) =>
      execFile('ssh-keygen', ['-q', '-p', '-N', 'secret', '-f', enc.privateKeyPath], (e) =>
        e ? reject(e) : resolve(),
      ),
    )
    const conn = ['--ssh-config', fx.sshConfig, '--known-hosts', fx.knownHosts]
    const encrypted = await kay(['exec', 'h1', '-i', enc.privateKeyPath, '--', 'true'], { conn })
    expect(encrypted.code).toBe(1)
    expect(oneLine(encrypted.stderr)).toMatch(/^kay: KAY_KEY_ENCRYPTED: .*passphrase-protected.*ssh-add/)

    const isDir = await kay(['exec', 'h1', '-i', dir, '--', 'true'], { conn })
    expect(isDir.code).toBe(1)
    expect(oneLine(isDir.stderr)).toBe(
      `kay: KAY_CONFIG: '${dir}' is a directory, not a private key file; give the key file itself to -i`,
    )

    const busy: Server = createServer()
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r))
    try {
      const port = (busy.address() as { port: number }).port
      const serve = await kay(['serve', 'h1', '--listen', `127.0.0.1:${port}`])
      expect(serve.code).toBe(1)
      expect(oneLine(serve.stderr)).toBe(
        `kay: KAY_CONFIG: --listen 127.0.0.1:${port}: cannot listen: the address is already in use ` +
          '(another kay serve or exporter?); choose a free port with --listen ADDR:PORT',
      )
    } finally {
      await new Promise((r) => busy.close(r))
    }
  })

  test('2: a host unreachable', async () => {
    const r = await kay(['exec', 'h1,hdead', '--', 'true'])
    expect(r.code).toBe(2)
    expect(oneLine(r.stderr)).toMatch(/^kay: hdead: KAY_CONNECT_FAILED: /)
  })

  test('3: a host key that does not match its pin', async () => {
    await kay(['exec', 'h1', '--', 'true']) // pin h1's real key
    const other = await makeClientKey(join(fx.dir, 'other'), 'fake_host_key')
    const fakeKey = other.publicKey.split(' ').slice(0, 2).join(' ')
    const pins = join(fx.dir, 'wrong_pins')
    const lines = (await readFile(fx.knownHosts, 'utf8')).split('\n').filter((l) => l !== '')
    await writeFile(pins, `${lines.map((l) => `${l.split(' ')[0]} ${fakeKey}`).join('\n')}\n`)
    const conn = ['--ssh-config', fx.sshConfig, '-i', fx.key.privateKeyPath, '--known-hosts', pins]
    const r = await kay(['exec', 'h1', '--', 'true'], { conn })
    expect(r.code).toBe(3)
    expect(oneLine(r.stderr)).toMatch(/^kay: h1: KAY_HOST_KEY_MISMATCH: .*kay trust repin h1/)
  })

  test('4: public-key authentication refused', async () => {
    const stranger = await makeClientKey(join(fx.dir, 'stranger'))
    const conn = ['--ssh-config', fx.sshConfig, '-i', stranger.privateKeyPath, '--known-hosts', fx.knownHosts]
    const r = await kay(['exec', 'h1', '--', 'true'], { conn })
    expect(r.code).toBe(4)
    expect(oneLine(r.stderr)).toMatch(/^kay: h1: KAY_AUTH_FAILED: .*\(check -i KEY, -l USER and the agent\)$/)
  })

  test('5: the remote command failed on a host (and outranks 2)', async () => {
    const r = await kay(['exec', 'h1,hdead', '--', 'false'])
    expect(r.code).toBe(5)
  })

  test('130: interrupted', async () => {
    const k = startKay(['exec', 'h1', ...fx.connArgs, '--', 'echo up; sleep 60'], { timeoutMs: 60_000 })
    await until('the command running', () => k.stdout().includes('h1: up'), 30_000)
    k.child.kill('SIGINT')
    expect((await k.done).code).toBe(130)
  })

  test('warnings say "warning:" once, and --known-hosts documents its real default', async () => {
    const r = await kay(['exec', 'h1', '--insecure-accept-any-host-key', '--', 'true'])
    expect(r.code).toBe(0)
    const warnings = r.stderr.split('\n').filter((l) => l.includes('warning'))
    expect(warnings).toEqual([expect.stringMatching(/^kay: warning: --insecure-accept-any-host-key: host keys/)])
    const help = await runKay(['exec', '--help'])
    expect(help.stdout).toMatch(/--known-hosts FILE .*\n?.*\(default: ~\/\.config\/kay\/known_hosts\)/)
  })
})
