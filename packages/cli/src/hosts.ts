import { userInfo } from 'node:os'
import { ConfigError, expandHostList, type HostTarget, loadSshConfig, readHostFile } from '@kay/core'
import { inShard } from '@kay/workers'
import type { ConnectionOptions, HostSelection } from './args.js'

/**
 * Turn the command line's host selection into dialable targets: expressions and host files are expanded,
 * ssh_config is applied to each (first obtained value wins, flags override), exclusions and `--shard` filter.
 */
export async function resolveHosts(sel: HostSelection, conn: ConnectionOptions): Promise<HostTarget[]> {
  const config = await loadSshConfig(conn.sshConfig)
  const specs: string[] = [...sel.include]
  for (const f of sel.hostfiles) specs.push(...(await readHostFile(f)))
  if (sel.allConfigHosts) specs.push(...config.aliases())
  if (specs.length === 0)
    throw new ConfigError('no hosts selected (give host specs, -w, --hostfile or --all-config-hosts)')
  const expanded = expandHostList(specs, { exclude: sel.exclude })
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
  return targets
}
