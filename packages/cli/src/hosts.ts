import { ConfigError, expandHostList, type HostTarget, loadSshConfig, readHostFile } from '@kay/core'
import { inShard } from '@kay/workers'
import type { ConnectionOptions, HostSelection } from './args.js'

/** Resolutions in flight at once: canonicalisation lookups and `Match exec` commands run in parallel, bounded. */
const RESOLVE_CONCURRENCY = 16

/**
 * Turn the command line's host selection into dialable targets: expressions and host files are expanded,
 * ssh_config is applied to each as `ssh -G` would (flags such as `-l` and `-i` win over the config, as on ssh's
 * command line), exclusions and `--shard` filter. Order is kept.
 */
export async function resolveHosts(sel: HostSelection, conn: ConnectionOptions): Promise<HostTarget[]> {
  const config = await loadSshConfig(conn.sshConfig)
  const specs: string[] = [...sel.include]
  for (const f of sel.hostfiles) specs.push(...(await readHostFile(f)))
  if (sel.allConfigHosts) specs.push(...config.aliases())
  if (specs.length === 0)
    throw new ConfigError('no hosts selected (give host specs, -w, --hostfile or --all-config-hosts)')
  const expanded = expandHostList(specs, { exclude: sel.exclude })
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
  return (resolved as HostTarget[]).filter((t) => !sel.shard || inShard(t.id, sel.shard.index, sel.shard.count))
}
