/**
 * Helpers for the stress benches: fleets split over several simulator processes (each under its own fd limit),
 * summed sim counters, a per-second counter sampler, and small text/SVG renderings of a per-second series.
 * The generic helpers (flags, record, summarize, reached) come from ../load/lib.ts.
 */
import { writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostTarget } from '@kay/core'
import { generateClientKey, type RemoteSimFleet, type SimFleetStats, spawnSimFleet } from '@kay/core/sim'
import { Supervisor, type SupervisorOptions } from '@kay/workers'
import { procCpuMs } from '../load/steady.js'

const USER = 'bench'

/** A fleet made of one or more simulator child processes, with one key and one known_hosts file. */
export interface MultiFleet {
  fleets: RemoteSimFleet[]
  targets: HostTarget[]
  privateKey: string
  knownHostsPath: string
  dir: string
}

/**
 * Start `hosts` simulated hosts split evenly over `parts` child processes. Names get a per-part prefix
 * (`a0001`, `b0001`, …) so they stay unique across processes. `sharedMaxStartups` applies per process.
 */
export async function openFleets(hosts: number, opts: { parts?: number; sharedMaxStartups?: number } = {}) {
  const parts = opts.parts ?? 1
  const key = generateClientKey('kay-stress')
  const fleets: RemoteSimFleet[] = []
  const dir = await mkdtemp(join(tmpdir(), 'kay-stress-'))
  try {
    for (let p = 0; p < parts; p++) {
      const n = Math.floor(hosts / parts) + (p < hosts % parts ? 1 : 0)
      fleets.push(
        await spawnSimFleet(
          {
            hosts: n,
            authorizedKeys: [key.publicKey],
            seed: 7 + p,
            namePrefix: parts === 1 ? 'sim' : String.fromCharCode(97 + p),
            ...(opts.sharedMaxStartups === undefined ? {} : { sharedMaxStartups: opts.sharedMaxStartups }),
          },
          { startTimeoutMs: Math.max(60_000, n * 20) },
        ),
      )
    }
  } catch (err) {
    await Promise.all(fleets.map((f) => f.close()))
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  const targets = fleets.flatMap((f) =>
    f.hosts.map((h) => ({ id: h.name, hostname: h.host, port: h.port, user: USER })),
  )
  const ctx: MultiFleet = { fleets, targets, privateKey: key.privateKey, knownHostsPath: join(dir, 'known_hosts'), dir }
  return ctx
}

export async function closeFleets(ctx: MultiFleet): Promise<void> {
  await Promise.all(ctx.fleets.map((f) => f.close()))
  await rm(ctx.dir, { recursive: true, force: true })
}

/** Start a Supervisor on a fleet context (single or multi) with the bench identity and accept-new trust. */
export function startSupervisor(
  ctx: { targets: HostTarget[]; privateKey: string; knownHostsPath: string },
  extra: Omit<SupervisorOptions, 'hosts' | 'identity' | 'trust'>,
): Promise<Supervisor> {
  return Supervisor.start({
    hosts: ctx.targets,
    identity: { username: USER, keyFiles: [], keys: [ctx.privateKey] },
    trust: { knownHostsPath: ctx.knownHostsPath, policy: 'accept-new', extraKnownHosts: [] },
    ...extra,
  })
}

/** The fleet-wide counters summed over every process; peaks are summed too (an upper bound across processes). */
export interface Totals {
  accepted: number
  refused: number
  startupsDropped: number
  handshakesStarted: number
  handshakesCompleted: number
  currentConnections: number
  currentHandshakes: number
  maxConcurrentHandshakes: number
}

export async function totals(fleets: readonly RemoteSimFleet[]): Promise<Totals> {
  const all: SimFleetStats[] = await Promise.all(fleets.map((f) => f.stats()))
  const t: Totals = {
    accepted: 0,
    refused: 0,
    startupsDropped: 0,
    handshakesStarted: 0,
    handshakesCompleted: 0,
    currentConnections: 0,
    currentHandshakes: 0,
    maxConcurrentHandshakes: 0,
  }
  for (const s of all) {
    t.accepted += s.totals.accepted
    t.refused += s.totals.refused
    t.startupsDropped += s.totals.startupsDropped
    t.handshakesStarted += s.totals.handshakesStarted
    t.handshakesCompleted += s.totals.handshakesCompleted
    t.currentConnections += s.totals.currentConnections
    t.currentHandshakes += s.currentHandshakes
    t.maxConcurrentHandshakes += s.maxConcurrentHandshakes
  }
  return t
}

/** Summed CPU (ms) of every simulator child. */
export async function simCpuMs(fleets: readonly RemoteSimFleet[]): Promise<number> {
  const xs = await Promise.all(fleets.map((f) => procCpuMs(f.pid)))
  return xs.reduce((a, b) => a + b, 0)
}

/** One sample of the per-second sampler: counter deltas over the last second. */
export interface SecondSample {
  /** Seconds since the sampler started. */
  t: number
  accepted: number
  refused: number
  handshakesStarted: number
  currentHandshakes: number
  /** A label the caller sets (e.g. 'outage'). */
  phase: string
}

/**
 * Sample the sim counters every `everyMs` until `stop()` (bounded by `maxSamples`). Do not `resetStats()` while it
 * runs: the deltas would be wrong (a counter going down is clamped to its new value, a best effort only).
 */
export function sampleEverySecond(fleets: readonly RemoteSimFleet[], maxSamples: number, everyMs = 1000) {
  const samples: SecondSample[] = []
  let phase = 'start'
  let stopped = false
  const t0 = Date.now()
  const run = (async () => {
    let prev = await totals(fleets)
    for (let i = 0; i < maxSamples && !stopped; i++) {
      const due = t0 + (i + 1) * everyMs
      await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())))
      const cur = await totals(fleets)
      const d = (k: 'accepted' | 'refused' | 'handshakesStarted') => (cur[k] >= prev[k] ? cur[k] - prev[k] : cur[k])
      samples.push({
        t: (Date.now() - t0) / 1000,
        accepted: d('accepted'),
        refused: d('refused'),
        handshakesStarted: d('handshakesStarted'),
        currentHandshakes: cur.currentHandshakes,
        phase,
      })
      prev = cur
    }
  })()
  return {
    samples,
    setPhase: (p: string) => {
      phase = p
    },
    stop: async () => {
      stopped = true
      await run
    },
  }
}

const BARS = ' ▁▂▃▄▅▆▇█'

/** A one-line sparkline of a series, scaled to its max; any non-zero value shows at least the lowest bar. */
export function sparkline(xs: readonly number[]): string {
  const max = Math.max(1, ...xs)
  return xs.map((x) => BARS[x > 0 ? Math.max(1, Math.min(8, Math.round((x / max) * 8))) : 0]).join('')
}

/**
 * A hand-written SVG line chart of a per-second series, with shaded spans for phases (e.g. the outage).
 * Good enough to eyeball a storm; no dependencies.
 */
export function writeSvgChart(
  path: string,
  title: string,
  series: Array<{ label: string; color: string; ys: readonly number[] }>,
  spans: Array<{ from: number; to: number; label: string }> = [],
): void {
  const W = 900
  const H = 320
  const L = 60
  const R = 20
  const T = 40
  const B = 40
  const n = Math.max(2, ...series.map((s) => s.ys.length))
  const max = Math.max(1, ...series.flatMap((s) => s.ys))
  const x = (i: number) => L + (i / (n - 1)) * (W - L - R)
  const y = (v: number) => T + (1 - v / max) * (H - T - B)
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<title>${title}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`,
  ]
  for (const s of spans) {
    out.push(
      `<rect x="${x(s.from).toFixed(1)}" y="${T}" width="${(x(s.to) - x(s.from)).toFixed(1)}" height="${H - T - B}" ` +
        `fill="#f4d6d6"/>`,
      `<text x="${((x(s.from) + x(s.to)) / 2).toFixed(1)}" y="${T + 14}" text-anchor="middle">${s.label}</text>`,
    )
  }
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4
    out.push(
      `<line x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${Math.round(v)}</text>`,
    )
  }
  for (let i = 0; i < n; i += 10) {
    out.push(`<text x="${x(i).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${i}s</text>`)
  }
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`)
  out.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`)
  series.forEach((s, j) => {
    const pts = s.ys.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${pts}"/>`)
    out.push(
      `<text x="${W - R - 4}" y="${T + 16 + 16 * (j + 1)}" text-anchor="end" fill="${s.color}">${s.label}</text>`,
    )
  })
  out.push('</svg>\n')
  writeFileSync(path, out.join('\n'))
}
