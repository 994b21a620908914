/**
 * DNS outside the dial slot: how long good hosts (real sshd on loopback) take to be ready with and without a crowd
 * of names that fail to resolve, slowly, listed before them. The names are made up and answered only by an injected
 * lookup (no real DNS server is ever asked): good names map to the sshd instances, bad ones fail after
 * `--fail-ms` (a resolver timing out; the issue measured ~1.6 s per failure).
 *
 *   node --conditions=kay-source --import tsx bench/load/dns.ts --good 3 --bad 999 --fail-ms 1600 --repeats 3
 *   node --conditions=kay-source --import tsx bench/load/dns.ts --good 3 --bad 999 --fail-ms 1600 --concurrency 112
 *
 * Reports per run: ms from Supervisor.start() to every good host ready, ms until every bad name has reported
 * KAY_RESOLVE_FAILED, and the lookups made (one per name: redials are answered from the negative cache).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { HostTarget, LookupFn } from '@kay/core'
import { makeClientKey, requireSshd, type SshdServer, startSshd } from '@kay/core/testing'
import { Supervisor } from '@kay/workers'
import { flags, reached, record, runMain, summarize } from './lib.js'

export async function main(argv: readonly string[]): Promise<number> {
  const f = flags(argv)
  const goodN = Number(f.get('good') ?? 3)
  const badN = Number(f.get('bad') ?? 999)
  const failMs = Number(f.get('fail-ms') ?? 1600)
  const repeats = Number(f.get('repeats') ?? 3)
  // The resolver's bound on lookups in flight; default: its default for an injected lookup (1024). The CLI's bound
  // with dns.lookup is 112 (a thread pool of 128 less 16).
  const concurrency = f.get('concurrency') === undefined ? undefined : Number(f.get('concurrency'))
  if (!requireSshd()) throw new Error('needs /usr/sbin/sshd and the kaytest user: run .ci/setup-sshd.sh')
  const dir = await mkdtemp(join(tmpdir(), 'kay-bench-dns-'))
  const key = await makeClientKey(dir)
  const good: SshdServer[] = []
  try {
    for (let i = 0; i < goodN; i++) good.push(await startSshd({ authorizedKeys: [key.publicKey] }))
    const address = new Map(good.map((s, i) => [`good-${i}.kay.test`, s.host]))
    const goodIds = good.map((_, i) => `good-${i}`)
    const results: Record<string, number[]> = { without: [], with: [] }
    for (let rep = 0; rep < repeats; rep++) {
      for (const mode of ['without', 'with'] as const) {
        let lookups = 0
        const lookup: LookupFn = (hostname, signal) => {
          lookups++
          const ip = address.get(hostname)
          if (ip !== undefined) return Promise.resolve({ address: ip, family: 4 })
          return new Promise((_, reject) => {
            const t = setTimeout(() => reject(Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' })), failMs)
            signal.addEventListener('abort', () => {
              clearTimeout(t)
              reject(new Error('aborted'))
            })
          })
        }
        const target = (id: string, hostname: string, port: number): HostTarget => ({
          id,
          hostname,
          port,
          user: 'kaytest',
        })
        const hosts = [
          ...(mode === 'with'
            ? Array.from({ length: badN }, (_, i) => target(`bad-${i}`, `bad-${i}.kay.test`, 22))
            : []),
          ...good.map((s, i) => target(`good-${i}`, `good-${i}.kay.test`, s.port)),
        ]
        const t0 = performance.now()
        const sup = await Supervisor.start({
          hosts,
          identity: { username: 'kaytest', keyFiles: [key.privateKeyPath] },
          trust: { knownHostsPath: join(dir, `pins-${rep}-${mode}`), policy: 'accept-new' },
          dns: { lookup, ...(concurrency === undefined ? {} : { concurrency }) },
        })
        try {
          const state = () => new Map(sup.statuses().map((s) => [s.id, s]))
          const ok = await reached(
            'every good host ready',
            () => {
              const st = state()
              return goodIds.every((id) => st.get(id)?.state === 'ready')
            },
            { timeoutMs: 60_000, everyMs: 5 },
          )
          const readyMs = performance.now() - t0
          if (!ok) throw new Error(`${mode}: good hosts not ready within 60 s`)
          let badMs = 0
          if (mode === 'with') {
            await reached(
              'every bad name KAY_RESOLVE_FAILED',
              () => {
                const st = state()
                let n = 0
                for (const s of st.values()) if (s.lastError?.code === 'KAY_RESOLVE_FAILED') n++
                return n === badN
              },
              { timeoutMs: 60_000, everyMs: 20 },
            )
            badMs = performance.now() - t0
          }
          results[mode]!.push(readyMs)
          console.log(
            `run ${rep + 1} ${mode} ${badN} bad names: good hosts ready ${readyMs.toFixed(0)} ms` +
              (mode === 'with' ? `; every bad name KAY_RESOLVE_FAILED ${badMs.toFixed(0)} ms; lookups ${lookups}` : ''),
          )
          record('dns', { mode, rep, goodN, badN, failMs, concurrency: concurrency ?? null, readyMs, badMs, lookups })
        } finally {
          await sup.stop()
        }
      }
    }
    for (const mode of ['without', 'with'] as const) {
      const s = summarize(results[mode]!)
      console.log(
        `concurrency ${concurrency ?? 'default'}, ${mode}: good hosts ready min ${s.min.toFixed(0)} / median ${s.median.toFixed(0)} / max ${s.max.toFixed(0)} ms`,
      )
    }
    return 0
  } finally {
    await Promise.all(good.map((s) => s.stop()))
    await rm(dir, { recursive: true, force: true })
  }
}

runMain(import.meta.url, main)
