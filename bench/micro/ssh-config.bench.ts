/**
 * Micro bench: resolving hosts through ssh_config, kay's resolver against `ssh -G` (one process per host, the
 * alternative of asking ssh itself), in the same run. Configs: the corpus's corporate bastion config (ProxyJump
 * chains, wildcard domains, Includes absent) and its canonicalising one (CanonicalDomains with a hosts-table
 * resolver, so no DNS; Match exec disabled by an always-false runner, as each exec would cost a process).
 *
 *   node --conditions=kay-source --import tsx bench/micro/ssh-config.bench.ts
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { loadSshConfig } from '@kay/core'
import { Bench } from 'tinybench'
import { parseCase } from '../../packages/core/test/config/support/conformance.js'
import { hostsFileResolver } from '../../packages/core/test/config/support/hosts-resolver.js'

const fixtures = join(import.meta.dirname, '../../packages/core/test/config/fixtures/ssh-config')
const dir = mkdtempSync(join(os.tmpdir(), 'kay-bench-sshcfg-'))
const hosts = readFileSync(join(fixtures, 'etc', 'hosts'), 'utf8')

function configOf(caseName: string): string {
  const c = parseCase(caseName, readFileSync(join(fixtures, 'cases', `${caseName}.case`), 'utf8'))
  const file = join(dir, `${caseName}.conf`)
  const main = c.files.find((f) => f.path === 'config' || f.path === '~/.ssh/config')
  writeFileSync(file, (main?.content ?? '').replaceAll('@ROOT@', dir))
  return file
}

const corp = configOf('090-corp-bastions')
const canon = configOf('091-corp-canonical')
const opts = {
  systemConfig: null,
  resolver: hostsFileResolver(hosts),
  matchExec: async () => ({ status: 1 }),
}
const corpCfg = await loadSshConfig(corp, opts)
const canonCfg = await loadSshConfig(canon, opts)
const N = 100
const corpHosts = Array.from(
  { length: N },
  (_, i) => [`web${i}.prod`, `db${i}.prod`, `app${i}.staging`][i % 3] as string,
)
const canonNames = ['web01', 'web02', 'db01', 'cdn', 'jenkins', 'vault', 'build7.ci', 'db02.prod']
const canonHosts = Array.from({ length: N }, (_, i) => canonNames[i % canonNames.length] as string)

const bench = new Bench({ time: 1500, warmupTime: 300 })
bench
  .add(`kay resolve ×${N} (corporate bastions)`, async () => {
    for (const h of corpHosts) await corpCfg.resolve(h)
  })
  .add(`kay resolve ×${N} (canonicalising, table resolver)`, async () => {
    for (const h of canonHosts) await canonCfg.resolve(h)
  })
await bench.run()
console.table(
  bench
    .table()
    .map((r) => ({ name: r?.['Task name'], 'latency avg (ns)': r?.['Latency avg (ns)'], samples: r?.Samples })),
)

// The real thing: one `ssh -G` process per host (what a tool asking ssh would pay), a few dozen of them.
const SSH_N = 30
const t0 = process.hrtime.bigint()
for (let i = 0; i < SSH_N; i++) {
  execFileSync('/usr/bin/ssh', ['-G', '-F', corp, corpHosts[i] as string], { stdio: ['ignore', 'ignore', 'ignore'] })
}
const sshMs = Number(process.hrtime.bigint() - t0) / 1e6 / SSH_N
/** Mean ms per run of task i (tinybench reports ms). */
const mean = (i: number) => {
  const r = bench.tasks[i]?.result
  return r && 'latency' in r ? r.latency.mean : Number.NaN
}
const kayMs = mean(0) / N
console.log(
  JSON.stringify({
    bench: 'ssh-config',
    kayResolveMsPerHost: Number(kayMs.toFixed(4)),
    kayCanonicalMsPerHost: Number((mean(1) / N).toFixed(4)),
    sshGMsPerHost: Number(sshMs.toFixed(2)),
    ratio: Math.round(sshMs / kayMs),
  }),
)
rmSync(dir, { recursive: true, force: true })
