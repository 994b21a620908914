import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateClientKey, type RemoteSimFleet, spawnSimFleet } from '@kay/core/sim'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const HOSTS = 400
const FD_LIMIT = 256
const CHILD_BOUND_MS = 45_000
const script = fileURLToPath(new URL('./support/emfile-run.ts', import.meta.url))

let dir: string
let fleet: RemoteSimFleet
let key: ReturnType<typeof generateClientKey>

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-emfile-'))
  key = generateClientKey()
  // The fleet lives in its own process with the normal fd limit: only the collector runs short of descriptors.
  fleet = await spawnSimFleet({ hosts: HOSTS, authorizedKeys: [key.publicKey] })
})

afterAll(async () => {
  await fleet?.close()
  await rm(dir, { recursive: true, force: true })
})

interface Outcome {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
}

/** Runs the child under `ulimit -n`, killing it (by its pid) past the bound. */
function runLimited(inputPath: string): Promise<Outcome> {
  const t0 = Date.now()
  const child = spawn(
    'bash',
    [
      '-c',
      `ulimit -n ${FD_LIMIT} && exec "$0" --conditions=kay-source --import tsx "$1" "$2"`,
      process.execPath,
      script,
      inputPath,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('../../', import.meta.url)) },
  )
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (b: Buffer) => {
    stdout += b
  })
  child.stderr.on('data', (b: Buffer) => {
    if (stderr.length < 64 * 1024) stderr += b
  })
  const killer = setTimeout(() => child.kill('SIGKILL'), CHILD_BOUND_MS)
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(killer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 })
    })
  })
}

describe('out of file descriptors', () => {
  it(`a collector limited to ${FD_LIMIT} descriptors facing ${HOSTS} hosts reports every host and exits on its own`, async () => {
    const inputPath = join(dir, 'input.json')
    await writeFile(
      inputPath,
      JSON.stringify({
        hosts: fleet.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: 'kay' })),
        privateKey: key.privateKey,
        knownHostsPath: join(dir, 'known_hosts'),
        settleMs: 25_000,
      }),
    )
    const out = await runLimited(inputPath)
    const context = `exit ${out.code} signal ${out.signal}\nstdout: ${out.stdout}\nstderr: ${out.stderr.slice(-4000)}`
    expect(out.signal, context).toBeNull()
    expect(out.code, context).toBe(0)
    expect(out.ms).toBeLessThan(CHILD_BOUND_MS)
    const summary = JSON.parse(out.stdout.trim().split('\n').at(-1)!) as {
      hosts: number
      reported: number
      withMetrics: number
      ready: number
      codes: Record<string, number>
      lastErrors: Record<string, number>
      untyped: number
      sawEmfile: boolean
    }
    expect(summary.reported).toBe(HOSTS)
    expect(summary.untyped).toBe(0)
    // Not every host fits under the limit: the ones that do are collected, the rest carry typed errors.
    expect(summary.withMetrics).toBeGreaterThan(0)
    expect(summary.withMetrics).toBeLessThan(HOSTS)
    expect(summary.sawEmfile, context).toBe(true)
    expect(summary.lastErrors['KAY_CONNECT_FAILED EMFILE'] ?? 0, context).toBeGreaterThan(0)
    expect(summary.withMetrics + Object.values(summary.codes).reduce((a, b) => a + b, 0)).toBe(HOSTS)
    // Every host left out says why: its last dial error names EMFILE (the connect itself, or the TOFU pin write,
    // which known-hosts.ts currently reports as KAY_CONFIG).
    const emfile = Object.entries(summary.lastErrors).filter(([k]) => k.endsWith(' EMFILE'))
    expect(
      emfile.reduce((a, [, n]) => a + n, 0),
      context,
    ).toBe(HOSTS - summary.withMetrics)
  }, 90_000)
})
