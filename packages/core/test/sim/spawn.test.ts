import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Client as SshClient } from 'ssh2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateClientKey, type RemoteSimFleet, type SimHostInfo, spawnSimFleet } from '../../src/sim/index.js'
import { until } from '../../src/testing/index.js'

const key = generateClientKey()

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function connect(h: SimHostInfo): Promise<SshClient> {
  const c = new SshClient()
  return new Promise((resolve, reject) => {
    c.on('error', reject)
    c.on('ready', () => resolve(c))
    c.connect({ host: h.host, port: h.port, username: 'kay', privateKey: key.privateKey, readyTimeout: 5000 })
  })
}

function run(c: SshClient, cmd: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) =>
    c.exec(cmd, (err, ch) => {
      if (err) return reject(err)
      let out = ''
      let code: number | null = null
      ch.on('data', (d: Buffer) => {
        out += d
      })
      ch.on('exit', (c2: number | null) => {
        code = c2
      })
      ch.on('close', () => resolve({ out, code }))
    }),
  )
}

describe('spawnSimFleet', () => {
  let fleet: RemoteSimFleet

  beforeAll(async () => {
    fleet = await spawnSimFleet({ hosts: 3, authorizedKeys: [key.publicKey] })
  })

  afterAll(async () => {
    await fleet?.close()
  })

  it('runs the fleet in a child process and controls it over IPC', async () => {
    expect(fleet.pid).not.toBe(process.pid)
    expect(alive(fleet.pid)).toBe(true)
    expect(fleet.hosts.map((h) => h.name)).toEqual(['sim0001', 'sim0002', 'sim0003'])

    const c = await connect(fleet.hosts[0]!)
    expect((await run(c, 'hostname')).out).toBe('sim0001\n')
    expect((await run(c, ': kay-collect v1;')).out).toMatch(/^@@kay loadavg\n/)
    const s = await fleet.stats()
    expect(s.hosts[0]).toMatchObject({ handshakesCompleted: 1, commands: 2, currentConnections: 1 })

    await fleet.setFault(1, { refuse: true })
    await expect(connect(fleet.hosts[1]!)).rejects.toThrow()
    expect((await fleet.stats()).hosts[1]!.refused).toBe(1)
    await fleet.setFault('sim0002', { refuse: false })

    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
    await fleet.drop(0)
    await closed

    const before = fleet.hosts[2]!
    const after = await fleet.restart(2, { newHostKey: true })
    expect(after.port).toBe(before.port)
    expect(after.fingerprint).not.toBe(before.fingerprint)
    expect(fleet.hosts[2]!.fingerprint).toBe(after.fingerprint)

    await fleet.resetStats()
    expect((await fleet.stats()).totals.commands).toBe(0)
  })

  it('carries errors back as KayErrors with their code', async () => {
    await expect(fleet.setFault(0, { maxSessions: -5 })).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    await expect(fleet.drop(42)).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })

  it('kills the child on close, and a closed fleet refuses calls', async () => {
    const other = await spawnSimFleet({ hosts: 1, authorizedKeys: [key.publicKey] })
    const pid = other.pid
    await other.close()
    await other.close()
    expect(alive(pid)).toBe(false)
    await expect(other.stats()).rejects.toMatchObject({ code: 'KAY_CLOSED' })
  })

  it('reports a start failure in the child as an error', async () => {
    await expect(spawnSimFleet({ hosts: 0, authorizedKeys: [key.publicKey] })).rejects.toMatchObject({
      code: 'KAY_CONFIG',
    })
  })
})

describe('the simulator child entry', () => {
  it('exits when its parent goes away (IPC disconnect)', async () => {
    const main = fileURLToPath(new URL('../../src/sim/main.ts', import.meta.url))
    const child = fork(main, [], {
      execArgv: ['--conditions=kay-source', '--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    const ready = new Promise<void>((resolve) => child.on('message', () => resolve()))
    child.send({ kind: 'kay-sim:start', opts: { hosts: 2, authorizedKeys: [key.publicKey] } })
    await ready
    expect(alive(child.pid!)).toBe(true)
    // What the child sees when the parent dies: its IPC channel closes.
    child.disconnect()
    expect(await exited).toBe(0)
    await until('the simulator process gone', () => !alive(child.pid!), 5000)
  })
})
