import { defaultPinFile, KnownHostsStore } from '@kay/core'
import type { ParsedCommand } from '../args.js'
import { EXIT, type ExitCode } from '../help.js'
import type { Io } from './common.js'

export async function cmdTrust(cmd: ParsedCommand & { command: 'trust' }, io: Io): Promise<ExitCode> {
  const store = new KnownHostsStore({
    path: cmd.connection.knownHosts ?? defaultPinFile(),
    userFiles: [],
    globalFiles: [],
  })
  if (cmd.action === 'list') {
    for (const e of await store.list()) io.out.write(`${e.hosts.join(',')}  ${e.keyType}  ${e.fingerprint}\n`)
    return EXIT.ok
  }
  if (cmd.action === 'forget') {
    const n = await store.forget(cmd.hosts)
    io.out.write(`removed ${n} pin(s)\n`)
    return EXIT.ok
  }
  // repin: forget the old pins; the next connection pins the key the host offers now (trust on first use again).
  const n = await store.forget(cmd.hosts)
  io.out.write(`removed ${n} pin(s); the next connection to ${cmd.hosts.join(', ')} pins the key offered then\n`)
  return EXIT.ok
}
