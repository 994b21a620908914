/**
 * A cgroup v2 group for the processes of a test sshd (or a fleet of them): it measures their CPU
 * (`cpu.stat` `usage_usec` counts every process that ever ran in it, also ones that exited or were reparented)
 * and lets stop() find and kill every process we started, even after their parent died.
 *
 * On these machines cgroup v1 is mounted at /sys/fs/cgroup and the v2 hierarchy at /sys/fs/cgroup/unified
 * (hybrid); `cpu.stat` there has `usage_usec` without any controller enabled. On a pure v2 host the
 * hierarchy is /sys/fs/cgroup itself. Without root or without a writable hierarchy, everything here is null.
 */
import { existsSync, mkdirSync, rmdirSync } from 'node:fs'
import { readdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isAlive, signal } from './procs.js'

const CANDIDATE_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']
/** How long destroy() waits for the group to empty after killing it. */
const DESTROY_TIMEOUT_MS = 3_000
const POLL_MS = 5

let rootCache: string | null | undefined
let sequence = 0

/** The writable cgroup v2 hierarchy, or null. Probed once per process (mkdir + rmdir of a scratch group). */
export function cgroupRoot(): string | null {
  if (rootCache !== undefined) return rootCache
  rootCache = null
  for (const root of CANDIDATE_ROOTS) {
    if (!existsSync(join(root, 'cgroup.controllers'))) continue
    const probe = join(root, `kay-probe-${process.pid}`)
    try {
      mkdirSync(probe)
      rmdirSync(probe)
      rootCache = root
      break
    } catch {
      // Read-only or not ours: try the next candidate.
    }
  }
  return rootCache
}

/** A cgroup v2 group we created. */
export class Cgroup {
  /** The group directory, e.g. /sys/fs/cgroup/unified/kay-bench-1234-1. */
  readonly path: string
  /** Write a pid here to move that process into the group. */
  readonly procsPath: string
  #destroyed = false

  private constructor(path: string) {
    this.path = path
    this.procsPath = join(path, 'cgroup.procs')
  }

  /**
   * Create `<root>/kay-<kind>-<our pid>-<n>`, or return null when no writable cgroup v2 hierarchy exists
   * (then callers fall back to the process tree and report CPU as null).
   */
  static create(kind: 'bench' | 'sshd'): Cgroup | null {
    const root = cgroupRoot()
    if (root === null) return null
    sequence += 1
    const path = join(root, `kay-${kind}-${process.pid}-${sequence}`)
    try {
      mkdirSync(path)
    } catch {
      return null
    }
    return new Cgroup(path)
  }

  /**
   * Kill and remove groups left by earlier test processes that died without stopping their sshd (a runner that
   * SIGKILLs its workers skips exit hooks). Only groups named by this module whose owning pid is gone.
   */
  static async reapStale(): Promise<void> {
    const root = cgroupRoot()
    if (root === null) return
    for (const name of await readdir(root)) {
      const m = /^kay-(?:bench|sshd)-(\d+)-\d+$/.exec(name)
      if (!m || Number(m[1]) === process.pid || (await isAlive(Number(m[1])))) continue
      await new Cgroup(join(root, name)).destroy().catch(() => undefined)
    }
  }

  /** Move `pid` (and its future children) into the group. */
  async add(pid: number): Promise<void> {
    await writeFile(this.procsPath, `${pid}\n`)
  }

  /** The live pids in the group. */
  async pids(): Promise<number[]> {
    try {
      const text = await readFile(this.procsPath, 'utf8')
      return text
        .split('\n')
        .filter((s) => s.length > 0)
        .map(Number)
    } catch {
      return []
    }
  }

  /** CPU used by every process that ran in the group since it was created, in microseconds. */
  async cpuUsageUsec(): Promise<number> {
    const text = await readFile(join(this.path, 'cpu.stat'), 'utf8')
    const m = /^usage_usec (\d+)$/m.exec(text)
    if (!m) throw new Error(`no usage_usec in ${this.path}/cpu.stat`)
    return Number(m[1])
  }

  /**
   * Kill every process in the group (all of them descend from processes we started), wait for it to empty,
   * and remove it. Idempotent.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return
    this.#destroyed = true
    const killFile = join(this.path, 'cgroup.kill')
    const deadline = Date.now() + DESTROY_TIMEOUT_MS
    // Bounded by the deadline; each round re-kills whatever is left (cgroup.kill needs Linux 5.14+).
    while (Date.now() < deadline) {
      const pids = await this.pids()
      const alive = (await Promise.all(pids.map(isAlive))).some(Boolean)
      if (!alive) {
        try {
          await rmdir(this.path)
          return
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code
          if (code === 'ENOENT') return
          if (code !== 'EBUSY') throw err
          // Zombies still count as members until reaped; wait for them.
        }
      } else if (existsSync(killFile)) {
        await writeFile(killFile, '1').catch(() => undefined)
      } else {
        for (const pid of pids) signal(pid, 'SIGKILL')
      }
      await new Promise((r) => setTimeout(r, POLL_MS))
    }
    throw new Error(`cgroup ${this.path} did not empty within ${DESTROY_TIMEOUT_MS} ms`)
  }
}
