/**
 * What ssh asks the operating system while it reads its configuration: accounts (getpwuid/getpwnam for `~`, `%d`,
 * `%u`, Debian's group-writable rule), services (getservbyname for `Port ssh`), the local host name (`%l`, `%L`),
 * local addresses (`Match localnetwork`) and how `Match exec` runs a command. Every part is injectable, so tests
 * give kay the very tables they give the real `ssh`.
 */
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import os from 'node:os'

interface Account {
  name: string
  uid: number
  gid: number
  home: string
}

/** The account, group and service databases ssh consults. */
export interface SystemDb {
  userByName(name: string): Account | undefined
  userByUid(uid: number): Account | undefined
  /** Every account, in file order (getpwent). */
  users(): readonly Account[]
  /** Group name and supplementary members (getgrgid). */
  group(gid: number): { name: string; members: readonly string[] } | undefined
  /** getservbyname(name, "tcp"). */
  servicePort(name: string): number | undefined
}

function parsePasswd(text: string): Account[] {
  const out: Account[] = []
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f.length < 7 || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue
    const uid = Number(f[2])
    const gid = Number(f[3])
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue
    out.push({ name: f[0] as string, uid, gid, home: f[5] as string })
  }
  return out
}

function parseGroups(text: string): Map<number, { name: string; members: string[] }> {
  const out = new Map<number, { name: string; members: string[] }>()
  for (const line of text.split('\n')) {
    const f = line.split(':')
    if (f.length < 4 || line.startsWith('#')) continue
    const gid = Number(f[2])
    if (!Number.isInteger(gid) || out.has(gid)) continue
    out.set(gid, { name: f[0] as string, members: (f[3] as string).split(',').filter((m) => m !== '') })
  }
  return out
}

function parseServices(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim()
    const f = line.split(/\s+/)
    const m = /^(\d+)\/tcp$/.exec(f[1] ?? '')
    if (!m) continue
    for (const name of [f[0] as string, ...f.slice(2)]) if (!out.has(name)) out.set(name, Number(m[1]))
  }
  return out
}

export interface FilesDbOptions {
  /** /etc/passwd text. */
  passwd: string
  /** /etc/group text. */
  group: string
  /** /etc/services text. */
  services: string
  /** Look an account up elsewhere when the files do not have it (NSS: LDAP, sssd...). */
  fallback?: (key: { name: string } | { uid: number }) => Account | undefined
}

/** A {@link SystemDb} over passwd, group and services texts (the `files` NSS source). */
export function filesSystemDb(opts: FilesDbOptions): SystemDb {
  const users = parsePasswd(opts.passwd)
  const groups = parseGroups(opts.group)
  const services = parseServices(opts.services)
  return {
    userByName: (name) => users.find((u) => u.name === name) ?? opts.fallback?.({ name }),
    userByUid: (uid) => users.find((u) => u.uid === uid) ?? opts.fallback?.({ uid }),
    users: () => users,
    group: (gid) => groups.get(gid),
    servicePort: (name) => services.get(name),
  }
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

/** `getent passwd KEY`: accounts from every NSS source, for those /etc/passwd does not list. */
function getentPasswd(key: { name: string } | { uid: number }): Account | undefined {
  try {
    const out = execFileSync('getent', ['passwd', 'name' in key ? key.name : String(key.uid)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 5_000,
    })
    return parsePasswd(out)[0]
  } catch {
    return undefined
  }
}

let systemDb: SystemDb | undefined
/** This machine's databases: /etc/passwd, /etc/group, /etc/services, with `getent` for other NSS accounts. */
export function defaultSystemDb(): SystemDb {
  systemDb ??= filesSystemDb({
    passwd: readOr('/etc/passwd'),
    group: readOr('/etc/group'),
    services: readOr('/etc/services'),
    fallback: getentPasswd,
  })
  return systemDb
}

/**
 * Whether a config file with this owner and mode may be read (readconf.c's check on ~/.ssh/config and included
 * files, with Debian's user-group-modes patch): owned by root or the user, not writable by others, and group-write
 * only when the group's one member is the file's owner.
 */
export function securePermissions(
  st: { uid: number; gid: number; mode: number },
  uid: number,
  db: Pick<SystemDb, 'users' | 'group' | 'userByUid'>,
): boolean {
  if (st.uid !== 0 && st.uid !== uid) return false
  if ((st.mode & 0o002) !== 0) return false
  if ((st.mode & 0o020) === 0) return true
  const gr = db.group(st.gid)
  if (gr === undefined) return false
  let members = 0
  for (const u of db.users()) {
    if (u.gid !== st.gid) continue
    members++
    if (u.uid !== st.uid) return false
  }
  const owner = db.userByUid(st.uid)
  if (owner === undefined) return false
  if (gr.members.length > 0) {
    members++
    if (gr.members[0] !== owner.name || gr.members.length > 1) return false
  }
  return members > 0
}

/** How a `Match exec` command ended: its exit status, or abnormally (a signal, or kay's time limit). */
export type ExecOutcome = { status: number } | { abnormal: string }

/** Runs a `Match exec` command. */
export type MatchExecRunner = (
  command: string,
  opts: { shell: string; env: Readonly<NodeJS.ProcessEnv> },
) => Promise<ExecOutcome>

/** How long kay lets one `Match exec` command run (ssh waits forever; a fleet tool cannot). */
const MATCH_EXEC_TIMEOUT_MS = 30_000

/**
 * Run a command the way ssh runs `Match exec`: `$SHELL -c command` (or /bin/sh), stdin and stdout on /dev/null,
 * stderr passed through. Unlike ssh, a command that outlives {@link MATCH_EXEC_TIMEOUT_MS} is killed (with its process
 * group) and counts as an abnormal exit.
 */
export function runMatchExec(
  command: string,
  opts: { shell: string; env: Readonly<NodeJS.ProcessEnv> },
): Promise<ExecOutcome> {
  return new Promise((resolve) => {
    const child = spawn(opts.shell, ['-c', command], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: opts.env as NodeJS.ProcessEnv,
      detached: true,
    })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }, MATCH_EXEC_TIMEOUT_MS)
    child.once('error', (err) => {
      clearTimeout(timer)
      resolve({ abnormal: `cannot run ${opts.shell}: ${err.message}` })
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      if (code !== null && !timedOut) resolve({ status: code })
      else resolve({ abnormal: timedOut ? `killed after ${MATCH_EXEC_TIMEOUT_MS / 1000} s` : `killed by ${signal}` })
    })
  })
}

/** The local addresses `Match localnetwork` tests (interfaces that are up; scoped IPv6 addresses are left out). */
export function localAddresses(): string[] {
  const out: string[] = []
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv6' && (a.scopeid ?? 0) !== 0) continue
      out.push(a.address)
    }
  }
  return out
}
