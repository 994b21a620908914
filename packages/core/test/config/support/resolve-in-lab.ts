/**
 * Run inside the ssh lab (a namespace whose /etc/hosts and nsswitch.conf are the test's): print what kay's system
 * resolver answers for each name given, as JSON lines `[name, family, canonicalName, answer]`.
 */
import { systemResolver } from '../../../src/config/ssh-canonical.js'

for (const arg of process.argv.slice(2)) {
  const [name, fam] = arg.split('/') as [string, string]
  const family = Number(fam) as 0 | 4 | 6
  for (const canonicalName of [false, true]) {
    const answer = await systemResolver.lookup(name, { family, canonicalName })
    process.stdout.write(`${JSON.stringify([name, family, canonicalName, answer ?? null])}\n`)
  }
}
