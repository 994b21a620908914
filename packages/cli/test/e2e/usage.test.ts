/**
 * The CLI's front door as a process: help texts, usage errors and their exit codes.
 */
import { afterAll, describe, expect, test } from 'vitest'
import { COMMAND_NAMES, FLAGS, flagsOf } from '../../src/args.js'
import { killRunning, runKay } from './support/kay.js'

afterAll(() => killRunning())

describe('kay help and usage errors', () => {
  test('kay --help exits 0 and lists every command and the exit codes', async () => {
    const r = await runKay(['--help'])
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
    for (const name of COMMAND_NAMES) expect(r.stdout).toMatch(new RegExp(`^ {2}${name} +\\S`, 'm'))
    for (const flag of ['--help', '--version']) expect(r.stdout).toContain(flag)
    expect(r.stdout).toMatch(/^ {2}130 +interrupted/m)
  })

  test('kay collect --help exits 0 and documents every flag collect accepts', async () => {
    const r = await runKay(['collect', '--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^Usage: kay collect/)
    const keys = [...flagsOf('collect')]
    expect(keys.length).toBeGreaterThan(10)
    for (const key of keys) {
      const spec = FLAGS[key]
      const names = 'short' in spec ? `-${spec.short}, --${spec.long}` : `--${spec.long}`
      expect(r.stdout, `--${spec.long}`).toContain(names)
    }
    expect(r.stdout).toContain('--sample-gap DURATION')
    expect(r.stdout).toContain('--connect-timeout DURATION')
  })

  test('kay collect without hosts exits 1 with a one-line error naming the ways to give hosts', async () => {
    const r = await runKay(['collect'])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    const lines = r.stderr.trimEnd().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^kay: KAY_CONFIG: no hosts given/)
    expect(lines[0]).toContain('--hostfile')
  })

  test('an unknown command exits 1 with a one-line error', async () => {
    const r = await runKay(['nosuch'])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(/^kay: KAY_CONFIG: unknown command 'nosuch'/),
    ])
  })
})
