import { describe, expect, it } from 'vitest'
import { DEFAULTS, type ParsedCommand, parseArgs, splitList } from '../src/args.js'

const parse = (line: string): ParsedCommand => parseArgs(line === '' ? [] : line.split(' '))

function expectConfigError(line: string, message: string | RegExp): void {
  let err: unknown
  try {
    parse(line)
  } catch (e) {
    err = e
  }
  expect(err, `expected '${line}' to fail`).toMatchObject({ code: 'KAY_CONFIG' })
  expect((err as Error).message).toMatch(message)
  expect((err as Error).message).not.toContain('\n')
}

function as<C extends ParsedCommand['command']>(p: ParsedCommand, command: C): Extract<ParsedCommand, { command: C }> {
  expect(p.command).toBe(command)
  return p as Extract<ParsedCommand, { command: C }>
}

describe('parseArgs: defaults', () => {
  it('fills every connection default for fleet', () => {
    const p = as(parse('fleet web1'), 'fleet')
    expect(p).toEqual({
      command: 'fleet',
      hosts: { include: ['web1'], exclude: [], hostfiles: [], allConfigHosts: false },
      connection: {
        identityFiles: [],
        fanout: 16,
        strictHostKeyChecking: 'accept-new',
        collectMode: 'stream',
      },
      intervalMs: 5000,
      json: false,
      warnings: [],
    })
  })

  it('leaves --threads to the supervisor when not given, and passes it on when given', () => {
    expect(as(parse('fleet a'), 'fleet').connection).not.toHaveProperty('threads')
    expect(as(parse('demo'), 'demo')).not.toHaveProperty('threads')
    expect(as(parse('fleet a --threads 5'), 'fleet').connection.threads).toBe(5)
    expect(as(parse('demo --threads 3'), 'demo').threads).toBe(3)
  })

  it('fills exec, collect, serve and demo defaults', () => {
    const e = as(parse('exec web1 -- uptime'), 'exec')
    expect([e.timeoutMs, e.maxOutputBytes, e.output]).toEqual([30_000, 1024 * 1024, DEFAULTS.execOutput])
    expect(as(parse('collect web1'), 'collect').sampleGapMs).toBe(1000)
    const s = as(parse('serve web1'), 'serve')
    expect([s.listen, s.allowNonLoopback, s.intervalMs]).toEqual([{ host: '127.0.0.1', port: 9717 }, false, 5000])
    const d = as(parse('demo'), 'demo')
    expect([d.hostCount, d.fanout, d.intervalMs, d.json]).toEqual([DEFAULTS.demoHosts, 16, 5000, false])
  })
})

describe('parseArgs: commands', () => {
  it('parses host selection: positionals, repeatable -w/-x, hostfiles, config hosts and shards', () => {
    const p = as(
      parse(
        'fleet web[01-05,07],db1 -w app[1-3] -wcache1 -x web03 -x db1,db2 --hostfile a.txt --hostfile=b.txt --all-config-hosts --shard 2/4',
      ),
      'fleet',
    )
    expect(p.hosts).toEqual({
      include: ['web[01-05,07]', 'db1', 'app[1-3]', 'cache1'],
      exclude: ['web03', 'db1', 'db2'],
      hostfiles: ['a.txt', 'b.txt'],
      allConfigHosts: true,
      shard: { index: 1, count: 4 },
    })
  })

  it('parses connection flags in both --name value and --name=value forms', () => {
    const p = as(
      parse(
        'fleet h --ssh-config cfg --known-hosts=kh -i k1 -i k2 -l ops --fanout 8 --connect-timeout 1.5s --threads 3 --strict-host-keys --collect-mode exec',
      ),
      'fleet',
    )
    expect(p.connection).toEqual({
      sshConfig: 'cfg',
      knownHosts: 'kh',
      identityFiles: ['k1', 'k2'],
      user: 'ops',
      fanout: 8,
      connectTimeoutMs: 1500,
      threads: 3,
      strictHostKeyChecking: 'yes',
      collectMode: 'exec',
    })
  })

  it('parses fleet display flags', () => {
    const p = as(parse('fleet -w h --interval 500ms --json --ticks 3'), 'fleet')
    expect([p.intervalMs, p.json, p.ticks]).toEqual([500, true, 3])
  })

  it('parses top with exactly one host', () => {
    const p = as(parse('top web1 --interval 2s -l root'), 'top')
    expect([p.host, p.intervalMs, p.connection.user]).toEqual(['web1', 2000, 'root'])
    expectConfigError('top', /exactly one HOST/)
    expectConfigError('top a b', /exactly one HOST/)
  })

  it('parses collect flags', () => {
    const p = as(parse('collect h --json --sample-gap 250ms'), 'collect')
    expect([p.json, p.sampleGapMs]).toEqual([true, 250])
  })

  it('takes everything after -- as the remote command, flags included', () => {
    const p = as(parse('exec -w web[1-3] --collate --timeout 5s --max-output 64KiB -- ls -l --color /tmp'), 'exec')
    expect(p.commandArgv).toEqual(['ls', '-l', '--color', '/tmp'])
    expect(p.remoteCommand).toBe('ls -l --color /tmp')
    expect([p.output, p.timeoutMs, p.maxOutputBytes]).toEqual(['collate', 5000, 65_536])
    expect(as(parse('exec h --prefix -- true'), 'exec').output).toBe('prefix')
    expect(as(parse('exec h --json -- true'), 'exec').output).toBe('json')
    expect(as(parseArgs(['exec', 'h', '--', '--help']), 'exec').commandArgv).toEqual(['--help'])
  })

  it('parses demo --hosts N', () => {
    const p = as(parse('demo --hosts 1000 --ticks 2 --json --fanout 4'), 'demo')
    expect([p.hostCount, p.ticks, p.json, p.fanout]).toEqual([1000, 2, true, 4])
  })

  it('parses the trust actions', () => {
    const l = as(parse('trust list'), 'trust')
    expect([l.action, l.hosts]).toEqual(['list', []])
    const r = as(parse('trust repin web1 web[2-3] --known-hosts kh'), 'trust')
    expect([r.action, r.hosts, r.connection.knownHosts]).toEqual(['repin', ['web1', 'web[2-3]'], 'kh'])
    expect(as(parse('trust forget a,b'), 'trust').hosts).toEqual(['a', 'b'])
    expectConfigError('trust', /needs an action/)
    expectConfigError('trust pin a', /unknown trust action 'pin'/)
    expectConfigError('trust forget', /needs at least one HOST/)
  })

  it('parses serve --listen, including IPv6 and a non-loopback address with --allow-non-loopback', () => {
    expect(as(parse('serve h --listen 127.0.0.2:9100'), 'serve').listen).toEqual({ host: '127.0.0.2', port: 9100 })
    expect(as(parse('serve h --listen [::1]:9100'), 'serve').listen).toEqual({ host: '::1', port: 9100 })
    expect(as(parse('serve h --listen :0'), 'serve').listen).toEqual({ host: '127.0.0.1', port: 0 })
    const open = as(parse('serve h --listen 0.0.0.0:9717 --allow-non-loopback'), 'serve')
    expect(open.allowNonLoopback).toBe(true)
    expect(open.warnings.join()).toMatch(/non-loopback/)
    expectConfigError('serve h --listen 0.0.0.0:9717', /not a loopback address.*--allow-non-loopback/)
    expectConfigError('serve h --listen 10.0.0.1', /--listen: '10.0.0.1' is not ADDR:PORT/)
    expectConfigError('serve h --listen 1.2.3.4:70000', /not ADDR:PORT/)
  })

  it('accepts flags before the command', () => {
    const p = as(parse('--fanout 4 fleet web1'), 'fleet')
    expect(p.connection.fanout).toBe(4)
  })
})

describe('parseArgs: help and version', () => {
  it('returns help for --help anywhere, even with otherwise invalid arguments', () => {
    expect(parse('--help')).toEqual({ command: 'help', exitCode: 0 })
    expect(parse('-h')).toEqual({ command: 'help', exitCode: 0 })
    expect(parse('exec --help')).toEqual({ command: 'help', topic: 'exec', exitCode: 0 })
    expect(parse('fleet --bogus -h')).toEqual({ command: 'help', topic: 'fleet', exitCode: 0 })
  })

  it('returns usage help with exit code 1 when no arguments are given', () => {
    expect(parse('')).toEqual({ command: 'help', exitCode: 1 })
  })

  it('returns the version for --version', () => {
    expect(parse('--version')).toEqual({ command: 'version' })
  })
})

describe('parseArgs: errors', () => {
  it.each([
    ['fleet h --bogus', /^unknown option --bogus$/],
    ['fleet h --fanuot 3', /unknown option --fanuot \(did you mean --fanout\?\)/],
    ['fleet h -z', /unknown option -z/],
    ['nope', /unknown command 'nope'/],
    ['--json', /no command given/],
    ['fleet', /no hosts given/],
    ['fleet -x web1', /no hosts given/],
    ['exec h --ticks 3 -- true', /--ticks is not an option of 'kay exec'/],
    ['fleet h --timeout 3s', /--timeout is not an option of 'kay fleet'/],
    ['fleet h -- true', /'--' is only used by 'kay exec'/],
    ['exec h uptime', /needs the remote command after '--'/],
    ['exec h --', /remote command after '--' is empty/],
    ['exec h --collate --json -- true', /--collate and --json cannot be combined/],
    ['fleet h --fanout', /--fanout needs a value \(N\)/],
    ['fleet h --fanout --json', /--fanout needs a value/],
    ['fleet h --fanout 0', /--fanout: 0 is out of range \(1\.\.1024\)/],
    ['fleet h --fanout 2000', /--fanout: 2000 is out of range/],
    ['fleet h --fanout 1.5', /--fanout: '1.5' is not a whole number/],
    ['fleet h --threads -1', /--threads needs a value/],
    ['fleet h --fanout 4 --fanout 8', /--fanout given more than once/],
    ['fleet h --json=yes', /--json takes no value/],
    ['fleet h --interval 5', /--interval: '5' needs a unit/],
    ['fleet h --interval 0s', /--interval: must be more than 0/],
    ['fleet h --connect-timeout soon', /--connect-timeout: 'soon' is not a duration/],
    ['fleet h --ticks 0', /--ticks: 0 is out of range/],
    ['exec h --max-output lots -- true', /--max-output: 'lots' is not a size/],
    ['exec h --max-output 0 -- true', /--max-output: must be more than 0 bytes/],
    ['fleet h --strict-host-keys --insecure-accept-any-host-key', /cannot be combined: choose one host-key policy/],
    ['fleet h --accept-new --strict-host-keys', /cannot be combined/],
    ['fleet h --collect-mode poll', /--collect-mode: 'poll' is not stream or exec/],
    ['fleet h --shard 0/4', /--shard i must be in 1\.\.4/],
    ['fleet h --shard 5/4', /--shard i must be in 1\.\.4/],
    ['fleet h --shard 1/0', /--shard N must be in 1\.\./],
    ['fleet h --shard half', /--shard must look like i\/N/],
    ['demo web1', /'kay demo' takes no hosts/],
    ['demo --hosts 0', /--hosts: 0 is out of range/],
    ['fleet h --hosts 3', /--hosts is not an option of 'kay fleet'/],
    ['fleet h --ssh-config=', /--ssh-config needs a non-empty value/],
  ])('%s → %s', (line, message) => {
    expectConfigError(line, message)
  })

  it('warns, but accepts, --insecure-accept-any-host-key', () => {
    const p = as(parse('fleet h --insecure-accept-any-host-key'), 'fleet')
    expect(p.connection.strictHostKeyChecking).toBe('no')
    expect(p.warnings).toHaveLength(1)
    // main prefixes `kay: warning: `: the text itself must not say "warning" again.
    expect(p.warnings[0]).toMatch(/^--insecure-accept-any-host-key: host keys are NOT verified/)
  })

  it('maps --accept-new to accept-new explicitly', () => {
    expect(as(parse('fleet h --accept-new'), 'fleet').connection.strictHostKeyChecking).toBe('accept-new')
  })
})

describe('splitList', () => {
  it('splits on commas outside brackets only and drops empty items', () => {
    expect(splitList('web[01-05,07],db1,,rack[1-2]-n[1,3] ')).toEqual(['web[01-05,07]', 'db1', 'rack[1-2]-n[1,3]'])
    expect(splitList('')).toEqual([])
  })
})
