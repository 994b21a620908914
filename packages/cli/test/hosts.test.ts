/**
 * The CLI's host selection through ssh_config: its flags act as ssh's command line (-l and -i win over the config,
 * -i files first), and a config ssh would refuse stops the run with one line naming file and line (exit 1).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ConnectionOptions, HostSelection } from '../src/args.js'
import { resolveHosts } from '../src/hosts.js'
import { killRunning, runKay } from './e2e/support/kay.js'

let dir: string
let config: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-cli-hosts-'))
  config = join(dir, 'ssh_config')
  await writeFile(
    config,
    ['Host web*', '  HostName %h.example.net', '  User configured', '  IdentityFile ~/.ssh/web_key', ''].join('\n'),
  )
})

afterAll(async () => {
  killRunning()
  await rm(dir, { recursive: true, force: true })
})

const selection = (include: string[]): HostSelection => ({
  include,
  exclude: [],
  hostfiles: [],
  allConfigHosts: false,
})

const connection = (extra: Partial<ConnectionOptions>): ConnectionOptions => ({
  sshConfig: config,
  identityFiles: [],
  fanout: 16,
  connectTimeoutMs: 10_000,
  strictHostKeyChecking: 'accept-new',
  collectMode: 'stream',
  ...extra,
})

describe('resolveHosts', () => {
  it('lets -l and -i win over ssh_config, -i files first, and keeps the spec user above -l', async () => {
    const [a, b, c] = await resolveHosts(
      selection(['web01', 'root@web02', 'db01']),
      connection({ user: 'flag', identityFiles: ['/keys/cli'] }),
    )
    expect(a).toMatchObject({ id: 'web01', hostname: 'web01.example.net', user: 'flag' })
    expect(a?.identityFiles?.[0]).toBe('/keys/cli')
    expect(a?.identityFiles?.[1]).toMatch(/\/\.ssh\/web_key$/)
    expect(b).toMatchObject({ user: 'root' })
    // No IdentityFile in the config: the -i file alone (ssh's defaults are replaced by it).
    expect(c).toMatchObject({ hostname: 'db01', user: 'flag', identityFiles: ['/keys/cli'] })
  })

  it('keeps the order of the hosts given, whatever order they resolve in', async () => {
    const names = Array.from({ length: 40 }, (_, i) => `web${String(i).padStart(2, '0')}`)
    const t = await resolveHosts(selection(names), connection({}))
    expect(t.map((x) => x.id)).toEqual(names)
  })
})

describe('kay with an ssh_config that ssh refuses', () => {
  it('exits 1 with one line naming the file and line', async () => {
    const bad = join(dir, 'bad_config')
    await writeFile(bad, 'Host web01\n  User ok\n  Frobnicate yes\n')
    const r = await runKay(['collect', '--ssh-config', bad, 'web01'])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      `kay: web01: KAY_CONFIG: ${bad}:3: Bad configuration option: frobnicate`,
    ])
  })
})
