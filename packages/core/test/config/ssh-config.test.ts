import { execFile } from 'node:child_process'
import { access, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { matchPattern } from '../../src/config/patterns.js'
import { loadSshConfig, parseSshConfig, tokenizeLine } from '../../src/config/ssh-config.js'
import { isKayError } from '../../src/errors.js'
import type { HostTarget } from '../../src/types.js'

const run = promisify(execFile)
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'ssh-config')
const SSH = '/usr/bin/ssh'
// ssh expands `~` with the password database, not $HOME: compare with the same home.
const HOME = os.userInfo().homedir
const LOCAL_USER = os.userInfo().username
const SSH_DEFAULT_IDS = ['id_rsa', 'id_ecdsa', 'id_ecdsa_sk', 'id_ed25519', 'id_ed25519_sk', 'id_xmss', 'id_dsa'].map(
  (f) => `~/.ssh/${f}`,
)

let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'kay-sshcfg-'))
  await cp(FIXTURES, dir, { recursive: true })
  // Fixtures refer to each other through @DIR@ so that ssh -G and kay read the very same files.
  const files = (await readdir(dir, { recursive: true })).map((f) => join(dir, f))
  for (const f of files) {
    if (!/\.(conf|inc)$/.test(f)) continue
    await writeFile(f, (await readFile(f, 'utf8')).replaceAll('@DIR@', dir))
  }
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

type SshG = Map<string, string[]>

/** `ssh -G` for a hop spec `[user@]host[:port]`, parsed into keyword → values. */
async function sshG(file: string, spec: string): Promise<SshG> {
  const m = /^(?:([^@]+)@)?([^:]+)(?::(\d+))?$/.exec(spec)
  if (!m) throw new Error(`bad spec ${spec}`)
  const args = ['-G', '-F', file]
  if (m[1]) args.push('-l', m[1])
  if (m[3]) args.push('-p', m[3])
  args.push(m[2] as string)
  const { stdout } = await run(SSH, args, { timeout: 10_000 })
  const out: SshG = new Map()
  for (const line of stdout.split('\n')) {
    const sp = line.indexOf(' ')
    if (sp < 0) continue
    const k = line.slice(0, sp)
    out.set(k, [...(out.get(k) ?? []), line.slice(sp + 1)])
  }
  return out
}

const one = (g: SshG, k: string): string | undefined => g.get(k)?.[0]
const tilde = (p: string): string => (p.startsWith('~/') ? join(HOME, p.slice(2)) : p)

/** Compare the fields kay uses with what `ssh -G` says, hop by hop. */
async function expectLikeSsh(file: string, spec: string, t: HostTarget): Promise<void> {
  const g = await sshG(file, spec)
  const ctx = `${spec} in ${file}`
  expect(t.hostname, ctx).toBe(one(g, 'hostname'))
  expect(t.user, ctx).toBe(one(g, 'user'))
  expect(String(t.port), ctx).toBe(one(g, 'port'))
  const ids = g.get('identityfile') ?? []
  if (t.identityFiles === undefined) expect(ids, ctx).toEqual(SSH_DEFAULT_IDS)
  else expect(t.identityFiles, ctx).toEqual(ids.map(tilde))
  const ct = one(g, 'connecttimeout')
  expect(t.connectTimeoutMs, ctx).toBe(ct === 'none' ? undefined : Number(ct) * 1000)
  const sai = Number(one(g, 'serveraliveinterval'))
  expect(t.keepaliveIntervalMs, ctx).toBe(sai === 0 ? undefined : sai * 1000)
  expect(t.keepaliveCountMax ?? 3, ctx).toBe(Number(one(g, 'serveralivecountmax')))
  expect(t.identitiesOnly ?? false, ctx).toBe(one(g, 'identitiesonly') === 'yes')
  const strict = { ask: 'yes', true: 'yes', false: 'no', 'accept-new': 'accept-new' }[one(g, 'stricthostkeychecking')!]
  expect(t.strictHostKeyChecking ?? 'yes', ctx).toBe(strict)
  const ukh = one(g, 'userknownhostsfile')
  if (t.userKnownHostsFiles === undefined) {
    expect(ukh, ctx).toBe(`${HOME}/.ssh/known_hosts ${HOME}/.ssh/known_hosts2`)
  } else {
    expect(t.userKnownHostsFiles.join(' '), ctx).toBe(ukh)
  }
  // ProxyCommand: ssh -G prints it as kept, verbatim (tokens are expanded per connection).
  expect(t.proxyCommand, ctx).toBe(one(g, 'proxycommand'))
  // ProxyJump: the outermost hop brings its own chain; each hop is resolved like `ssh -l user -p port hop`.
  const pj = one(g, 'proxyjump')
  if (pj === undefined) {
    expect(t.jump, ctx).toBeUndefined()
    return
  }
  const hops = pj.split(',')
  const first = await sshG(file, hops[0] as string)
  const prefix = one(first, 'proxyjump') === undefined ? 0 : (t.jump?.length ?? 0) - hops.length
  expect(t.jump?.length, ctx).toBe(hops.length + prefix)
  for (let i = 0; i < hops.length; i++) {
    const hop = t.jump?.[prefix + i] as HostTarget
    const hg = await sshG(file, hops[i] as string)
    expect(hop.hostname, `${ctx} hop ${hops[i]}`).toBe(one(hg, 'hostname'))
    expect(hop.user, `${ctx} hop ${hops[i]}`).toBe(one(hg, 'user'))
    expect(String(hop.port), `${ctx} hop ${hops[i]}`).toBe(one(hg, 'port'))
    expect(hop.jump).toBeUndefined()
  }
}

const CORPUS: Record<string, string[]> = {
  'fleet.conf': [
    'bastion',
    'inner-bastion',
    'web01',
    'web02',
    'web-canary1',
    'db-01',
    'db-xy',
    'db-001',
    'legacy',
    'scoped',
    'other-in-include',
    'app.corp',
    'build7',
    'build7.corp',
    'alpha',
    'gamma',
    'quoted',
    'lab-one',
    'lab-special',
    'hop-a',
    'behind-hops',
    'unknown.example.org',
    'ops@db-02',
    'WEB01',
    'via-cmd',
    'cmd-after-jump',
  ],
  'match.conf': ['gw', 'skip.example.com', 'other.example.com', 'f1', 'plain'],
  'negation.conf': ['only-negated', 'good1', 'bad1', 'host.untrusted', 'Mixed1', 'mixed1'],
}

describe('resolution matches ssh -G', () => {
  for (const [file, hosts] of Object.entries(CORPUS)) {
    it(`resolves every host of ${file} the way OpenSSH does`, async () => {
      await access(SSH)
      const path = join(dir, file)
      const cfg = await loadSshConfig(path, { homeDir: HOME, localUser: LOCAL_USER })
      for (const spec of hosts) {
        const m = /^(?:([^@]+)@)?(.+)$/.exec(spec)!
        await expectLikeSsh(path, spec, cfg.resolve(m[1] ? `${m[1]}@${m[2]}` : (m[2] as string)))
      }
    })
  }
})

describe('ssh config semantics', () => {
  it('gives the spec user and port precedence over the config and keeps them in the id', async () => {
    const cfg = await loadSshConfig(join(dir, 'fleet.conf'), { homeDir: HOME, localUser: 'me' })
    const t = cfg.resolve('root@Legacy:2999')
    expect(t).toMatchObject({ id: 'root@legacy:2999', user: 'root', port: 2999, hostname: 'legacy' })
    const l = cfg.resolve('legacy')
    expect(l).toMatchObject({ id: 'legacy', hostname: 'legacy.example.net', port: 2022, strictHostKeyChecking: 'no' })
    expect(l.userKnownHostsFiles).toEqual(['/dev/null'])
  })

  it('uses the defaults only when neither spec nor config decides', () => {
    const cfg = parseSshConfig('Host a\n  Port 2000\n', { localUser: 'me' })
    expect(cfg.resolve('a', { user: 'ops', port: 23 })).toMatchObject({ user: 'ops', port: 2000 })
    expect(cfg.resolve('b', { user: 'ops', port: 23 })).toMatchObject({ user: 'ops', port: 23 })
    expect(cfg.resolve('b')).toMatchObject({ user: 'me', port: 22 })
  })

  it('resolves every ProxyJump hop through the config, outermost first', async () => {
    const cfg = await loadSshConfig(join(dir, 'fleet.conf'), { homeDir: HOME, localUser: 'me' })
    const t = cfg.resolve('db-07')
    expect(t.hostname).toBe('db-07.db.internal')
    // inner-bastion (the outermost hop) has its own ProxyJump bastion, which comes first, as with ssh -J.
    expect(t.jump?.map((h) => [h.id, h.hostname, h.user, h.port])).toEqual([
      ['bastion', 'bastion.example.net', 'jump', 2222],
      ['ops@inner-bastion:2200', '10.0.0.2', 'ops', 2200],
      ['bastion', 'bastion.example.net', 'jump', 2222],
    ])
    const b = cfg.resolve('behind-hops')
    expect(b.jump?.map((h) => h.id)).toEqual(['hop-b', 'hop-a', 'hop-c:2022'])
  })

  it('refuses a cyclic ProxyJump chain with a config error', () => {
    const cfg = parseSshConfig('Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n')
    expect(() => cfg.resolve('a')).toThrow(/ProxyJump chain too deep or cyclic/)
  })

  it('keeps ProxyCommand verbatim (rest of the line), the first obtained of ProxyCommand and ProxyJump winning', () => {
    const cfg = parseSshConfig(
      [
        'Host a',
        `  ProxyCommand ssh -W '%h:%p' "bastion one" # the shell sees this comment`,
        '  ProxyJump b',
        'Host j',
        '  ProxyJump b',
        '  ProxyCommand nc %h %p',
        'Host n',
        '  ProxyCommand none',
        'Host c',
        '  ProxyJump none',
      ].join('\n'),
    )
    const a = cfg.resolve('a')
    expect(a.proxyCommand).toBe(`ssh -W '%h:%p' "bastion one" # the shell sees this comment`)
    expect(a.jump).toBeUndefined()
    const j = cfg.resolve('j')
    expect(j.proxyCommand).toBeUndefined()
    expect(j.jump?.map((h) => h.hostname)).toEqual(['b'])
    expect(cfg.resolve('n').proxyCommand).toBeUndefined()
    expect(cfg.resolve('c').jump).toBeUndefined()
    expect(tokenizeLine('ProxyCommand=nc  "%h" %p')).toEqual({ keyword: 'proxycommand', args: ['nc  "%h" %p'] })
  })

  it('refuses a ProxyCommand token kay does not expand, naming the line', () => {
    const cfg = parseSshConfig('Host a\n  ProxyCommand nc %h %p %k\nHost b\n  ProxyCommand nc %h 22%\n')
    expect(() => cfg.resolve('a')).toThrow(/<config>:2: ProxyCommand: unsupported token '%k'/)
    expect(() => cfg.resolve('b')).toThrow(/lone %/)
  })

  it('expands ~, %d, %u, %h, %r, %p, %% and environment variables in IdentityFile and IdentityAgent', () => {
    const cfg = parseSshConfig(
      [
        'Host box',
        '  HostName Box.Example.com',
        '  User admin',
        '  IdentityFile ~/.ssh/id_%h',
        '  IdentityFile %d/keys/%u-%r-%p-100%%',
        `  IdentityFile ${'$'}{KEYDIR}/k`,
        '  IdentityAgent ~/agent.sock',
        'Host envagent',
        '  IdentityAgent SSH_AUTH_SOCK',
        'Host noagent',
        '  IdentityAgent none',
      ].join('\n'),
      { homeDir: '/home/me', localUser: 'me', env: { KEYDIR: '/keys', SSH_AUTH_SOCK: '/tmp/agent.1' } },
    )
    const t = cfg.resolve('box')
    expect(t.hostname).toBe('box.example.com')
    expect(t.identityFiles).toEqual(['/home/me/.ssh/id_box.example.com', '/home/me/keys/me-admin-22-100%', '/keys/k'])
    expect(t.identityAgent).toBe('/home/me/agent.sock')
    expect(cfg.resolve('envagent').identityAgent).toBe('/tmp/agent.1')
    expect(cfg.resolve('noagent').identityAgent).toBe('none')
  })

  it('maps every StrictHostKeyChecking spelling', () => {
    const values = { yes: 'yes', true: 'yes', ask: 'yes', 'accept-new': 'accept-new', no: 'no', off: 'no', false: 'no' }
    for (const [v, want] of Object.entries(values)) {
      expect(parseSshConfig(`StrictHostKeyChecking ${v}\n`).resolve('h').strictHostKeyChecking).toBe(want)
    }
  })

  it('resolves a relative Include against ~/.ssh', async () => {
    const home = join(dir, 'home')
    await mkdir(join(home, '.ssh', 'inc'), { recursive: true })
    await writeFile(join(home, '.ssh', 'inc', 'a.conf'), 'Host rel\n  Port 2345\n')
    await writeFile(join(home, '.ssh', 'config'), 'Include inc/*.conf\nInclude nothing-here\n')
    const cfg = await loadSshConfig(undefined, { homeDir: home })
    expect(cfg.resolve('rel').port).toBe(2345)
    expect(cfg.aliases()).toEqual(['rel'])
  })

  it('treats a missing default file as empty and a missing explicit file as a config error', async () => {
    const cfg = await loadSshConfig(undefined, { homeDir: join(dir, 'nowhere'), localUser: 'me' })
    expect(cfg.resolve('x')).toEqual({ id: 'x', hostname: 'x', port: 22, user: 'me' })
    await expect(loadSshConfig(join(dir, 'missing.conf'))).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })

  it('lists every non-wildcard alias once, including those from Include files', async () => {
    const cfg = await loadSshConfig(join(dir, 'fleet.conf'), { homeDir: HOME })
    const aliases = cfg.aliases()
    expect(aliases).toContain('bastion')
    expect(aliases).toContain('hop-a')
    expect(aliases).toContain('alpha')
    expect(aliases).toContain('other-in-include')
    expect(aliases.some((a) => /[*?!]/.test(a))).toBe(false)
    expect(new Set(aliases).size).toBe(aliases.length)
  })

  it('names file and line for bad values', () => {
    try {
      parseSshConfig('Host a\n  Port http\n').resolve('a')
      expect.unreachable()
    } catch (err) {
      expect(isKayError(err, 'KAY_CONFIG')).toBe(true)
      expect((err as Error).message).toContain('<config>:2')
    }
    expect(() => parseSshConfig('Host a\n  User "unterminated\n')).toThrow(/<config>:2: unterminated quote/)
  })
})

describe('tokenizer and patterns', () => {
  it('splits keyword and arguments like readconf.c', () => {
    expect(tokenizeLine('  User=bob')).toEqual({ keyword: 'user', args: ['bob'] })
    expect(tokenizeLine('Host a "b c" d # trailing')).toEqual({ keyword: 'host', args: ['a', 'b c', 'd'] })
    expect(tokenizeLine('IdentityFile = "/x y"')).toEqual({ keyword: 'identityfile', args: ['/x y'] })
    expect(tokenizeLine('# comment')).toBeUndefined()
    expect(tokenizeLine('   ')).toBeUndefined()
  })

  it('matches ? as exactly one character and * as any run', () => {
    expect(matchPattern('db-01', 'db-??')).toBe(true)
    expect(matchPattern('db-1', 'db-??')).toBe(false)
    expect(matchPattern('a.b.c', '*.c')).toBe(true)
    expect(matchPattern('abc', 'a*b*c*')).toBe(true)
  })

  it('never throws anything but a config error on arbitrary config text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.string({ maxLength: 20 }), (text, host) => {
        try {
          parseSshConfig(text, { localUser: 'me', homeDir: '/h', env: {} }).resolve(host.trim() || 'h')
        } catch (err) {
          expect(isKayError(err, 'KAY_CONFIG')).toBe(true)
        }
      }),
      { numRuns: 500 },
    )
  })
})
