/**
 * File copies over an SFTP session of the pooled connection, against real OpenSSH sshd (internal-sftp): modes kept
 * both ways, directories with -r, pdcp's destination rules, and typed errors naming the path.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { type ClientKey, makeClientKey, requireSshd, type SshdServer, startSshd } from '../../src/testing/index.js'
import { checkLocalSources, getPaths, putPaths } from '../../src/transfer/copy.js'
import { loadIdentity } from '../../src/trust/keys.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

let dir: string
let key: ClientKey
const servers: SshdServer[] = []
const actors: HostActor[] = []

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-copy-'))
  await chmod(dir, 0o755)
  key = await makeClientKey(join(dir, 'key'))
})

afterAll(async () => {
  await Promise.all(actors.map((a) => a.close()))
  await Promise.all(servers.map((s) => s.stop()))
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function host(id: string, extraConfig: string[] = []): Promise<HostActor> {
  const s = await startSshd({ authorizedKeys: [key.publicKey], extraConfig })
  servers.push(s)
  const a = new HostActor({
    target: { id, hostname: s.host, port: s.port, user: s.user },
    identity: await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' }),
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
  })
  actors.push(a)
  a.start()
  await waitForState(a, 'ready')
  return a
}

/** A directory the remote user (kaytest) may write into. */
async function remoteDir(name: string): Promise<string> {
  const d = join(dir, name)
  await mkdir(d, { recursive: true })
  await chmod(d, 0o777)
  return d
}

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777

describe('copy over SFTP against real sshd', () => {
  it('puts files and a directory tree with their modes, then gets them back as NAME.HOST', async () => {
    const a = await host('h1')
    const src = join(dir, 'src')
    await mkdir(join(src, 'sub'), { recursive: true })
    await writeFile(join(src, 'run.sh'), '#!/bin/sh\necho hi\n')
    await chmod(join(src, 'run.sh'), 0o750)
    await writeFile(join(src, 'sub', 'secret'), 'x'.repeat(100_000))
    await chmod(join(src, 'sub', 'secret'), 0o600)
    await chmod(join(src, 'sub'), 0o711)
    await chmod(src, 0o755)
    const dest = await remoteDir('dest')

    // One file into an existing directory; a directory with -r; a file to a new name.
    const one = await a.withSftp((sftp) => putPaths(sftp, 'h1', [join(src, 'run.sh')], dest))
    expect(one).toEqual({ files: 1, directories: 0, bytes: 18 })
    expect(await modeOf(join(dest, 'run.sh'))).toBe(0o750)
    const tree = await a.withSftp((sftp) => putPaths(sftp, 'h1', [src], join(dest, 'tree'), { recursive: true }))
    expect(tree).toEqual({ files: 2, directories: 2, bytes: 100_018 })
    expect(await readFile(join(dest, 'tree', 'sub', 'secret'), 'utf8')).toBe('x'.repeat(100_000))
    expect(await modeOf(join(dest, 'tree', 'sub', 'secret'))).toBe(0o600)
    expect(await modeOf(join(dest, 'tree', 'sub'))).toBe(0o711)
    await a.withSftp((sftp) => putPaths(sftp, 'h1', [join(src, 'run.sh')], join(dest, 'renamed')))
    expect(await modeOf(join(dest, 'renamed'))).toBe(0o750)

    const back = join(dir, 'back')
    await mkdir(back)
    const got = await a.withSftp((sftp) =>
      getPaths(sftp, 'h1', [join(dest, 'run.sh'), join(dest, 'tree')], back, { recursive: true }),
    )
    expect(got).toEqual({ files: 3, directories: 2, bytes: 100_036 })
    expect(await readFile(join(back, 'run.sh.h1'), 'utf8')).toBe('#!/bin/sh\necho hi\n')
    expect(await modeOf(join(back, 'run.sh.h1'))).toBe(0o750)
    expect(await modeOf(join(back, 'tree.h1', 'sub', 'secret'))).toBe(0o600)
    expect(await modeOf(join(back, 'tree.h1', 'sub'))).toBe(0o711)
  })

  it('fails with KAY_COPY_FAILED naming the path: no such file, not a directory, read-only server', async () => {
    const a = await host('h2')
    const file = join(dir, 'f.txt')
    await writeFile(file, 'f\n')
    const dest = await remoteDir('dest2')
    await expect(a.withSftp((sftp) => putPaths(sftp, 'h2', [file], '/nonexistent/dir/x'))).rejects.toMatchObject({
      code: 'KAY_COPY_FAILED',
      host: 'h2',
      message: expect.stringContaining('/nonexistent/dir/x'),
    })
    await expect(
      a.withSftp((sftp) => putPaths(sftp, 'h2', [file, file], join(dest, 'not-there'))),
    ).rejects.toMatchObject({ code: 'KAY_COPY_FAILED', message: expect.stringMatching(/not a directory/) })
    await expect(a.withSftp((sftp) => getPaths(sftp, 'h2', ['/nonexistent/y'], dir))).rejects.toMatchObject({
      code: 'KAY_COPY_FAILED',
      message: 'h2: /nonexistent/y: No such file',
    })
    await expect(a.withSftp((sftp) => getPaths(sftp, 'h2', [dest], dir))).rejects.toMatchObject({
      message: expect.stringMatching(/is a directory \(use -r\)/),
    })

    // A host whose SFTP server is read-only refuses the write; reads still work there.
    const ro = await host('h3', ['ForceCommand internal-sftp -R'])
    await expect(ro.withSftp((sftp) => putPaths(sftp, 'h3', [file], dest))).rejects.toMatchObject({
      code: 'KAY_COPY_FAILED',
      message: expect.stringContaining(join(dest, 'f.txt')),
    })
    await a.withSftp((sftp) => putPaths(sftp, 'h2', [file], dest))
    const out = join(dir, 'out3')
    await mkdir(out)
    await ro.withSftp((sftp) => getPaths(sftp, 'h3', [join(dest, 'f.txt')], out))
    expect(await readFile(join(out, 'f.txt.h3'), 'utf8')).toBe('f\n')
  })

  it('checks local sources before any host: missing file, directory without -r', async () => {
    await expect(checkLocalSources([join(dir, 'nope')], false)).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    await expect(checkLocalSources([dir], false)).rejects.toMatchObject({
      code: 'KAY_CONFIG',
      message: expect.stringContaining('add -r'),
    })
    await expect(checkLocalSources([dir], true)).resolves.toBeUndefined()
  })

  it('bounds an SFTP session by its deadline and its signal, and frees the channel slot', async () => {
    const a = await host('h4')
    const hang = () => new Promise<never>(() => {})
    await expect(a.withSftp(hang, { timeoutMs: 200 })).rejects.toMatchObject({ code: 'KAY_TIMEOUT' })
    const ac = new AbortController()
    const p = a.withSftp(hang, { signal: ac.signal })
    ac.abort()
    await expect(p).rejects.toMatchObject({ code: 'KAY_ABORTED' })
    // Every slot came back: four sessions (the default channel cap) still open at once.
    const all = await Promise.all(
      Array.from({ length: 4 }, () => a.withSftp((sftp) => new Promise((r) => sftp.readdir(dir, (e) => r(e ?? 'ok'))))),
    )
    expect(all).toEqual(['ok', 'ok', 'ok', 'ok'])
  })
})
