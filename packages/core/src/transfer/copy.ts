/**
 * File copies over one SFTP session of a host's pooled connection: local → host (`kay cp`, as pdcp and
 * `clush --copy`) and host → local (`kay rcopy`, as rpdcp and `clush --rcopy`, each host's copy named `name.HOST`).
 *
 * Rules, as pdcp: several sources need a destination directory; a destination that is an existing directory
 * receives `basename(source)`; a directory source needs `recursive`. Permission bits are kept on every file and
 * directory created (set explicitly after the transfer: the server's umask would otherwise mask them). Symbolic
 * links are followed; a directory met twice on one walk (a link loop) is an error, not an endless copy.
 */
import { constants as fsConstants } from 'node:fs'
import { chmod, mkdir, readdir, stat } from 'node:fs/promises'
import { basename, join, posix } from 'node:path'
import type { SFTPWrapper, Stats } from 'ssh2'
import { ConfigError, CopyError, type KayError } from '../errors.js'

export interface CopyOptions {
  /** Copy directories and their contents. Without it a directory source is an error. */
  recursive?: boolean
  /** Parallel SFTP requests per file (ssh2 fastPut/fastGet). Default 8: 8 × 32 KiB in flight per transfer. */
  concurrency?: number
}

export interface CopyStats {
  files: number
  directories: number
  bytes: number
}

const CHUNK_BYTES = 32 * 1024
/** Deepest directory tree copied; deeper is refused rather than walked without bound. */
const MAX_DEPTH = 64
/** SSH_FX_NO_SUCH_FILE (draft-ietf-secsh-filexfer-02 §7). */
const FX_NO_SUCH_FILE = 2

/** The host's SFTP error as a one-line cause, with the remote path. */
function remoteError(host: string, path: string, err: unknown): KayError {
  const e = err as Error & { code?: number | string }
  const why = e?.message ?? String(err)
  return new CopyError(`${host}: ${path}: ${why}`, { host, cause: err, details: { path, sftpCode: e?.code ?? null } })
}

function localError(host: string, path: string, err: unknown): KayError {
  const e = err as NodeJS.ErrnoException
  return new CopyError(`${host}: local ${path}: ${e?.code ?? ''} ${e?.message ?? String(err)}`.trim(), {
    host,
    cause: err,
    details: { path, errno: e?.code ?? null },
  })
}

function sftpCall<T>(fn: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, v) => (err ? reject(err) : resolve(v)))
  })
}

async function remoteStat(sftp: SFTPWrapper, path: string): Promise<Stats | undefined> {
  try {
    return await sftpCall<Stats>((cb) => sftp.stat(path, cb))
  } catch (err) {
    if ((err as { code?: number }).code === FX_NO_SUCH_FILE) return undefined
    throw err
  }
}

const isDir = (mode: number): boolean => (mode & fsConstants.S_IFMT) === fsConstants.S_IFDIR
const isFile = (mode: number): boolean => (mode & fsConstants.S_IFMT) === fsConstants.S_IFREG

/**
 * Check local sources before any host is contacted (a missing file is the operator's mistake, exit 1, not a failure
 * on every host). Throws ConfigError naming the path.
 */
export async function checkLocalSources(sources: readonly string[], recursive: boolean): Promise<void> {
  for (const src of sources) {
    let st: Awaited<ReturnType<typeof stat>>
    try {
      st = await stat(src)
    } catch (err) {
      throw new ConfigError(`cannot copy '${src}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    if (st.isDirectory() && !recursive)
      throw new ConfigError(`'${src}' is a directory: add -r to copy it with its contents`)
    if (!st.isDirectory() && !st.isFile()) throw new ConfigError(`'${src}' is not a regular file or directory`)
  }
}

/** Copy local `sources` to `dest` on the host behind `sftp`. */
export async function putPaths(
  sftp: SFTPWrapper,
  host: string,
  sources: readonly string[],
  dest: string,
  opts: CopyOptions = {},
): Promise<CopyStats> {
  const stats: CopyStats = { files: 0, directories: 0, bytes: 0 }
  let destStat: Stats | undefined
  try {
    destStat = await remoteStat(sftp, dest)
  } catch (err) {
    throw remoteError(host, dest, err)
  }
  const intoDir = destStat !== undefined && isDir(destStat.mode)
  if (sources.length > 1 && !intoDir) {
    throw new CopyError(`${host}: ${dest}: not a directory (several sources need an existing directory)`, {
      host,
      details: { path: dest },
    })
  }
  for (const src of sources) {
    const target = intoDir ? posix.join(dest, basename(src)) : dest
    await putOne(sftp, host, src, target, opts, stats, 0, new Set())
  }
  return stats
}

async function putOne(
  sftp: SFTPWrapper,
  host: string,
  src: string,
  target: string,
  opts: CopyOptions,
  stats: CopyStats,
  depth: number,
  seen: Set<string>,
): Promise<void> {
  let st: Awaited<ReturnType<typeof stat>>
  try {
    st = await stat(src)
  } catch (err) {
    throw localError(host, src, err)
  }
  const mode = Number(st.mode) & 0o7777
  if (st.isDirectory()) {
    if (opts.recursive !== true) {
      throw new CopyError(`${host}: local ${src} is a directory (use -r)`, { host, details: { path: src } })
    }
    const id = `${st.dev}:${st.ino}`
    if (seen.has(id) || depth >= MAX_DEPTH) {
      throw new CopyError(`${host}: local ${src}: directory loop or deeper than ${MAX_DEPTH} levels`, {
        host,
        details: { path: src },
      })
    }
    seen.add(id)
    try {
      const existing = await remoteStat(sftp, target)
      if (existing === undefined) await sftpCall<void>((cb) => sftp.mkdir(target, { mode }, cb))
      else if (!isDir(existing.mode)) throw new Error('exists and is not a directory')
      await sftpCall<void>((cb) => sftp.chmod(target, mode, cb))
    } catch (err) {
      throw remoteError(host, target, err)
    }
    stats.directories++
    let names: string[]
    try {
      names = (await readdir(src)).sort()
    } catch (err) {
      throw localError(host, src, err)
    }
    for (const name of names) {
      await putOne(sftp, host, join(src, name), posix.join(target, name), opts, stats, depth + 1, seen)
    }
    seen.delete(id)
    return
  }
  if (!st.isFile()) return // sockets, FIFOs and devices are not copied (as pdcp skips them)
  try {
    await sftpCall<void>((cb) =>
      sftp.fastPut(src, target, { mode, concurrency: opts.concurrency ?? 8, chunkSize: CHUNK_BYTES }, (err) =>
        cb(err, undefined),
      ),
    )
    await sftpCall<void>((cb) => sftp.chmod(target, mode, cb))
  } catch (err) {
    throw remoteError(host, target, err)
  }
  stats.files++
  stats.bytes += Number(st.size)
}

/**
 * Copy each remote path in `sources` from the host into the local directory `destDir`, named `basename.HOST`
 * (directories too, with their contents under the new name), as rpdcp and `clush --rcopy` do.
 */
export async function getPaths(
  sftp: SFTPWrapper,
  host: string,
  sources: readonly string[],
  destDir: string,
  opts: CopyOptions = {},
): Promise<CopyStats> {
  const stats: CopyStats = { files: 0, directories: 0, bytes: 0 }
  for (const src of sources) {
    const name = `${posix.basename(src)}.${host.replace(/\//g, '_')}`
    await getOne(sftp, host, src, join(destDir, name), opts, stats, 0)
  }
  return stats
}

async function getOne(
  sftp: SFTPWrapper,
  host: string,
  src: string,
  target: string,
  opts: CopyOptions,
  stats: CopyStats,
  depth: number,
): Promise<void> {
  let st: Stats | undefined
  try {
    st = await remoteStat(sftp, src)
  } catch (err) {
    throw remoteError(host, src, err)
  }
  if (st === undefined) throw new CopyError(`${host}: ${src}: No such file`, { host, details: { path: src } })
  // Local copies keep the permission bits but never set-id bits taken from a remote host.
  const mode = st.mode & 0o777
  if (isDir(st.mode)) {
    if (opts.recursive !== true) {
      throw new CopyError(`${host}: ${src} is a directory (use -r)`, { host, details: { path: src } })
    }
    if (depth >= MAX_DEPTH) {
      throw new CopyError(`${host}: ${src}: deeper than ${MAX_DEPTH} levels`, { host, details: { path: src } })
    }
    try {
      await mkdir(target, { recursive: true, mode: 0o700 })
    } catch (err) {
      throw localError(host, target, err)
    }
    stats.directories++
    let list: Array<{ filename: string }>
    try {
      list = await sftpCall((cb) => sftp.readdir(src, cb))
    } catch (err) {
      throw remoteError(host, src, err)
    }
    for (const e of list.map((x) => x.filename).sort()) {
      if (e === '.' || e === '..') continue
      await getOne(sftp, host, posix.join(src, e), join(target, e), opts, stats, depth + 1)
    }
    await chmod(target, mode).catch((err: unknown) => {
      throw localError(host, target, err)
    })
    return
  }
  if (!isFile(st.mode)) return
  try {
    await sftpCall<void>((cb) =>
      sftp.fastGet(src, target, { concurrency: opts.concurrency ?? 8, chunkSize: CHUNK_BYTES }, (err) =>
        cb(err, undefined),
      ),
    )
  } catch (err) {
    throw remoteError(host, src, err)
  }
  try {
    await chmod(target, mode)
  } catch (err) {
    throw localError(host, target, err)
  }
  stats.files++
  stats.bytes += st.size
}
