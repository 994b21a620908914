/**
 * `pnpm lint` runs knip (unused exports, files, dependencies) and scripts/check-boundaries.mjs (import boundaries).
 * Both run here, with the repository's own configuration, over a small workspace laid out like this one: each fails
 * on the crossing or unused export planted in it, and passes once it is gone. Both pass on the repository itself.
 */
import { execFile } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const execFileP = promisify(execFile)
const REPO = fileURLToPath(new URL('../../../', import.meta.url))
const KNIP = join(REPO, 'node_modules/knip/bin/knip.js')
const BOUNDARIES = join(REPO, 'scripts/check-boundaries.mjs')

let ws: string

async function put(path: string, text: string): Promise<void> {
  await mkdir(dirname(join(ws, path)), { recursive: true })
  await writeFile(join(ws, path), text)
}

async function run(file: string, args: string[], cwd: string): Promise<{ code: number; out: string }> {
  try {
    const r = await execFileP(process.execPath, [file, ...args], { cwd, timeout: 60_000 })
    return { code: 0, out: r.stdout + r.stderr }
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string }
    return { code: typeof err.code === 'number' ? err.code : -1, out: `${err.stdout ?? ''}${err.stderr ?? ''}` }
  }
}

beforeAll(async () => {
  ws = await mkdtemp(join(tmpdir(), 'kay-lint-'))
  await copyFile(join(REPO, 'knip.json'), join(ws, 'knip.json'))
  await put('package.json', '{ "name": "ws", "private": true, "type": "module" }\n')
  await put('pnpm-workspace.yaml', 'packages:\n  - packages/*\n')
  await symlink(join(REPO, 'node_modules'), join(ws, 'node_modules'))
  for (const pkg of ['core', 'workers', 'cli']) {
    const manifest = JSON.parse(await readFile(join(REPO, 'packages', pkg, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>
      bin?: unknown
    }
    delete manifest.bin
    for (const dep of Object.keys(manifest.dependencies ?? {}))
      if (!dep.startsWith('@kay/')) delete manifest.dependencies![dep]
    await put(`packages/${pkg}/package.json`, JSON.stringify(manifest))
    await put(`packages/${pkg}/tsconfig.json`, '{ "compilerOptions": { "module": "NodeNext", "strict": true } }\n')
  }
  // core: the entries its package.json exports, a configuration module, a transport module.
  await put(
    'packages/core/src/index.ts',
    "export { readConfig } from './config/read.js'\nexport { dial } from './connection/dial.js'\n",
  )
  await put('packages/core/src/internal.ts', "export { INTERNAL } from './connection/dial.js'\n")
  await put('packages/core/src/sim/index.ts', 'export const SIM = 1\n')
  await put('packages/core/src/testing/index.ts', 'export const HARNESS = 1\n')
  await put('packages/core/src/config/read.ts', 'export function readConfig(): string {\n  return "ok"\n}\n')
  await put(
    'packages/core/src/connection/dial.ts',
    'export const INTERNAL = 1\nexport function dial(): number {\n  return INTERNAL\n}\n',
  )
  await put('packages/workers/src/index.ts', "import { dial } from '@kay/core'\nexport const run = dial\n")
  await put(
    'packages/cli/src/index.ts',
    "import { run } from '@kay/workers'\nimport { INTERNAL } from '@kay/core/internal'\nexport const main = () => run() + INTERNAL\n",
  )
})

afterAll(async () => {
  await rm(ws, { recursive: true, force: true })
})

describe('the import boundaries', () => {
  it('pass on the repository', async () => {
    expect(await run(BOUNDARIES, [], REPO)).toEqual({ code: 0, out: '' })
  })

  it('pass on the clean workspace, and fail on each crossing', async () => {
    expect(await run(BOUNDARIES, ['--root', ws], ws)).toEqual({ code: 0, out: '' })
    const crossings: Array<[string, string, RegExp]> = [
      [
        'packages/core/src/config/bad.ts',
        "import { dial } from '../connection/dial.js'\n",
        /core\/config must not import core\/connection/,
      ],
      [
        'packages/core/src/trust/bad.ts',
        "export { x } from '../collection/x.js'\n",
        /core\/trust must not import core\/collection/,
      ],
      ['packages/core/src/bad.ts', "import { run } from '@kay/workers'\n", /core must not import workers/],
      ['packages/workers/src/bad.ts', "import { main } from '@kay/cli'\n", /workers must not import cli/],
      [
        'packages/cli/src/bad.ts',
        "import { dial } from '../../core/src/connection/dial.js'\n",
        /reaches into another package by path/,
      ],
      [
        'packages/cli/src/bad.ts',
        "import { dial } from '@kay/core/src/connection/dial.js'\n",
        /is not an entry of @kay\/core/,
      ],
      ['packages/cli/src/bad.ts', "const h = await import('@kay/core/testing')\n", /must not import the test harness/],
      [
        'packages/core/src/sim/bad.ts',
        "import { HARNESS } from '../testing/index.js'\n",
        /must not import the test harness/,
      ],
    ]
    for (const [file, text, rule] of crossings) {
      await put(file, text)
      const r = await run(BOUNDARIES, ['--root', ws], ws)
      await rm(join(ws, file))
      expect(r.code, file).toBe(1)
      expect(r.out).toMatch(new RegExp(`^${file}:1: `, 'm'))
      expect(r.out).toMatch(rule)
    }
    // core's own harness may use itself.
    await put('packages/core/src/testing/more.ts', "export { HARNESS as H } from './index.js'\n")
    expect((await run(BOUNDARIES, ['--root', ws], ws)).code).toBe(0)
    await rm(join(ws, 'packages/core/src/testing/more.ts'))
  })
})

describe('the unused-export check (knip, with knip.json)', () => {
  it('passes on the repository', async () => {
    expect(await run(KNIP, ['--no-progress', '--no-config-hints'], REPO)).toEqual({ code: 0, out: '' })
  })

  it('passes on the clean workspace and fails on an export nothing imports', async () => {
    const clean = await run(KNIP, ['--no-progress', '--no-config-hints'], ws)
    expect(clean, clean.out).toMatchObject({ code: 0 })
    await put(
      'packages/core/src/config/read.ts',
      'export function readConfig(): string {\n  return helper()\n}\nexport function helper(): string {\n  return "ok"\n}\n',
    )
    const r = await run(KNIP, ['--no-progress', '--no-config-hints'], ws)
    expect(r.code).toBe(1)
    expect(r.out).toMatch(/Unused exports \(1\)\s+helper\s+function\s+packages\/core\/src\/config\/read\.ts/)
  })
})
