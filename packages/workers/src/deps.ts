import { type Identity, KnownHostsStore, loadIdentity, parsePrivateKey } from '@kay/core'
import { RateLimitedDialGate } from '@kay/core/internal'
import type { ShardWorkerData } from './protocol.js'
import type { ShardDeps } from './shard.js'
import { SharedDialGate } from './shared-dial-gate.js'

/** Parse the identity once (per shard, or once in the supervisor to fail fast on a bad key). */
export async function buildIdentity(cfg: ShardWorkerData['config']['identity']): Promise<Identity> {
  const inline = (cfg.keys ?? []).map((text, i) => parsePrivateKey(text, `inline key #${i + 1}`))
  const fromFiles =
    cfg.keyFiles.length > 0 || inline.length === 0
      ? await loadIdentity({
          username: cfg.username,
          identityFiles: cfg.keyFiles,
          ...(cfg.agent === undefined ? {} : { agent: cfg.agent }),
        })
      : { username: cfg.username, keys: [] }
  const identity: Identity = { username: cfg.username, keys: [...inline, ...fromFiles.keys] }
  const agent = 'agent' in fromFiles ? fromFiles.agent : cfg.agent
  if (agent !== undefined && agent !== 'none') identity.agent = agent
  if ('agentCertificates' in fromFiles && fromFiles.agentCertificates) {
    identity.agentCertificates = fromFiles.agentCertificates
  }
  return identity
}

/** What a shard needs from its thread's point of view: the shared gates, the identity and the pin store. */
export async function createShardDeps(data: ShardWorkerData): Promise<ShardDeps> {
  const { config } = data
  const shared = new SharedDialGate(data.gateBuffer, data.shardIndex)
  return {
    // The shared gate caps dials in flight across all shards; the rate limit spreads redial storms in time.
    gate: config.dialRatePerSec > 0 ? new RateLimitedDialGate(shared, { ratePerSec: config.dialRatePerSec }) : shared,
    workGate: new SharedDialGate(data.workGateBuffer, data.shardIndex, { what: 'work' }),
    identity: await buildIdentity(config.identity),
    // Global files: OpenSSH's defaults (/etc/ssh/ssh_known_hosts{,2}) unless a host's GlobalKnownHostsFile says.
    verifier: new KnownHostsStore({
      path: config.trust.knownHostsPath,
      userFiles: config.trust.extraKnownHosts,
      policy: config.trust.policy,
    }),
  }
}
