/**
 * Host-key trust end to end: the first collect pins every host, a host that comes back with a new key is refused
 * (exit 3, KAY_HOST_KEY_MISMATCH) without the pin file being touched, and `kay trust` explains and changes trust:
 * `list [HOST…]` (aliases and the `[addr]:port` form list prints), `repin` (dials, shows old and new
 * fingerprints, pins only after a confirmation on a real terminal or with --yes, refuses without either) and
 * `forget`.
 */
import { readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import {
  type FleetFixture,
  KAY_NODE_ARGS,
  killRunning,
  ndjson,
  REPO_ROOT,
  runKay,
  startFixture,
  TmuxSession,
} from './support/kay.js'

let fx: FleetFixture
/** Fingerprints before sim0002 got a new host key. */
let oldFingerprints: string[] = []

beforeAll(async () => {
  fx = await startFixture(3)
})

afterAll(async () => {
  killRunning()
  await fx?.close()
})

const collect = () =>
  runKay(['collect', '--json', 'sim[0001-0003]', ...fx.connArgs, '--connect-timeout', '10s', '--sample-gap', '100ms'], {
    timeoutMs: 40_000,
  })

const trust = (...args: string[]) =>
  runKay(['trust', ...args, '--ssh-config', fx.sshConfig, '--known-hosts', fx.knownHosts], { timeoutMs: 20_000 })

const FP = 'SHA256:[A-Za-z0-9+/]{43}'

/** The 1-based line of the pin file naming `host` (the first collect pins hosts in whatever order they answer). */
async function pinLine(host: string): Promise<number> {
  const lines = (await readFile(fx.knownHosts, 'utf8')).split('\n')
  return lines.findIndex((l) => l.startsWith(`${host},`)) + 1
}

// Several CLI runs per test; the bound is for an overloaded machine, a normal run takes a few seconds.
describe('host-key pinning through the CLI', { timeout: 120_000 }, () => {
  test('a changed host key is refused with exit 3 and KAY_HOST_KEY_MISMATCH, and the pin file is not rewritten', async () => {
    const first = await collect()
    expect(first.code).toBe(0)
    const pinsBefore = await readFile(fx.knownHosts)
    expect(pinsBefore.toString().trim().split('\n')).toHaveLength(3)
    for (const h of fx.fleet.hosts)
      expect(pinsBefore.toString()).toContain(`${h.name},[${h.host}]:${h.port} ssh-ed25519 `)

    oldFingerprints = fx.fleet.hosts.map((h) => h.fingerprint)
    const oldFingerprint = oldFingerprints[1]
    const info = await fx.fleet.restart(1, { newHostKey: true })
    expect(info.fingerprint).not.toBe(oldFingerprint)

    // sim0003 is unreachable at the same time: a host-key refusal (3) outranks an unreachable host (2).
    fx.fleet.setFault(2, { refuse: true })
    const second = await collect().finally(() => fx.fleet.setFault(2, { refuse: false }))
    const objs = ndjson(second.stdout)
    expect(objs.find((o) => o.host === 'sim0002')).toMatchObject({
      ok: false,
      error: { code: 'KAY_HOST_KEY_MISMATCH' },
    })
    expect(objs.find((o) => o.host === 'sim0003')).toMatchObject({ ok: false, error: { code: 'KAY_CONNECT_FAILED' } })
    expect(objs.find((o) => o.host === 'sim0001')).toMatchObject({ ok: true, state: 'ready' })
    expect(objs.at(-1)).toMatchObject({ summary: true, hosts: 3, ok: 1, failed: 2 })
    expect(second.code).toBe(3)
    expect(second.stderr).not.toContain('pinned host key of sim0002')
    expect(Buffer.compare(await readFile(fx.knownHosts), pinsBefore)).toBe(0)
  })

  test('trust list shows every pin, and list HOST explains a host by alias or by the [addr]:port list prints', async () => {
    const list = await trust('list')
    expect(list.code).toBe(0)
    const lines = list.stdout.trim().split('\n')
    expect(lines).toHaveLength(3)
    for (const line of lines) {
      expect(line).toMatch(
        new RegExp(`^sim000\\d,\\[127\\.0\\.0\\.1\\]:\\d+  pin  ssh-ed25519  ${FP}  ${fx.knownHosts}:\\d$`),
      )
    }
    // The listing shows the pinned (old) keys, not what sim0002 offers now.
    for (const [i, fp] of oldFingerprints.entries())
      expect(lines.find((l) => l.startsWith(`sim000${i + 1},`))).toContain(fp)
    expect(list.stdout).not.toContain(fx.fleet.hosts[1]!.fingerprint)

    const h = fx.fleet.hosts[0]!
    const byAlias = await trust('list', 'sim0001')
    const at = await pinLine('sim0001')
    expect(byAlias.stdout).toBe(`sim0001  pin  ssh-ed25519  ${h.fingerprint}  ${fx.knownHosts}:${at}\n`)
    const byAddr = await trust('list', `[${h.host}]:${h.port}`)
    expect(byAddr.stdout).toBe(`[${h.host}]:${h.port}  pin  ssh-ed25519  ${h.fingerprint}  ${fx.knownHosts}:${at}\n`)
    // The whole first column of `list` is accepted as it is: one entry, printed once.
    const asPrinted = await trust('list', (lines[0] as string).split('  ')[0] as string)
    expect(asPrinted.stdout.trim().split('\n')).toHaveLength(1)
    // pdsh-style expressions expand as for the other commands.
    const range = await trust('list', 'sim[0001-0002]')
    expect(
      range.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('  ')[0]),
    ).toEqual(['sim0001', 'sim0002'])
    const none = await trust('list', 'sim9999')
    expect(none.stdout).toMatch(/^sim9999 {2}none {2}\(/)
    expect(none.code).toBe(0)
  })

  test('trust repin refuses at once without a terminal and without --yes, and changes nothing', async () => {
    const before = await readFile(fx.knownHosts)
    const r = await trust('repin', 'sim0002')
    expect(r.code).toBe(1)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^kay: KAY_CONFIG: .*--yes/)
    expect(Buffer.compare(await readFile(fx.knownHosts), before)).toBe(0)
  })

  test('trust repin dials the host, shows the old and new fingerprints, and pins only after a yes', async () => {
    const h = fx.fleet.hosts[1]!
    const old = oldFingerprints[1] as string
    const tmux = await TmuxSession.start(fx.dir, REPO_ROOT)
    try {
      const cmd = [
        process.execPath,
        ...KAY_NODE_ARGS,
        'trust',
        'repin',
        'sim0002',
        '--ssh-config',
        fx.sshConfig,
        '--known-hosts',
        fx.knownHosts,
      ].join(' ')
      const before = await readFile(fx.knownHosts)
      await tmux.typeLine(`${cmd}; echo "exit=$?"`)
      const asked = await tmux.waitScreen('the question', (s) => s.includes('[y/N]'))
      expect(asked).toContain(`sim0002: presents ssh-ed25519 ${h.fingerprint}`)
      expect(asked).toContain(`sim0002: known now: ssh-ed25519 ${old} (${fx.knownHosts}:${await pinLine('sim0002')})`)
      // Nothing is written while the question is open.
      expect(Buffer.compare(await readFile(fx.knownHosts), before)).toBe(0)
      await tmux.typeLine('n')
      await tmux.waitScreen('the refusal', (s) => s.includes('exit=1'))
      expect(await tmux.capture()).toContain('kay: sim0002: not repinned')
      expect(Buffer.compare(await readFile(fx.knownHosts), before)).toBe(0)

      // Ctrl-C at the question: nothing written, exit 130.
      await tmux.typeLine('clear')
      await tmux.typeLine(`${cmd}; echo "exit=$?"`)
      await tmux.waitScreen('the question again', (s) => s.includes('[y/N]'))
      await tmux.keys(['C-c'])
      await tmux.waitScreen('the interrupt', (s) => s.includes('exit=130'))
      expect(Buffer.compare(await readFile(fx.knownHosts), before)).toBe(0)

      await tmux.typeLine('clear')
      await tmux.typeLine(`${cmd}; echo "exit=$?"`)
      await tmux.waitScreen('the question a third time', (s) => s.includes('[y/N]'))
      await tmux.typeLine('y')
      const done = await tmux.waitScreen('the pin', (s) => s.includes('exit=0'))
      expect(done).toContain(`sim0002: pinned ssh-ed25519 ${h.fingerprint}`)
    } finally {
      await tmux.kill()
    }
    const pins = await readFile(fx.knownHosts, 'utf8')
    expect(pins.trim().split('\n')).toHaveLength(3)
    expect(pins).toContain(`sim0002,[${h.host}]:${h.port} ssh-ed25519 `)
    expect((await trust('list', 'sim0002')).stdout).toContain(h.fingerprint)
    // Pinned: the next collect trusts sim0002 again; repin --yes on a trusted host changes nothing.
    expect((await collect()).code).toBe(0)
    const again = await trust('repin', 'sim0002', '--yes')
    expect(again.code).toBe(0)
    expect(again.stdout).toMatch(/^sim0002: already trusted \(pin, /)
    expect(await readFile(fx.knownHosts, 'utf8')).toBe(pins)
  })

  test('trust forget takes the [addr]:port form as well as the alias, and the next collect pins again', async () => {
    const h = fx.fleet.hosts[2]!
    const forget = await trust('forget', `[${h.host}]:${h.port}`)
    expect(forget.code).toBe(0)
    expect(forget.stdout).toContain('removed 1 pin(s)')
    const after = await readFile(fx.knownHosts, 'utf8')
    expect(after).not.toContain('sim0003')
    expect(after.trim().split('\n')).toHaveLength(2)
    const byAlias = await trust('forget', 'sim0001')
    expect(byAlias.stdout).toContain('removed 1 pin(s)')

    const again = await collect()
    expect(again.code).toBe(0)
    const relist = await trust('list')
    expect(relist.stdout).toContain(`sim0003,[${h.host}]:${h.port}  pin  ssh-ed25519  ${h.fingerprint}`)
    expect(relist.stdout.trim().split('\n')).toHaveLength(3)
  })
})
