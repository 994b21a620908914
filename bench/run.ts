/**
 * Bench dispatcher.
 *
 *   pnpm bench        # quick (< 5 min): the micro benches + a small steady-state run (100 sim hosts)
 *   pnpm bench:load   # the full set: steady 100/1000/5000/10000, cold start, real sshd 100/300 (needs root + sshd)
 *
 * Every bench runs in its own child process (so one's threads, sockets and heap never skew the next) with a hard
 * deadline. Results are appended as JSON lines to $KAY_BENCH_OUT (default bench/results-<profile>.jsonl).
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const NODE_ARGS = ['--conditions=kay-source', '--expose-gc', '--import', 'tsx']

interface Step {
  name: string
  file: string
  args: string[]
  timeoutMs: number
}

function micro(): Step[] {
  return readdirSync(join(here, 'micro'))
    .filter((f) => f.endsWith('.bench.ts'))
    .sort()
    .map((f) => ({ name: `micro/${f}`, file: join(here, 'micro', f), args: [], timeoutMs: 120_000 }))
}

const PROFILES: Record<string, () => Step[]> = {
  quick: () => [
    ...micro(),
    {
      name: 'steady 100',
      file: join(here, 'load/steady.ts'),
      args: ['--sizes', '100', '--ticks', '10', '--fresh-ticks', '3'],
      timeoutMs: 120_000,
    },
  ],
  load: () => [
    ...micro(),
    {
      name: 'steady 100,1000',
      file: join(here, 'load/steady.ts'),
      args: ['--sizes', '100,1000', '--ticks', '10', '--fresh-ticks', '3', '--repeats', '3'],
      timeoutMs: 900_000,
    },
    {
      name: 'steady 5000,10000',
      file: join(here, 'load/steady.ts'),
      args: ['--sizes', '5000,10000', '--ticks', '5', '--fresh-ticks', '1', '--interval-ms', '5000'],
      timeoutMs: 1_200_000,
    },
    {
      name: 'cold start 1000',
      file: join(here, 'load/cold-start.ts'),
      args: ['--hosts', '1000', '--caps', '1,4,16,64', '--repeats', '3'],
      timeoutMs: 600_000,
    },
    {
      name: 'fleet cold start 1000 real sshd (kay fleet --json, issue #19)',
      file: join(here, 'load/fleet-cold-start.ts'),
      args: ['--hosts', '1000', '--interval-ms', '5000', '--goal-s', '90', '--after', '5'],
      timeoutMs: 600_000,
    },
    {
      name: 'cost per host-tick at 1/5/15 s, 100 real sshd, built CLI vs ssh2 floor',
      file: join(here, 'load/tick-cost.ts'),
      args: ['--hosts', '100', '--intervals', '1,5,15', '--ticks', '5'],
      timeoutMs: 1_200_000,
    },
    {
      name: 'real sshd 100,300',
      file: join(here, 'load/real-sshd.ts'),
      args: ['--sizes', '100,300', '--ticks', '5'],
      timeoutMs: 1_200_000,
    },
    {
      name: 'stress outage 1000',
      file: join(here, 'stress/outage.ts'),
      args: ['--hosts', '1000', '--outage-s', '30'],
      timeoutMs: 420_000,
    },
    {
      name: 'stress flapping 500',
      file: join(here, 'stress/flapping.ts'),
      args: ['--hosts', '500', '--flap-pct', '10', '--seconds', '60'],
      timeoutMs: 300_000,
    },
    {
      name: 'stress half-open 500',
      file: join(here, 'stress/half-open.ts'),
      args: ['--hosts', '500', '--pct', '10'],
      timeoutMs: 300_000,
    },
    {
      name: 'stress pushback 1000',
      file: join(here, 'stress/pushback.ts'),
      args: ['--hosts', '1000', '--max-startups', '4', '--dial-cap', '32', '--repeats', '3'],
      timeoutMs: 1_800_000,
    },
    {
      name: 'stress threads 2000',
      file: join(here, 'stress/threads.ts'),
      args: ['--hosts', '2000', '--threads', '1,2,4', '--dial-cap', '64'],
      timeoutMs: 900_000,
    },
    {
      name: 'stress steady 10000 (2 sims)',
      file: join(here, 'stress/steady-split.ts'),
      args: ['--hosts', '10000', '--parts', '2', '--ticks', '4', '--interval-ms', '5000'],
      timeoutMs: 1_200_000,
    },
    {
      name: 'node_exporter vs kay, host CPU at 5 s',
      file: join(here, 'load/node-exporter-cost.ts'),
      args: ['--interval-ms', '5000', '--requests', '24'],
      timeoutMs: 600_000,
    },
    {
      name: 'serve through the CLI, 100 real sshd hosts at 5 s',
      file: join(here, 'load/serve-cli.ts'),
      args: ['--hosts', '100', '--interval', '5s', '--ticks', '6'],
      timeoutMs: 600_000,
    },
    {
      name: 'serve exposition 1000 (and prom-client)',
      file: join(here, 'load/serve-exposition.ts'),
      args: ['--sizes', '1000', '--ticks', '4', '--interval-ms', '5000', '--prom-client'],
      timeoutMs: 600_000,
    },
    {
      name: 'serve exposition 10000 (2 sims)',
      file: join(here, 'load/serve-exposition.ts'),
      args: ['--sizes', '10000', '--ticks', '4', '--interval-ms', '5000'],
      timeoutMs: 1_800_000,
    },
  ],
}

function runStep(step: Step, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    console.log(`\n=== ${step.name}`)
    const child = spawn(process.execPath, [...NODE_ARGS, step.file, ...step.args], { stdio: 'inherit', env })
    const timer = setTimeout(() => {
      console.error(`${step.name}: past ${step.timeoutMs} ms, killing pid ${child.pid}`)
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 5000).unref()
    }, step.timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve(code ?? 1)
    })
  })
}

async function main(): Promise<number> {
  const profile = process.argv[2] ?? 'quick'
  const make = PROFILES[profile]
  if (!make) {
    console.error(`unknown profile '${profile}'; use one of: ${Object.keys(PROFILES).join(', ')}`)
    return 2
  }
  const env = { ...process.env, KAY_BENCH_OUT: process.env.KAY_BENCH_OUT ?? join(here, `results-${profile}.jsonl`) }
  const failed: string[] = []
  for (const step of make()) {
    const code = await runStep(step, env)
    if (code !== 0) failed.push(`${step.name} (exit ${code})`)
  }
  console.log(`\nresults: ${env.KAY_BENCH_OUT}`)
  if (failed.length > 0) console.log(`failed: ${failed.join(', ')}`)
  return failed.length === 0 ? 0 : 1
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)
