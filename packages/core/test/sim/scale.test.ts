import { type PublicKeyAuthMethod, Client as SshClient } from 'ssh2'
import { describe, expect, it } from 'vitest'
import { generateClientKey, startSimFleet } from '../../src/sim/index.js'

const key = generateClientKey()
const HOSTS = 2000
const SAMPLE = 40

describe('the simulator at fleet scale', () => {
  it(`holds ${HOSTS} hosts in one process, starting in seconds with a few tens of KB per host`, async () => {
    const rss0 = process.memoryUsage().rss
    const t0 = performance.now()
    const fleet = await startSimFleet({ hosts: HOSTS, authorizedKeys: [key.publicKey] })
    const startMs = performance.now() - t0
    const rssPerHostKb = (process.memoryUsage().rss - rss0) / HOSTS / 1024
    const clients: SshClient[] = []
    try {
      expect(fleet.hosts).toHaveLength(HOSTS)
      expect(fleet.hosts.at(-1)!.name).toBe('sim2000')
      expect(new Set(fleet.hosts.map((h) => h.port)).size).toBe(HOSTS)

      // A spread sample of hosts answers a real collection.
      const auth: PublicKeyAuthMethod = { type: 'publickey', username: 'kay', key: key.parsed }
      const sample = Array.from({ length: SAMPLE }, (_, i) => fleet.hosts[Math.floor((i * HOSTS) / SAMPLE)]!)
      const outputs = await Promise.all(
        sample.map(
          (h) =>
            new Promise<string>((resolve, reject) => {
              const c = new SshClient()
              clients.push(c)
              c.on('error', reject)
              c.on('ready', () =>
                c.exec(': kay-collect v1;', (err, ch) => {
                  if (err) return reject(err)
                  let out = ''
                  ch.on('data', (d: Buffer) => {
                    out += d
                  })
                  ch.on('close', () => resolve(out))
                }),
              )
              c.connect({ host: h.host, port: h.port, username: 'kay', authHandler: [auth], readyTimeout: 10_000 })
            }),
        ),
      )
      for (const out of outputs) expect(out).toMatch(/^@@kay loadavg\n[\s\S]*@@kay df\n/)
      expect(fleet.stats().totals).toMatchObject({ handshakesCompleted: SAMPLE, commands: SAMPLE })

      console.log(
        `sim scale: ${HOSTS} hosts started in ${startMs.toFixed(0)} ms, ` +
          `RSS +${((rssPerHostKb * HOSTS) / 1024).toFixed(1)} MB (${rssPerHostKb.toFixed(1)} KB/host)`,
      )
      expect(startMs).toBeLessThan(15_000)
      // Measured ~27 KB/host (ssh2 Server + listener + parsed host key); bound it loosely against GC noise.
      expect(rssPerHostKb).toBeLessThan(150)
    } finally {
      for (const c of clients) c.destroy()
      await fleet.close()
    }
  })
})
