/**
 * Host groups in ClusterShell's flat file format (the `local` group source: `/etc/clustershell/groups.d/local.cfg`,
 * formerly `/etc/clustershell/groups`), so an operator's existing groups work as they do with `clush -g` / `-w @NAME`:
 *
 * ```
 * # comment
 * web: web[01-20].dc1 web-canary
 * db: db[1-3]
 * all: @web,@db          # a list may name other groups
 * ```
 *
 * A list is host expressions separated by commas or spaces (pdsh/ClusterShell ranges; see hostlist.ts). ClusterShell's
 * set operators (`!`, `&`, `^`) are refused with a clear error rather than misread as host names.
 */
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../errors.js'

/** Groups referencing groups: deeper than this is a mistake (or a cycle). */
const MAX_DEPTH = 16
const NAME_RE = /^[A-Za-z0-9_.:-]+$/

export interface HostGroups {
  /** Where the groups came from (for messages). */
  readonly source: string
  /** Group names, in file order. */
  names(): string[]
  /**
   * The host expressions of group `name`, with `@other` references replaced by their own lists.
   * @throws ConfigError for an unknown group (naming the known ones), a cycle or a set operator.
   */
  resolve(name: string): string[]
}

/** The groups files kay looks for when `--groups` is not given, first found wins. */
export function defaultGroupsFiles(homeDir: string = os.homedir()): string[] {
  return [join(homeDir, '.config', 'kay', 'groups'), '/etc/clustershell/groups.d/local.cfg', '/etc/clustershell/groups']
}

/** Parse a groups file's text. `source` names it in errors. */
export function parseGroups(text: string, source = 'groups file'): HostGroups {
  const defs = new Map<string, string[]>()
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*$/, '').trim()
    if (line === '') continue
    const colon = line.indexOf(':')
    const name = colon === -1 ? '' : line.slice(0, colon).trim()
    if (colon === -1 || !NAME_RE.test(name)) {
      throw new ConfigError(`${source}:${i + 1}: expected 'NAME: host list', got '${line.slice(0, 60)}'`)
    }
    const items = splitItems(line.slice(colon + 1))
    for (const item of items) {
      if (/[!&^]/.test(item)) {
        throw new ConfigError(
          `${source}:${i + 1}: group '${name}' uses a set operator ('${item}'); kay groups are plain lists`,
        )
      }
    }
    defs.set(name, [...(defs.get(name) ?? []), ...items])
  }
  const resolve = (name: string, path: string[]): string[] => {
    const items = defs.get(name)
    if (items === undefined) {
      const known = [...defs.keys()].slice(0, 12).join(', ')
      throw new ConfigError(
        `unknown group '@${name}' in ${source}${known === '' ? ' (it defines no group)' : ` (groups: ${known})`}`,
      )
    }
    if (path.includes(name) || path.length >= MAX_DEPTH) {
      throw new ConfigError(`group '@${name}' in ${source} refers to itself (${[...path, name].join(' → ')})`)
    }
    return items.flatMap((item) => (item.startsWith('@') ? resolve(item.slice(1), [...path, name]) : [item]))
  }
  return { source, names: () => [...defs.keys()], resolve: (name) => resolve(name, []) }
}

/** Split at commas and whitespace that are not inside `[...]`. */
function splitItems(list: string): string[] {
  const out: string[] = []
  let depth = 0
  let cur = ''
  for (const ch of list) {
    if (ch === '[') depth++
    else if (ch === ']') depth = Math.max(0, depth - 1)
    if (depth === 0 && (ch === ',' || /\s/.test(ch))) {
      if (cur !== '') out.push(cur)
      cur = ''
      continue
    }
    cur += ch
  }
  if (cur !== '') out.push(cur)
  return out
}

/**
 * Load the groups file: `path` when given (it must exist), else the first of {@link defaultGroupsFiles} that exists.
 * @throws ConfigError when none can be read, saying where kay looked and how to create one.
 */
export async function loadGroups(path?: string, homeDir?: string): Promise<HostGroups> {
  const candidates = path === undefined ? defaultGroupsFiles(homeDir) : [path]
  for (const file of candidates) {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (path === undefined && (code === 'ENOENT' || code === 'ENOTDIR')) continue
      throw new ConfigError(`cannot read groups file '${file}': ${code ?? (err as Error).message}`)
    }
    return parseGroups(text, file)
  }
  throw new ConfigError(
    `no groups file found (looked for ${candidates.join(', ')}); create one with lines like 'web: web[01-20]' ` +
      'or pass --groups FILE',
  )
}
