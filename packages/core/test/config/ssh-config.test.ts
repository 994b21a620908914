/**
 * ssh_config semantics that the conformance suite (ssh-config.conformance.test.ts, against real ssh) cannot show on
 * its own: kay's API (overrides, ids, errors), the injected seams (resolver, Match exec runner, local addresses),
 * kay's one extension (`Match localnetwork`), and the lexer's corner cases. No real ssh, no DNS.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addressInCidrList } from '../../src/config/cidr.js'
import { isAddr, numericAddress } from '../../src/config/ssh-canonical.js'
import {
  type ExecOutcome,
  filesSystemDb,
  loadSshConfig,
  parseSshConfig,
  type SshConfigOptions,
} from '../../src/config/ssh-config.js'
import { parseJump } from '../../src/config/ssh-keywords.js'
import {
  argvSplit,
  type Cursor,
  ExpandError,
  expand,
  splitLine,
  strdelim,
  tildeExpand,
} from '../../src/config/ssh-lex.js'
import { securePermissions } from '../../src/config/ssh-system.js'
import { isKayError } from '../../src/errors.js'
import { hostsFileResolver } from './support/hosts-resolver.js'

let dir: string
const HOSTS = `
10.1.0.5 web01.corp.example.com web01.corp.example.com.
10.1.0.6 lb-1.cloud.example app.corp.example.com app.corp.example.com.
`

/** A hermetic options set: a fake account, no DNS (a hosts table), no real Match exec unless a test asks. */
function opts(extra: Partial<SshConfigOptions> = {}): SshConfigOptions {
  return {
    homeDir: '/home/me',
    localUser: 'me',
    uid: 1000,
    env: { HOME: '/home/me', SHELL: '/bin/sh' },
    localHostname: 'box.example.org',
    systemConfig: null,
    resolver: hostsFileResolver(HOSTS),
    system: filesSystemDb({
      passwd: 'me:x:1000:1000::/home/me:/bin/sh\nops:x:1001:1001::/srv/ops:/bin/sh\n',
      group: 'me:x:1000:\n',
      services: 'ssh 22/tcp\nhttp 80/tcp www\n',
    }),
    matchExec: async () => ({ status: 1 }),
    localAddresses: () => ['192.168.7.20', '127.0.0.1'],
    ...extra,
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'kay-sshcfg-unit-'))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function configError(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    expect(isKayError(err, 'KAY_CONFIG'), String(err)).toBe(true)
    return (err as Error).message
  }
  throw new Error('expected a KAY_CONFIG error')
}

describe('resolving hosts', () => {
  it('gives the spec user and port precedence over flags and config, and keeps them in the id', async () => {
    const cfg = parseSshConfig('Host legacy\n  HostName legacy.example.net\n  User cfg\n  Port 2022\n', opts())
    expect(await cfg.resolve('root@legacy:2999', { user: 'flag', port: 2100 })).toMatchObject({
      id: 'root@legacy:2999',
      hostname: 'legacy.example.net',
      originalHost: 'legacy',
      user: 'root',
      port: 2999,
    })
    // Host lines match the name as typed (case-sensitive), the id is lower-cased.
    expect(await cfg.resolve('Legacy')).toMatchObject({ id: 'legacy', hostname: 'legacy', originalHost: 'Legacy' })
    expect(await cfg.resolve('legacy', { user: 'flag', port: 2100 })).toMatchObject({ user: 'flag', port: 2100 })
    expect(await cfg.resolve('legacy')).toMatchObject({ id: 'legacy', user: 'cfg', port: 2022 })
    expect(await cfg.resolve('other')).toMatchObject({ user: 'me', port: 22, hostname: 'other' })
  })

  it('fills the trust fields with ssh defaults when the config says nothing', async () => {
    const t = await parseSshConfig('', opts()).resolve('h')
    expect(t).toEqual({
      id: 'h',
      hostname: 'h',
      originalHost: 'h',
      port: 22,
      user: 'me',
      userKnownHostsFiles: ['/home/me/.ssh/known_hosts', '/home/me/.ssh/known_hosts2'],
      globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
    })
  })

  it('puts -i files first and lets any IdentityFile replace the default keys', async () => {
    const cfg = parseSshConfig('Host a\n  IdentityFile ~/.ssh/a\nHost n\n  IdentityFile NONE\n', opts())
    expect((await cfg.resolve('a', { identityFiles: ['~/k'] })).identityFiles).toEqual([
      '/home/me/k',
      '/home/me/.ssh/a',
    ])
    expect((await cfg.resolve('n')).identityFiles).toEqual([])
    expect((await cfg.resolve('x')).identityFiles).toBeUndefined()
  })

  it('reads -o option lines before the config and refuses Host, Match and Include there', async () => {
    const cfg = parseSshConfig('Host a\n  Port 2000\n  User cfg\n', opts())
    expect(
      await cfg.resolve('a', { options: ['Port=2500', 'User x', 'IgnoreUnknown Foo*', 'FooBar 1'] }),
    ).toMatchObject({
      port: 2500,
      user: 'x',
    })
    expect(await configError(cfg.resolve('a', { options: ['Match all'] }))).toMatch(/not supported as a command-line/)
    expect(await configError(cfg.resolve('a', { options: ['Nope 1'] }))).toMatch(
      /command-line: Bad configuration option: nope/,
    )
  })

  it('lets --connect-timeout replace ConnectTimeout', async () => {
    const cfg = parseSshConfig('ConnectTimeout 30\n', opts())
    expect((await cfg.resolve('a')).connectTimeoutMs).toBe(30_000)
    expect((await cfg.resolve('a', { connectTimeoutMs: 1500 })).connectTimeoutMs).toBe(1500)
  })

  it('resolves ProxyJump hops outermost first, each with its own config, and a hop once per loaded config', async () => {
    const cfg = parseSshConfig(
      [
        'Host bastion',
        '  HostName bastion.example.net',
        '  User jump',
        'Host inner',
        '  HostName 10.0.0.2',
        '  ProxyJump bastion',
        'Host db-*',
        '  ProxyJump ops@inner:2200,bastion',
      ].join('\n'),
      opts(),
    )
    const a = await cfg.resolve('db-1')
    expect(a.jump?.map((h) => [h.id, h.hostname, h.user, h.port])).toEqual([
      ['bastion', 'bastion.example.net', 'jump', 22],
      ['ops@inner:2200', '10.0.0.2', 'ops', 2200],
      ['bastion', 'bastion.example.net', 'jump', 22],
    ])
    const b = await cfg.resolve('db-2')
    expect(b.jump?.[2]).toEqual(a.jump?.[2])
  })

  it('refuses a ProxyJump cycle and a jump through the host itself', async () => {
    const cfg = parseSshConfig('Host a\n  ProxyJump b\nHost b\n  ProxyJump a:2\nHost self\n  ProxyJump self\n', opts())
    expect(await configError(cfg.resolve('a'))).toMatch(/too deep or cyclic/)
    expect(await configError(cfg.resolve('self'))).toMatch(/jumphost loop via self/)
  })

  it('names the file and line of what ssh refuses, and the host for what only that host refuses', async () => {
    const file = join(dir, 'bad.conf')
    await writeFile(file, 'Host a\n  User ok\nHost b\n  Port http2\n')
    const cfg = await loadSshConfig(file, opts())
    expect(await configError(cfg.resolve('a'))).toContain(`${file}:4: Bad port 'http2'`)
    const tok = parseSshConfig('Host a\n  IdentityFile ~/%z\n', opts())
    expect(await configError(tok.resolve('a'))).toMatch(/^a: IdentityFile '~\/%z': unknown key %z/)
    expect(await tok.resolve('b')).toMatchObject({ hostname: 'b' })
  })

  it('treats a missing default file as empty and a missing explicit file as a config error', async () => {
    const cfg = await loadSshConfig(undefined, opts({ homeDir: join(dir, 'nowhere') }))
    expect(await cfg.resolve('x')).toMatchObject({ hostname: 'x', user: 'me' })
    await expect(loadSshConfig(join(dir, 'missing.conf'), opts())).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    expect((await loadSshConfig('none', opts())).aliases()).toEqual([])
  })

  it('lists every concrete Host alias once, Includes too, and refuses a broken file there as well', async () => {
    await mkdir(join(dir, 'inc'), { recursive: true })
    await writeFile(join(dir, 'inc', 'x.conf'), 'Host from-include other\n')
    const file = join(dir, 'aliases.conf')
    await writeFile(file, `Host a b*  !c\nInclude ${dir}/inc/*.conf\nHost a other\n`)
    expect((await loadSshConfig(file, opts())).aliases()).toEqual(['a', 'from-include', 'other'])
    expect(() => parseSshConfig('Host a\n  Frob 1\nPort x\n', opts()).aliases()).toThrow(/<config>:3: Bad port/)
  })
})

describe('Match exec', () => {
  it('runs each distinct command once per resolution, through $SHELL, with its tokens expanded', async () => {
    const runs: Array<{ command: string; shell: string }> = []
    const matchExec = async (command: string, o: { shell: string }): Promise<ExecOutcome> => {
      runs.push({ command, shell: o.shell })
      return { status: command.includes('web01') ? 0 : 1 }
    }
    const cfg = parseSshConfig(
      ['Match exec "probe %h %n %p"', '  User matched', 'Match final exec "probe %h %n %p"', '  Port 2222'].join('\n'),
      opts({ matchExec, env: { SHELL: '/bin/bash' } }),
    )
    const t = await cfg.resolve('web01')
    expect(t).toMatchObject({ user: 'matched', port: 2222 })
    // The first pass, then the final pass (asked for by Match final): the same command runs once.
    expect(runs).toEqual([{ command: 'probe web01 web01 22', shell: '/bin/bash' }])
    await cfg.resolve('web01')
    expect(runs).toHaveLength(2)
  })

  it('refuses the host when the command ends abnormally', async () => {
    const cfg = parseSshConfig(
      'Match exec "x"\n  User y\n',
      opts({ matchExec: async () => ({ abnormal: 'killed by SIGKILL' }) }),
    )
    expect(await configError(cfg.resolve('a'))).toMatch(/<config>:1: match exec 'x' error: killed by SIGKILL/)
  })

  it('runs the real command with the real shell by default', async () => {
    const flag = join(dir, 'vpn-up')
    await writeFile(flag, '')
    const { matchExec: _, ...rest } = opts({ env: { SHELL: '/bin/sh', PATH: '/usr/bin:/bin' } })
    const cfg = parseSshConfig(`Match exec "test -e ${flag} && test %h = web01"\n  User vpn\n`, rest)
    expect((await cfg.resolve('web01')).user).toBe('vpn')
    expect((await cfg.resolve('web02')).user).toBe('me')
  })
})

describe('canonicalisation through the injected resolver', () => {
  it('completes names with CanonicalDomains, follows permitted CNAMEs, and asks only the injected resolver', async () => {
    const resolver = hostsFileResolver(HOSTS)
    const cfg = parseSshConfig(
      [
        'CanonicalizeHostname yes',
        'CanonicalDomains example.org corp.example.com',
        'CanonicalizePermittedCNAMEs *.corp.example.com:*.cloud.example',
        'Host *.corp.example.com',
        '  User corp',
        'Host *.cloud.example',
        '  User cloud',
      ].join('\n'),
      opts({ resolver }),
    )
    expect(await cfg.resolve('web01')).toMatchObject({ hostname: 'web01.corp.example.com', user: 'corp' })
    expect(await cfg.resolve('app')).toMatchObject({ hostname: 'lb-1.cloud.example', user: 'cloud' })
    // Not found under any suffix, then (CNAME rules being set) not found bare either: ssh refuses it.
    expect(await configError(cfg.resolve('nowhere'))).toMatch(/Could not resolve hostname nowhere/)
    expect(resolver.lookups).toEqual([
      'web01.example.org.',
      'web01.corp.example.com.',
      'app.example.org.',
      'app.corp.example.com.',
      'nowhere.example.org.',
      'nowhere.corp.example.com.',
      'nowhere',
    ])
  })

  it('refuses an unresolvable name without CanonicalizeFallbackLocal', async () => {
    const cfg = parseSshConfig(
      'CanonicalizeHostname yes\nCanonicalDomains corp.example.com\nCanonicalizeFallbackLocal no\n',
      opts(),
    )
    expect(await configError(cfg.resolve('nowhere'))).toMatch(/Could not resolve host "nowhere"/)
  })

  it('normalises numeric addresses as getaddrinfo/getnameinfo do', () => {
    expect(numericAddress('127.1', 0)).toBe('127.0.0.1')
    expect(numericAddress('0x7f.0.0.1', 0)).toBe('127.0.0.1')
    expect(numericAddress('017700000001', 0)).toBe('127.0.0.1')
    expect(numericAddress('10.1.2', 0)).toBe('10.1.0.2')
    expect(numericAddress('256.1.1.1', 0)).toBeUndefined()
    expect(numericAddress('0:0:0:0:0:0:0:1', 0)).toBe('::1')
    expect(numericAddress('FE80:0:0:0:1:0:0:1', 0)).toBe('fe80::1:0:0:1')
    expect(numericAddress('::ffff:1.2.3.4', 0)).toBe('::ffff:1.2.3.4')
    expect(numericAddress('1:0:2:0:0:3:0:0', 0)).toBe('1:0:2::3:0:0')
    expect(numericAddress('127.0.0.1', 6)).toBeUndefined()
    expect(numericAddress('::1', 4)).toBeUndefined()
    expect(isAddr('1.2.3.4.5', 0)).toBe(true)
    expect(isAddr('web01', 0)).toBe(false)
  })
})

describe('Match localnetwork (kay extension, OpenSSH 9.4 semantics)', () => {
  it('matches when a local address lies in one of the networks, and never on a malformed list', async () => {
    const cfg = parseSshConfig(
      [
        'Match localnetwork 10.0.0.0/8,192.168.7.0/24',
        '  User office',
        'Match !localnetwork 172.16.0.0/12',
        '  Port 2222',
        'Match localnetwork 192.168.7.1/24',
        '  ConnectTimeout 9',
      ].join('\n'),
      opts(),
    )
    const t = await cfg.resolve('h')
    expect(t).toMatchObject({ user: 'office', port: 2222 })
    expect(t.connectTimeoutMs).toBeUndefined()
  })

  it('follows addr_match_cidr_list', () => {
    expect(addressInCidrList('192.168.7.20', '192.168.7.0/24')).toBe(1)
    expect(addressInCidrList('192.168.8.20', '192.168.7.0/24')).toBe(0)
    expect(addressInCidrList('fd00::5', 'fd00::/8,10.0.0.0/8')).toBe(1)
    expect(addressInCidrList('10.0.0.1', '10.0.0.1')).toBe(1)
    expect(addressInCidrList('10.0.0.1', '10.0.0.0/33')).toBe(-1)
    expect(addressInCidrList('10.0.0.1', '10.0.0.1/8')).toBe(-1)
    expect(addressInCidrList('10.0.0.1', '10.0.0.0/8,,')).toBe(-1)
    expect(addressInCidrList('not-an-address', '10.0.0.0/8')).toBe(0)
  })
})

describe('the lexer', () => {
  it('splits keyword and arguments as readconf.c does', () => {
    expect(splitLine('  User=bob')).toEqual({ kind: 'line', keyword: 'user', rest: 'bob' })
    expect(splitLine('Port = 22')).toEqual({ kind: 'line', keyword: 'port', rest: '22' })
    expect(splitLine('"Host" a')).toEqual({ kind: 'line', keyword: 'host', rest: 'a' })
    expect(splitLine('# comment')).toEqual({ kind: 'blank' })
    expect(splitLine('   ')).toEqual({ kind: 'blank' })
    expect(splitLine('User')).toEqual({ kind: 'no-argument', keyword: 'user' })
    expect(splitLine('\f')).toEqual({ kind: 'no-argument', keyword: '\f' })
    expect(argvSplit(`a "b c" 'd e' f\\ g h#i # rest`)).toEqual(['a', 'b c', 'd e', 'f g', 'h#i'])
    expect(argvSplit('"open')).toBeUndefined()
    const c: Cursor = { s: 'host="a b" x', pos: 0 }
    expect([strdelim(c), strdelim(c), strdelim(c), strdelim(c)]).toEqual(['host', 'a b', 'x', undefined])
  })

  it('expands tokens, variables and tildes as misc.c does', () => {
    /** `${name}` written without a template placeholder look-alike. */
    const v = (name: string) => ['$', '{', name, '}'].join('')
    expect(expand('%h:%p %%', { h: 'x', p: '22' })).toBe('x:22 %')
    expect(expand(`${v('A')}/%h`, { h: 'x' }, { A: '/a' })).toBe('/a/x')
    expect(expand(`${v('A')}%h`, undefined, { A: '%h' })).toBe('%h%h')
    expect(() => expand('%z', { h: 'x' })).toThrow(ExpandError)
    expect(() => expand('x%', { h: 'x' })).toThrow(/lone '%'/)
    expect(() => expand(v('NOPE'), undefined, {})).toThrow(/not set/)
    expect(() => expand(v('OPEN').slice(0, -1), undefined, {})).toThrow(/missing closing/)
    const home = (u: string | undefined) => (u === undefined ? '/home/me' : u === 'ops' ? '/srv/ops/' : undefined)
    expect(tildeExpand('~', home)).toBe('/home/me/')
    expect(tildeExpand('~//a', home)).toBe('/home/me/a')
    expect(tildeExpand('~ops/k', home)).toBe('/srv/ops/k')
    expect(() => tildeExpand('~nobody/k', home)).toThrow(/no such user nobody/)
    expect(tildeExpand('/abs/~', home)).toBe('/abs/~')
  })

  it('parses ProxyJump values as this ssh does', () => {
    const sp = (n: string) => (n === 'ssh' ? 22 : undefined)
    expect(parseJump('a,u@b:2200', sp)).toEqual({
      none: false,
      raw: 'a,u@b:2200',
      host: 'b',
      user: 'u',
      port: 2200,
      extra: 'a',
    })
    expect(parseJump('ssh://u%40x@h.example:ssh', sp)).toEqual({
      none: false,
      raw: 'ssh://u%40x@h.example:ssh',
      host: 'h.example',
      user: 'u@x',
      port: 22,
    })
    expect(parseJump('u@[::1]:2', sp)).toMatchObject({ host: '::1', port: 2 })
    expect(parseJump('NONE', sp)).toEqual({ none: true })
    expect(parseJump('none # c', sp)).toMatchObject({ none: false, host: 'none' })
    expect(parseJump('a b', sp)).toMatchObject({ host: 'a' })
    for (const bad of ['a,,b', '@a', 'a:0', 'ssh://h/p', 'ssh://[::1]', 'a/b', '#x'])
      expect(() => parseJump(bad, sp), bad).toThrow()
  })

  it('never throws anything but a config error on arbitrary config text', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.string({ maxLength: 20 }), async (text, host) => {
        try {
          await parseSshConfig(text, opts({ env: {} })).resolve(host.trim() || 'h')
        } catch (err) {
          expect(isKayError(err, 'KAY_CONFIG'), String(err)).toBe(true)
        }
      }),
      { numRuns: 300 },
    )
  })
})

describe('config file permissions (readconf.c with Debian user-group-modes)', () => {
  const db = filesSystemDb({
    passwd: 'me:x:1000:1000::/h:/bin/sh\nyou:x:1001:1002::/h2:/bin/sh\nthem:x:1003:1002::/h3:/bin/sh\n',
    group: 'me:x:1000:\nshared:x:1002:\nsolo:x:1004:me\nduo:x:1005:me,you\n',
    services: '',
  })
  it('accepts root- or user-owned files without write for others, and group-write only in a one-member group', () => {
    expect(securePermissions({ uid: 1000, gid: 1000, mode: 0o644 }, 1000, db)).toBe(true)
    expect(securePermissions({ uid: 0, gid: 0, mode: 0o644 }, 1000, db)).toBe(true)
    expect(securePermissions({ uid: 1001, gid: 1000, mode: 0o600 }, 1000, db)).toBe(false)
    expect(securePermissions({ uid: 1000, gid: 1000, mode: 0o646 }, 1000, db)).toBe(false)
    expect(securePermissions({ uid: 1000, gid: 1000, mode: 0o664 }, 1000, db)).toBe(true)
    expect(securePermissions({ uid: 1000, gid: 1004, mode: 0o664 }, 1000, db)).toBe(true)
    expect(securePermissions({ uid: 1000, gid: 1005, mode: 0o664 }, 1000, db)).toBe(false)
    expect(securePermissions({ uid: 1000, gid: 1002, mode: 0o664 }, 1000, db)).toBe(false)
    expect(securePermissions({ uid: 1000, gid: 4242, mode: 0o664 }, 1000, db)).toBe(false)
  })
})
