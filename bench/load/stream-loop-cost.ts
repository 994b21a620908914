/**
 * What one request costs on one open collection stream, per loop flavour, against one real OpenSSH sshd on
 * loopback: host CPU (the sshd instance's cgroup: sshd + the loop), client CPU (this process) and frame size per
 * request, over `--requests` sequential requests (default 2000) after 50 warm-up ones. A `floor` loop that answers
 * a fixed line and reads no file shows what sshd and the round trip cost by themselves. The df section is never
 * asked for here: it is measured by the fleet runs (bench/load/real-sshd.ts).
 *
 *   bash .ci/setup-sshd.sh   # idempotent
 *   node --conditions=kay-source --import tsx bench/load/stream-loop-cost.ts [--requests 2000] [--rounds 2]
 *
 * Rounds interleave the flavours (perl, bash, sh, floor, perl, bash, …) so that drift on a shared machine
 * spreads over all of them.
 */
import { HostActor, LocalDialGate, STREAM_FLAVOURS } from '@kay/core'
import { FrameDecoder, randomStreamToken, streamCommand, streamRequest } from '@kay/core/internal'
import { generateClientKey } from '@kay/core/sim'
import { sshdAvailable, startSshd } from '@kay/core/testing'
import { flags, record, runMain, summarize } from './lib.js'

const WARMUP = 50
/** Answers `@@kay-end <token> <seq>` to each request and reads nothing: sshd + round trip only. */
const floorCommand = (token: string) =>
  `exec perl -e '$|=1;my $t=shift;while(<STDIN>){chomp;print "\\@\\@kay-end $t $_\\n"}' ${token}`

async function main(argv: string[]): Promise<number> {
  if (!sshdAvailable()) {
    console.error('sshd or the kaytest user is missing: run bash .ci/setup-sshd.sh')
    return 2
  }
  const f = flags(argv)
  const requests = Number(f.get('requests') ?? 2000)
  const rounds = Number(f.get('rounds') ?? 2)
  const key = generateClientKey()
  const sshd = await startSshd({ authorizedKeys: [key.publicKey] })
  const actor = new HostActor({
    target: { id: 'sshd', hostname: sshd.host, port: sshd.port, user: sshd.user },
    identity: { username: sshd.user, keys: [{ key: key.parsed, source: 'bench' }] },
    verifier: { verify: async () => ({ kind: 'trusted' as const }) },
    dialGate: new LocalDialGate(),
  })
  const rows = new Map<string, { host: number[]; client: number[]; bytes: number }>()
  try {
    actor.start()
    while (actor.state !== 'ready') await new Promise((r) => setTimeout(r, 20))
    for (let round = 0; round < rounds; round++) {
      for (const name of [...STREAM_FLAVOURS, 'floor'] as const) {
        const token = randomStreamToken()
        const decoder = new FrameDecoder({ token })
        let waiting: ((body: string) => void) | undefined
        const channel = await actor.openExec(
          name === 'floor' ? floorCommand(token) : streamCommand(name, token),
          (ch) =>
            ch.on('data', (d: Buffer) => {
              for (const fr of decoder.push(d)) waiting?.(fr.body)
            }),
        )
        channel.stderr.resume()
        const ask = (seq: number) =>
          new Promise<string>((resolve) => {
            waiting = resolve
            decoder.expect(seq)
            channel.write(name === 'floor' ? `${seq}\n` : streamRequest(seq))
          })
        for (let i = 1; i <= WARMUP; i++) await ask(i)
        const h0 = await sshd.cpuUsageUsec()
        const c0 = process.cpuUsage()
        let bytes = 0
        for (let i = WARMUP + 1; i <= WARMUP + requests; i++) bytes += (await ask(i)).length
        const c = process.cpuUsage(c0)
        const h1 = await sshd.cpuUsageUsec()
        channel.end()
        const row = rows.get(name) ?? { host: [], client: [], bytes: 0 }
        if (h0 !== null && h1 !== null) row.host.push((h1 - h0) / 1000 / requests)
        row.client.push((c.user + c.system) / 1000 / requests)
        row.bytes = Math.round(bytes / requests)
        rows.set(name, row)
        await new Promise<void>((r) => (channel.closed ? r() : channel.once('close', () => r())))
      }
    }
    for (const [name, r] of rows) {
      const host = summarize(r.host)
      const client = summarize(r.client)
      console.log(
        `${name.padEnd(6)} host ms/request ${host.min.toFixed(3)}–${host.max.toFixed(3)} | client ms/request ` +
          `${client.min.toFixed(3)}–${client.max.toFixed(3)} | frame ${r.bytes} B`,
      )
      record('stream-loop-cost', {
        loop: name,
        requests,
        rounds,
        hostMsPerRequest: host,
        clientMsPerRequest: client,
        frameBytes: r.bytes,
      })
    }
    return 0
  } finally {
    await actor.close()
    await sshd.stop()
  }
}

runMain(import.meta.url, main)
