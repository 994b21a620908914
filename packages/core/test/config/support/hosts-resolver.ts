/**
 * A {@link NameResolver} over an /etc/hosts text, answering as glibc's `files` source answers getaddrinfo(3): a
 * name matches a line when it equals (ignoring case) any name on it, exactly (no trailing-dot or search-domain
 * handling); the canonical name is the first name of the first matching line. Tests give kay this resolver and give
 * the real ssh the same file, so neither ever asks a DNS server.
 */
import { isIP } from 'node:net'
import type { NameResolver } from '../../../src/config/ssh-canonical.js'

interface Entry {
  address: string
  family: 4 | 6
  names: string[]
}

export function hostsFileResolver(text: string): NameResolver & { lookups: string[] } {
  const entries: Entry[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim()
    if (line === '') continue
    const [address, ...names] = line.split(/\s+/)
    const family = isIP(address as string)
    if ((family !== 4 && family !== 6) || names.length === 0) continue
    entries.push({ address: address as string, family, names })
  }
  const lookups: string[] = []
  return {
    lookups,
    async lookup(name, opts) {
      lookups.push(name)
      const lower = name.toLowerCase()
      const hits = entries.filter(
        (e) => (opts.family === 0 || e.family === opts.family) && e.names.some((n) => n.toLowerCase() === lower),
      )
      if (hits.length === 0) return undefined
      const out = { addresses: [...new Set(hits.map((h) => h.address))] }
      return opts.canonicalName ? { ...out, canonicalName: hits[0]?.names[0] as string } : out
    },
  }
}
