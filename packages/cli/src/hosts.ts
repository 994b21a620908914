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

/** Resolutions in flight at once: canonicalisation lookups and `Match exec` commands run in parallel, bounded. */
const RESOLVE_CONCURRENCY = 16

/**
 * Turn the command line's host selection into dialable targets: expressions, `@groups` and host files are expanded,
 * ssh_config is applied to each as `ssh -G` would (flags such as `-l` and `-i` win over the config, as on ssh's
 * command line), exclusions and `--shard` filter. Order is kept.
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
  const overrides = {
    ...(conn.user === undefined ? {} : { user: conn.user }),
    ...(conn.identityFiles.length === 0 ? {} : { identityFiles: conn.identityFiles }),
  }
  const resolved: Array<HostTarget | undefined> = new Array(expanded.length)
  let next = 0
  let failed = false
  const worker = async () => {
    while (next < expanded.length && !failed) {
      const i = next++
      try {
        resolved[i] = await config.resolve(expanded[i] as string, overrides)
      } catch (err) {
        failed = true
        throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(RESOLVE_CONCURRENCY, expanded.length) }, worker))
  const targets = (resolved as HostTarget[]).filter(
    (t) => !sel.shard || inShard(t.id, sel.shard.index, sel.shard.count),
  )
  if (targets.length === 0 && sel.shard) {
    throw new ConfigError(
      `no hosts left: --shard ${sel.shard.index + 1}/${sel.shard.count} keeps none of the ${expanded.length} selected`,
    )
  }
  return targets
}
