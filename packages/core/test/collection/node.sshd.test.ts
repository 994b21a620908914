/**
 * The node_exporter series of one real host (this machine, through a real OpenSSH sshd as kaytest) are the same
 * whichever way they are collected: each stream loop (perl, python, awk, bash, sh) and the exec fallback give the
 * same families and the same series (label sets). Values are compared with node_exporter itself in
 * packages/cli/test/e2e/node-exporter.sshd.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { HostCollector } from '../../src/collection/collector.js'
import { NodeSink, STREAM_FLAVOURS, type StreamFlavour } from '../../src/collection/index.js'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { makeClientKey, requireSshd, type SshdServer, startSshd, until } from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import type { Identity } from '../../src/types.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

let dir: string
let identity: Identity
let sshd: SshdServer

beforeAll(async () => {
  if (!requireSshd()) throw new Error('real-sshd tests need /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  dir = await mkdtemp(join(tmpdir(), 'kay-node-sshd-'))
  const key = await makeClientKey(dir)
  identity = await loadIdentity({ username: 'kaytest', identityFiles: [key.privateKeyPath], agent: 'none' })
  sshd = await startSshd({ authorizedKeys: [key.publicKey] })
})

afterAll(async () => {
  await sshd?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** The series keys (`name{labels}`, values dropped) of one tick, collected the way `how` says, slow sections in. */
async function seriesVia(how: StreamFlavour | 'exec'): Promise<Set<string>> {
  const a = new HostActor({
    target: { id: 'real', hostname: sshd.host, port: sshd.port, user: sshd.user },
    identity,
    verifier: memoryVerifier(),
    dialGate: new LocalDialGate(),
  })
  const c = new HostCollector(a, {
    node: true,
    slowEvery: 1,
    streamTimeoutMs: 3000,
    ...(how === 'exec' ? { mode: 'exec' as const } : { flavours: [how] }),
  })
  try {
    a.start()
    await waitForState(a, 'ready')
    const want = how === 'exec' ? 'exec' : `stream-${how}`
    await until(
      `collecting by ${want}`,
      async () => {
        await c.collect()
        return c.mode === want
      },
      { timeoutMs: 10_000, everyMs: 20 },
    )
    await c.collect()
    expect(c.mode).toBe(want)
    const sink = new NodeSink()
    c.nodeSeries!.writeTo(sink)
    expect(c.nodeSeries!.badSections).toBe(0)
    const out = new Set<string>()
    for (const part of sink.take().parts) {
      for (const line of Buffer.from(part).toString('utf8').split('\n')) {
        if (line !== '') out.add(line.slice(0, line.lastIndexOf(' ')))
      }
    }
    return out
  } finally {
    c.close()
    await a.close()
  }
}

/** Network devices come and go on a busy machine (other tests make veth pairs): compare the others. */
const stable = (keys: Set<string>, devices: Set<string>): string[] =>
  [...keys]
    .filter((k) => {
      const d = /^node_network_[^{]*\{[^}]*device="([^"]*)"/.exec(k)?.[1]
      return d === undefined || devices.has(d)
    })
    .sort()

const devicesOf = (keys: Set<string>): Set<string> =>
  new Set([...keys].flatMap((k) => /^node_network_receive_bytes_total\{[^}]*device="([^"]*)"/.exec(k)?.[1] ?? []))

it('gives the same node_exporter series through every stream loop and the exec fallback', async () => {
  const exec = await seriesVia('exec')
  const families = new Set([...exec].map((k) => k.split('{')[0]))
  // This machine has every source: the comparison covers every family kay exports here.
  for (const f of [
    'node_cpu_seconds_total',
    'node_memory_MemTotal_bytes',
    'node_network_receive_bytes_total',
    'node_disk_reads_completed_total',
    'node_filesystem_size_bytes',
    'node_vmstat_pgfault',
    'node_filefd_maximum',
    'node_time_seconds',
    'node_uname_info',
    'node_os_info',
    'node_load1',
    'node_boot_time_seconds',
    'node_network_up',
    'node_network_info',
    'node_time_zone_offset_seconds',
    'node_time_clocksource_current_info',
  ]) {
    expect(families, f).toContain(f)
  }
  for (const flavour of STREAM_FLAVOURS) {
    const got = await seriesVia(flavour)
    const devices = new Set([...devicesOf(exec)].filter((d) => devicesOf(got).has(d)))
    expect(stable(got, devices), flavour).toEqual(stable(exec, devices))
  }
}, 120_000)
