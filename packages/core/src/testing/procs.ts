/**
 * Process-table helpers for the real-sshd test harness: who descends from whom, who is still alive, and how
 * much memory they use. Linux only (`ps` from procps and `/proc`).
 */
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

/** One row of the process table. */
export interface ProcessInfo {
  pid: number
  ppid: number
  /** The full command line as `ps -o args` shows it (sshd rewrites its own, e.g. `sshd: kaytest@notty`). */
  cmd: string
}

/**
 * The live process table, zombies left out: a zombie has already exited, and on these machines PID 1 reaps
 * orphans only every so often, so `<defunct>` rows linger after an sshd is gone.
 */
export async function processTable(): Promise<ProcessInfo[]> {
  const { stdout } = await execFileP('ps', ['-eo', 'pid=,ppid=,stat=,args='], { maxBuffer: 64 * 1024 * 1024 })
  const rows: ProcessInfo[] = []
  for (const line of stdout.split('\n')) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s(.*)$/.exec(line)
    if (!m || m[3]!.startsWith('Z')) continue
    rows.push({ pid: Number(m[1]), ppid: Number(m[2]), cmd: m[4]!.trim() })
  }
  return rows
}

/** Every process below `root` in `table` (children, grandchildren, ...), not `root` itself. Parents come first. */
export function descendantsOf(table: readonly ProcessInfo[], root: number): ProcessInfo[] {
  const children = new Map<number, ProcessInfo[]>()
  for (const p of table) {
    const list = children.get(p.ppid)
    if (list) list.push(p)
    else children.set(p.ppid, [p])
  }
  const out: ProcessInfo[] = []
  const queue = [root]
  const seen = new Set<number>([root])
  // Bounded by the table size: each pid is visited once.
  while (queue.length > 0) {
    const pid = queue.shift()!
    for (const child of children.get(pid) ?? []) {
      if (seen.has(child.pid)) continue
      seen.add(child.pid)
      out.push(child)
      queue.push(child.pid)
    }
  }
  return out
}

/** Whether `pid` exists and is not a zombie (`kill(pid, 0)` alone says yes to zombies). */
export async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // Field 3 follows the parenthesised command name, which may itself contain spaces or parentheses.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/** Send `signal` to `pid`, ignoring "no such process". */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

/** Proportional set size of `pid` in KiB (from /proc/<pid>/smaps_rollup), 0 if it is gone. */
export async function pssKb(pid: number): Promise<number> {
  try {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
    const m = /^Pss:\s+(\d+) kB/m.exec(text)
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}
