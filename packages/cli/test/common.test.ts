import type { HostTarget } from '@kay/core'
import { describe, expect, it } from 'vitest'
import { type ConnectionOptions, DEFAULTS } from '../src/args.js'
import { connectTimeoutOf, dialDeadlineMs, settleDeadlineMs, supervisorOptions } from '../src/commands/common.js'

const conn = (connectTimeoutMs?: number): ConnectionOptions => ({
  identityFiles: [],
  fanout: 16,
  strictHostKeyChecking: 'accept-new',
  collectMode: 'stream',
  ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }),
})
const host = (id: string, connectTimeoutMs?: number, jump?: HostTarget[]): HostTarget => ({
  id,
  hostname: '127.0.0.1',
  port: 22,
  user: 'u',
  ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }),
  ...(jump ? { jump } : {}),
})

describe('the dial deadline, command line over ssh_config', () => {
  it('passes --connect-timeout to the supervisor only when it was given', () => {
    expect(supervisorOptions(conn(), []).handshakeTimeoutMs).toBeUndefined()
    expect(supervisorOptions(conn(1500), []).handshakeTimeoutMs).toBe(1500)
  })

  it('waits for the slowest host: its ConnectTimeout, else the default; a jump chain adds its hops', () => {
    const hosts = [host('a', 30_000), host('b'), host('c', 2000, [host('hop', 5000)])]
    expect(dialDeadlineMs(conn(), hosts)).toBe(30_000)
    expect(dialDeadlineMs(conn(), [host('b'), host('c', 2000, [host('hop', 5000)])])).toBe(DEFAULTS.connectTimeoutMs)
    expect(dialDeadlineMs(conn(), [host('c', 2000, [host('hop', 5000)])])).toBe(7000)
  })

  it('lets --connect-timeout win over every ConnectTimeout', () => {
    const hosts = [host('a', 30_000), host('c', 2000, [host('hop', 5000)])]
    expect(dialDeadlineMs(conn(1000), hosts)).toBe(2000) // the jumped host: two dials of 1 s
    expect(connectTimeoutOf(conn(1000))).toBe(1000)
    expect(connectTimeoutOf(conn())).toBe(DEFAULTS.connectTimeoutMs)
    expect(dialDeadlineMs(conn(), [])).toBe(DEFAULTS.connectTimeoutMs)
  })

  it('waits for the first dials a second past their deadline (every command: the dial starts after the wait does)', () => {
    const hosts = [host('a', 30_000), host('c', 2000, [host('hop', 5000)])]
    expect(settleDeadlineMs(conn(1000), hosts)).toBe(3000)
    expect(settleDeadlineMs(conn(), hosts)).toBe(31_000)
  })
})
