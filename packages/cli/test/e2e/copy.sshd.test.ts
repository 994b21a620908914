/**
 * `kay cp` and `kay rcopy` end to end against real OpenSSH sshd (127.79.x.y): a round trip with file modes kept, a
 * failure on one host (a read-only SFTP server) reported per host with the exit code exec would give.
 */
import { appendFile, chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type SshdServer, startSshd } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { killRunning, runKay } from './support/kay.js'
import { type SshdFixture, startSshdFixture } from './support/sshd-fleet.js'

let fx: SshdFixture
let readOnly: SshdServer

beforeAll(async () => {
  fx = await startSshdFixture(2, {
    addressBase: '127.79.',
    extraConfig: (port) => `Host hdead\n  HostName 127.79.0.250\n  Port ${port}\n  User kaytest\n`,
  })
  // One more host whose SFTP server is read-only: every write there fails, reads work.
  readOnly = await startSshd({
    address: '127.79.1.1',
    authorizedKeys: [fx.key.publicKey],
    extraConfig: ['ForceCommand internal-sftp -R'],
  })
  await appendFile(
    fx.sshConfig,
    `\nHost hro\n  HostName ${readOnly.host}\n  Port ${readOnly.port}\n  User ${readOnly.user}\n`,
  )
})

afterAll(async () => {
  killRunning()
  await readOnly?.stop()
  await fx?.close()
})

const kay = (args: string[]) => runKay([...args, ...fx.connArgs], { timeoutMs: 90_000 })
const modeOf = async (p: string) => (await stat(p)).mode & 0o777
const lines = (text: string) => text.split('\n').filter((l) => l !== '')

describe('kay cp and kay rcopy against real sshd', { timeout: 180_000 }, () => {
  test('copies files and trees out and back with their modes; a read-only host fails alone with exit 5', async () => {
    const src = join(fx.dir, 'src')
    await mkdir(join(src, 'conf.d'), { recursive: true })
    await writeFile(join(src, 'deploy.sh'), '#!/bin/sh\necho deployed\n')
    await chmod(join(src, 'deploy.sh'), 0o750)
    await writeFile(join(src, 'conf.d', 'app.conf'), 'key=value\n')
    await chmod(join(src, 'conf.d', 'app.conf'), 0o640)
    await chmod(join(src, 'conf.d'), 0o710)
    await chmod(src, 0o755)
    const dest = join(fx.shared, 'dest')
    await mkdir(dest)
    await chmod(dest, 0o777)

    const cp = await kay(['cp', '-w', 'h1,hro', join(src, 'deploy.sh'), dest])
    expect(cp.code).toBe(5)
    expect(lines(cp.stdout)).toEqual(['h1: copied 1 file (24 bytes)'])
    expect(lines(cp.stderr).filter((l) => !l.includes('pinned host key'))).toEqual([
      expect.stringMatching(new RegExp(`^kay: hro: KAY_COPY_FAILED: ${join(dest, 'deploy.sh')}: Permission denied`)),
    ])
    expect(await modeOf(join(dest, 'deploy.sh'))).toBe(0o750)

    const tree = await kay(['cp', '-w', 'h1', '-r', src, dest])
    expect(tree.code).toBe(0)
    expect(lines(tree.stdout)).toEqual(['h1: copied 2 files, 2 dirs (34 bytes)'])
    expect(await modeOf(join(dest, 'src', 'conf.d'))).toBe(0o710)
    expect(await modeOf(join(dest, 'src', 'conf.d', 'app.conf'))).toBe(0o640)

    const back = join(fx.dir, 'back')
    const rcopy = await kay(['rcopy', '-w', 'h[1-2],hro', '-r', join(dest, 'deploy.sh'), join(dest, 'src'), back])
    expect(rcopy.code).toBe(0)
    expect((await readdir(back)).sort()).toEqual([
      'deploy.sh.h1',
      'deploy.sh.h2',
      'deploy.sh.hro',
      'src.h1',
      'src.h2',
      'src.hro',
    ])
    for (const h of ['h1', 'h2', 'hro']) {
      expect(await readFile(join(back, `deploy.sh.${h}`), 'utf8')).toBe('#!/bin/sh\necho deployed\n')
      expect(await modeOf(join(back, `deploy.sh.${h}`))).toBe(0o750)
      expect(await readFile(join(back, `src.${h}`, 'conf.d', 'app.conf'), 'utf8')).toBe('key=value\n')
      expect(await modeOf(join(back, `src.${h}`, 'conf.d', 'app.conf'))).toBe(0o640)
      expect(await modeOf(join(back, `src.${h}`, 'conf.d'))).toBe(0o710)
    }
  })

  test('reports an unreachable host and a missing remote file per host, with exec exit codes', async () => {
    const back = join(fx.dir, 'back2')
    const r = await kay(['rcopy', '-w', 'h1,hdead', '/nonexistent/file', back])
    expect(r.code).toBe(5)
    expect(lines(r.stderr).sort()).toEqual([
      'kay: h1: KAY_COPY_FAILED: /nonexistent/file: No such file',
      expect.stringMatching(/^kay: hdead: KAY_CONNECT_FAILED: connect failed: connect ECONNREFUSED /),
    ])
    const unreachable = await kay(['rcopy', '-w', 'hdead', '/etc/hostname', back])
    expect(unreachable.code).toBe(2)
  })

  test('refuses a missing local source or a directory without -r before contacting any host (exit 1)', async () => {
    const missing = await kay(['cp', '-w', 'h1', join(fx.dir, 'nope'), '/tmp'])
    expect(missing.code).toBe(1)
    expect(lines(missing.stderr)).toEqual([expect.stringMatching(/^kay: KAY_CONFIG: cannot copy '.*nope': ENOENT$/)])
    const dir = await kay(['cp', '-w', 'h1', fx.dir, '/tmp'])
    expect(dir.code).toBe(1)
    expect(lines(dir.stderr)).toEqual([expect.stringMatching(/is a directory: add -r to copy it with its contents$/)])
    const usage = await kay(['cp', '-w', 'h1', '/etc/hostname'])
    expect(usage.code).toBe(1)
    expect(usage.stderr).toMatch(/'kay cp' needs SOURCE… DEST/)
  })
})
