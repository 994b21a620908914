import { userInfo } from 'node:os'
import {
  ConfigError,
  expandHostList,
  type HostGroups,
  type HostTarget,
  loadGroups,
  loadSshConfig,
  readHostFile,
} from '@kay/core'
import { inShard } from '@kay/workers'
import type { ConnectionOptions, HostSelection } from './args.js'

/**
 * Turn the command line's host selection into dialable targets: expressions, `@groups` and host files are expanded,
 * ssh_config is applied to each (first obtained value wins, flags override), exclusions and `--shard` filter.
 * @throws ConfigError when nothing is left to run on (an empty selection is the operator's mistake, never a silent 0).
 */
export async function resolveHosts(sel: HostSelection, conn: ConnectionOptions): Promise<HostTarget[]> {
  const config = await loadSshConfig(conn.sshConfig)
  let groups: HostGroups | undefined
  const ofGroups = async (items: readonly string[]): Promise<string[]> => {
    const out: string[] = []
    for (const item of items) {
      if (!item.startsWith('@')) {
        out.push(item)
        continue
      }
      groups ??= await loadGroups(sel.groupsFile)
      out.push(...groups.resolve(item.slice(1)))
    }
    return out
  }
  const specs: string[] = await ofGroups(sel.include)
  for (const f of sel.hostfiles) specs.push(...(await readHostFile(f)))
  if (sel.allConfigHosts) specs.push(...config.aliases())
  if (specs.length === 0)
    throw new ConfigError('no hosts selected (give host specs, -w, -g, --hostfile or --all-config-hosts)')
  const exclude = await ofGroups(sel.exclude)
  for (const f of sel.excludeFiles ?? []) exclude.push(...(await readHostFile(f)))
  const expanded = expandHostList(specs, { exclude })
  if (expanded.length === 0) {
    const all = expandHostList(specs).length
    throw new ConfigError(`no hosts left: -x excludes all ${all} selected host${all === 1 ? '' : 's'}`)
  }
  const user = conn.user
  const defaults = { user: user ?? userInfo().username }
  const targets: HostTarget[] = []
  for (const spec of expanded) {
    const t = config.resolve(spec, defaults)
    // `-l USER` overrides ssh_config's User (a user in the spec itself still wins: it is the most specific).
    if (user !== undefined && !spec.includes('@')) t.user = user
    if (sel.shard && !inShard(t.id, sel.shard.index, sel.shard.count)) continue
    targets.push(t)
  }
  if (targets.length === 0 && sel.shard) {
    throw new ConfigError(
      `no hosts left: --shard ${sel.shard.index + 1}/${sel.shard.count} keeps none of the ${expanded.length} selected`,
    )
  }
  return targets
}
