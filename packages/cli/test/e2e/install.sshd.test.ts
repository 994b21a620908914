/**
 * Install as a stranger does: pack every package (scripts/pack.mjs), install the tarballs with plain npm into an
 * empty directory (no workspace links, no access to kay's sources), then from there run `kay --help` and a bounded
 * `kay demo`, compile a consumer of the public API with strict tsc (skipLibCheck off), and run the README's
 * Embedding example — extracted from README.md, so the README's example is the code that runs — against the
 * simulator and against real OpenSSH sshd on loopback.
 */
import { execFile } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { type SimFleet, startSimFleet } from '@kay/core/sim'
import { type ClientKey, makeClientKey, requireSshd, type SshdServer, startSshd } from '@kay/core/testing'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { REPO_ROOT } from './support/kay.js'

const execFileP = promisify(execFile)
const TSC = join(REPO_ROOT, 'node_modules/typescript/bin/tsc')
const FIXTURES = join(REPO_ROOT, 'packages/cli/test/e2e/fixtures/install')

let dir: string
let app: string
let home: string
let key: ClientKey
let tarballs: string[]

interface Ran {
  code: number
  stdout: string
  stderr: string
}

/** Run a command to its end (bounded), never throwing on a non-zero exit. */
async function run(file: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }) {
  try {
    const r = await execFileP(file, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      timeout: opts.timeoutMs ?? 60_000,
      maxBuffer: 16 * 1024 * 1024,
    })
    return { code: 0, stdout: r.stdout, stderr: r.stderr } satisfies Ran
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string; message: string }
    return {
      code: typeof err.code === 'number' ? err.code : -1,
      stdout: err.stdout ?? '',
      stderr: `${err.stderr ?? ''}${err.message}`,
    } satisfies Ran
  }
}

/** The README's fenced block marked `ts embed-example`: exactly one. */
function embedExample(readme: string): string {
  const blocks = [...readme.matchAll(/^```ts embed-example\n([\s\S]*?)^```$/gm)].map((m) => m[1]!)
  if (blocks.length !== 1)
    throw new Error(`README.md: expected one \`\`\`ts embed-example block, found ${blocks.length}`)
  return blocks[0]!
}

beforeAll(async () => {
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-install-'))
  app = join(dir, 'app')
  home = join(dir, 'home')
  await mkdir(app)
  await mkdir(home)
  key = await makeClientKey(join(home, '.ssh'))
  const packed = await run(process.execPath, [join(REPO_ROOT, 'scripts/pack.mjs'), '--out', join(dir, 'tarballs')], {
    cwd: REPO_ROOT,
    timeoutMs: 180_000,
  })
  expect(packed.code, packed.stderr).toBe(0)
  tarballs = packed.stdout.trim().split('\n')
  expect(tarballs.map((t) => t.slice(dir.length))).toEqual([
    '/tarballs/kay-core-0.1.0.tgz',
    '/tarballs/kay-workers-0.1.0.tgz',
    '/tarballs/kay-cli-0.1.0.tgz',
  ])
  await writeFile(join(app, 'package.json'), '{ "name": "app", "private": true, "type": "module" }\n')
  // Plain npm, an empty project: the tarballs and what a TypeScript consumer has anyway.
  const installed = await run(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', ...tarballs, '@types/node@20'],
    { cwd: app, timeoutMs: 180_000 },
  )
  expect(installed.code, installed.stderr).toBe(0)
  await copyFile(join(FIXTURES, 'tsconfig.json'), join(app, 'tsconfig.json'))
}, 400_000)

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('the packed packages, installed with npm into an empty project', () => {
  test('kay --help and a bounded kay demo run through npx', async () => {
    const help = await run('npx', ['kay', '--help'], { cwd: app })
    expect(help.code, help.stderr).toBe(0)
    expect(help.stdout).toMatch(/^Usage: kay <command>/)
    const demo = await run('npx', ['kay', 'demo', '--hosts', '5', '--ticks', '2', '--json'], {
      cwd: app,
      env: { HOME: home },
      timeoutMs: 90_000,
    })
    expect(demo.code, demo.stderr).toBe(0)
    const rows = demo.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { host?: string; ok?: boolean })
      .filter((r) => r.host !== undefined)
    expect(new Set(rows.map((r) => r.host)).size).toBe(5)
    expect(rows.length).toBe(10)
    expect(rows.every((r) => r.ok === true)).toBe(true)
  })

  test('the published manifests: exact versions, dist entries only, no source condition, no scripts', async () => {
    for (const pkg of ['core', 'workers', 'cli']) {
      const text = await readFile(join(app, 'node_modules/@kay', pkg, 'package.json'), 'utf8')
      const m = JSON.parse(text) as { exports: Record<string, Record<string, string>>; engines: unknown }
      expect(text).not.toMatch(/workspace:|kay-source|"scripts"|\.\/src\//)
      expect(m.engines).toEqual({ node: '>=20.19' })
      for (const conds of Object.values(m.exports)) expect(Object.keys(conds)).toEqual(['types', 'default'])
    }
  })

  test('@kay/core runs the patched ssh2 it bundles, not a stock one from the registry', async () => {
    const probe = [
      "import { createRequire } from 'node:module'",
      "const req = createRequire(import.meta.resolve('@kay/core'))",
      "const c = req('ssh2/lib/protocol/constants.js')",
      "console.log(JSON.stringify({ at: req.resolve('ssh2'), certs: c.CERT_SERVER_HOST_KEY?.length ?? 0, patched: req('ssh2/package.json').kayPatched }))",
    ].join('\n')
    const r = await run(process.execPath, ['--input-type=module', '-e', probe], { cwd: app })
    expect(r.code, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout) as { at: string; certs: number; patched: string }
    expect(out.at).toBe(join(app, 'node_modules/@kay/core/node_modules/ssh2/lib/index.js'))
    expect(out.certs).toBeGreaterThan(0)
    expect(out.patched).toMatch(/^ssh2@1\.17\.0_patch_hash=[0-9a-f]+$/)
  })

  test('a strict consumer of the public API compiles without kay sources; the test harness is not published', async () => {
    await copyFile(join(FIXTURES, 'consumer.ts'), join(app, 'consumer.ts'))
    const ok = await run(process.execPath, [TSC, '-p', '.', '--noEmit', '--listFiles'], { cwd: app })
    expect(ok.code, ok.stdout + ok.stderr).toBe(0)
    const files = ok.stdout.trim().split('\n')
    expect(files.some((f) => f.includes('/node_modules/@kay/workers/dist/supervisor.d.ts'))).toBe(true)
    expect(files.filter((f) => f.startsWith(join(REPO_ROOT, 'packages')))).toEqual([])
    // No published declaration reaches into ssh2's undeclared internals.
    const deep = await run('grep', ['-rl', '--include=*.d.ts', 'ssh2/lib', join(app, 'node_modules/@kay')], {
      cwd: app,
    })
    expect(deep).toMatchObject({ code: 1, stdout: '' })

    // The real-sshd harness stays in the repository: importing it from the packages does not resolve.
    await writeFile(join(app, 'consumer.ts'), "import { startSshd } from '@kay/core/testing'\nconsole.log(startSshd)\n")
    const harness = await run(process.execPath, [TSC, '-p', '.', '--noEmit'], { cwd: app })
    expect(harness.code).not.toBe(0)
    expect(harness.stdout).toContain("TS2307: Cannot find module '@kay/core/testing'")
    await rm(join(app, 'consumer.ts'))
  })
})

describe("the README's Embedding example, compiled strictly from README.md and run from the installed packages", () => {
  let fleet: SimFleet | undefined
  let sshd: SshdServer | undefined

  beforeAll(async () => {
    const example = embedExample(await readFile(join(REPO_ROOT, 'README.md'), 'utf8'))
    await writeFile(join(app, 'embed.ts'), example)
    const built = await run(process.execPath, [TSC, '-p', '.', '--noEmit', 'false', '--outDir', 'out'], { cwd: app })
    expect(built.code, built.stdout + built.stderr).toBe(0)
  }, 120_000)

  afterAll(async () => {
    await fleet?.close()
    await sshd?.stop()
  })

  const embed = (hosts: string[]) =>
    run(process.execPath, ['out/embed.js', ...hosts], { cwd: app, env: { HOME: home }, timeoutMs: 90_000 })

  /** Every host up: a metrics line from the tick, an exec line with exit 0, and the first host's run line. */
  function expectEveryHost(r: Ran, hosts: string[], names: string[]): string[] {
    const lines = r.stdout.trim().split('\n')
    for (const [i, h] of hosts.entries()) {
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${h} load [\\d.]+ mem \\d+ bytes used$`)))
      expect(lines).toContain(`${h} exec exit 0: ${names[i]}`)
    }
    return lines
  }

  test('against the simulator, with a host that is down first in the list', async () => {
    fleet = await startSimFleet({ hosts: 3, authorizedKeys: [key.publicKey] })
    const dead = `kay@127.0.0.1:${await closedPort()}`
    const up = fleet.hosts.map((h) => `kay@${h.host}:${h.port}`)
    const r = await embed([dead, ...up])
    // The example exits 1 when a host is down, after reporting every host.
    expect(r.code, r.stderr).toBe(1)
    const lines = expectEveryHost(
      r,
      up,
      fleet.hosts.map((h) => h.name),
    )
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(`^${dead} KAY_NOT_READY: ${dead}: not ready \\(backoff\\); last error KAY_CONNECT_FAILED: `),
      ),
    )
    expect(lines).toContain(`${dead} exec KAY_NOT_READY`)
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(`^${dead} run refused, last error KAY_CONNECT_FAILED: ${dead}: connect failed: `),
      ),
    )
    expect(lines).toHaveLength(2 * 4 + 1)
    expect(r.stderr).toContain('3/4 collecting, 1 down')
  })

  test('against real sshd on loopback', async () => {
    sshd = await startSshd({ authorizedKeys: [key.publicKey] })
    const hosts = [`${sshd.user}@${sshd.host}:${sshd.port}`]
    const r = await embed(hosts)
    expect(r.code, r.stderr).toBe(0)
    const lines = expectEveryHost(r, hosts, [hostname()])
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${hosts[0]} run: Linux \\S+$`)))
    expect(lines).toHaveLength(3)
    expect(r.stderr).toContain('1/1 collecting, 0 down')
  })
})

/** A loopback port nothing listens on (bound, then closed): a dial there is refused at once. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

test('the fixtures hold a strict tsconfig (what "a strict consumer" means here)', async () => {
  const cfg = JSON.parse(await readFile(join(FIXTURES, 'tsconfig.json'), 'utf8')) as {
    compilerOptions: Record<string, unknown>
  }
  expect(cfg.compilerOptions).toMatchObject({ strict: true, skipLibCheck: false, noEmit: true })
})
