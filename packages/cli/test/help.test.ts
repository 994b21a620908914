import { defaultPinFile } from '@kay/core'
import { describe, expect, it } from 'vitest'
import { COMMAND_NAMES, type CommandName, FLAGS, type FlagSpec, flagsOf, parseArgs } from '../src/args.js'
import { EXIT, exitCodeFor, HELP_WIDTH, helpText } from '../src/help.js'

describe('exitCodeFor', () => {
  it('is 0 when every host succeeded, and for no hosts', () => {
    expect(exitCodeFor([{ ok: true }, { ok: true, exitCode: 0 }])).toBe(0)
    expect(exitCodeFor([])).toBe(0)
  })

  it('maps each kind of failure to its code', () => {
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_CONNECT_FAILED' }])).toBe(EXIT.unreachable)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_TIMEOUT' }])).toBe(2)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_NOT_READY' }])).toBe(2)
    expect(exitCodeFor([{ ok: false }])).toBe(2)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_HOST_KEY_MISMATCH' }])).toBe(EXIT.hostKey)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_HOST_KEY_REVOKED' }])).toBe(3)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_AUTH_FAILED' }])).toBe(EXIT.auth)
    expect(exitCodeFor([{ ok: false, exitCode: 1 }])).toBe(EXIT.remoteFailed)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_OUTPUT_LIMIT' }])).toBe(5)
    expect(exitCodeFor([{ ok: false, exitCode: null, errorCode: 'KAY_TIMEOUT' }])).toBe(2)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_COPY_FAILED' }])).toBe(5)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_ABORTED' }])).toBe(EXIT.interrupted)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_KEY_ENCRYPTED' }])).toBe(EXIT.auth)
    // A host a rolling run never started adds nothing: the failures that stopped the run carry the code.
    expect(
      exitCodeFor([
        { ok: false, errorCode: 'KAY_SKIPPED' },
        { ok: false, exitCode: 1 },
      ]),
    ).toBe(5)
    expect(exitCodeFor([{ ok: false, errorCode: 'KAY_SKIPPED' }])).toBe(0)
  })

  it('lets the highest code win whatever the order', () => {
    const outcomes = [
      { ok: true },
      { ok: false, errorCode: 'KAY_CONNECT_FAILED' },
      { ok: false, errorCode: 'KAY_AUTH_FAILED' },
      { ok: false, errorCode: 'KAY_HOST_KEY_MISMATCH' },
    ]
    expect(exitCodeFor(outcomes)).toBe(4)
    expect(exitCodeFor([...outcomes].reverse())).toBe(4)
    expect(exitCodeFor([...outcomes, { ok: false, exitCode: 2 }])).toBe(5)
    expect(
      exitCodeFor([
        { ok: false, errorCode: 'KAY_TIMEOUT' },
        { ok: false, errorCode: 'KAY_HOST_KEY_MISMATCH' },
      ]),
    ).toBe(3)
  })

  it('accepts any iterable, such as a generator', () => {
    function* outcomes() {
      yield { ok: true }
      yield { ok: false, errorCode: 'KAY_HOST_KEY_MISMATCH' }
    }
    expect(exitCodeFor(outcomes())).toBe(3)
  })
})

describe('help', () => {
  it('lists every command and every exit code at the top level', () => {
    const text = helpText()
    for (const name of COMMAND_NAMES) expect(text).toContain(`  ${name} `)
    for (const code of ['0 ', '1 ', '2 ', '3 ', '4 ', '5 ', '130']) expect(text).toMatch(new RegExp(`^  ${code}`, 'm'))
    expect(text).toContain('--version')
  })

  it.each(COMMAND_NAMES)('documents every flag of kay %s with its value and default', (name) => {
    // Descriptions wrap; compare with runs of whitespace folded to one space.
    const text = helpText(name).replace(/\s+/g, ' ')
    expect(text).toContain(`Usage: kay ${name}`)
    for (const key of flagsOf(name)) {
      const spec: FlagSpec = FLAGS[key]
      expect(text).toContain(`--${spec.long}`)
      if (spec.short !== undefined) expect(text).toContain(`-${spec.short}, --${spec.long}`)
      if (spec.metavar !== undefined) expect(text).toContain(`--${spec.long} ${spec.metavar}`)
      if (spec.default !== undefined) expect(text).toContain(`(default: ${spec.default})`)
    }
    expect(text).toContain('Exit codes')
    expect(text).toContain('DURATION')
  })

  it('shows the documented defaults for the connection and exec flags', () => {
    const flat = (name: CommandName): string => helpText(name).replace(/\s+/g, ' ')
    expect(flat('exec')).toMatch(/--timeout DURATION.*\(default: 30s\)/)
    expect(flat('exec')).toMatch(/--max-output BYTES.*\(default: 1MiB\)/)
    expect(flat('fleet')).toMatch(/--fanout N.*\(default: 16\)/)
    expect(flat('fleet')).toMatch(
      /--connect-timeout DURATION.*wins over ssh_config ConnectTimeout.*\(default: ConnectTimeout, else 10s\)/,
    )
    expect(flat('fleet')).toMatch(/--interval DURATION.*\(default: 5s\)/)
    expect(flat('serve')).toMatch(/--listen ADDR:PORT.*\(default: 127\.0\.0\.1:9717\)/)
    expect(flat('collect')).toMatch(/--sample-gap DURATION.*\(default: 1s\)/)
  })

  it.each(COMMAND_NAMES)('accepts every flag the help of kay %s shows (help and parser share one table)', (name) => {
    const shown = [...helpText(name).matchAll(/^ {2}(?:-(\w), | {4})--([a-z-]+)/gm)].map((m) => m[2]!)
    expect(shown.length).toBe(flagsOf(name).size)
    for (const long of shown) {
      const spec = Object.values(FLAGS).find((f: FlagSpec) => f.long === long)!
      const args = [name, `--${long}`, ...(spec.kind === 'bool' ? [] : ['x'])]
      let message = ''
      try {
        parseArgs(args)
      } catch (err) {
        message = (err as Error).message
      }
      // Other errors (a missing host, a bad value 'x') are fine: the parser knew the flag for this command.
      expect(message, args.join(' ')).not.toMatch(/is not an option of|unknown option/)
    }
  })

  it('shows the pin store kay really uses as --known-hosts default', () => {
    expect(FLAGS.knownHosts.default).toBe(defaultPinFile('~'))
  })

  it('keeps help lines within 120 columns', () => {
    for (const name of [undefined, ...COMMAND_NAMES]) {
      for (const line of helpText(name).split('\n')) expect(line.length).toBeLessThanOrEqual(HELP_WIDTH)
    }
  })
})
