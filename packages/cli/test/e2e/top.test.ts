import { afterAll, describe, expect, it } from 'vitest'
import { type FleetFixture, runKay, startFixture } from './support/kay.js'

let fx: FleetFixture | undefined
afterAll(() => fx?.close())

describe('kay top HOST', () => {
  it('prints one host in detail over a single connection when stdout is not a terminal', async () => {
    fx = await startFixture(3)
    const r = await runKay(['top', 'sim0002', ...fx.connArgs, '--interval', '500ms'], { timeoutMs: 30_000 })
    expect(r.stderr).not.toMatch(/KAY_/)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('sim0002')
    expect(r.stdout).toContain('PROCESSES')
    expect(r.stdout).toMatch(/cpu0\s/)
    const hosts = fx.fleet.stats().hosts
    expect(hosts[1]!.handshakesStarted).toBe(1)
    expect(hosts[0]!.handshakesStarted + hosts[2]!.handshakesStarted).toBe(0)
  }, 60_000)

  it('refuses a selection of more than one host', async () => {
    fx ??= await startFixture(3)
    const r = await runKay(['top', 'sim[0001-0002]', ...fx.connArgs], { timeoutMs: 30_000 })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/KAY_CONFIG: kay top takes exactly one host/)
  }, 60_000)
})
