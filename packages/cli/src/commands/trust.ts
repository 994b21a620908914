/**
 * `kay trust`: why each host is trusted, and the explicit ways to change it.
 *
 * - `list` prints kay's pins; `list HOST…` prints, per host, every entry that bears on its trust: a pin in kay's
 *   file, an entry of a user or global known_hosts file (which file and line), a `@cert-authority` line (with the
 *   CA's fingerprint), an `@revoked` line — or `none`. HOST is an ssh_config alias, `[user@]host[:port]`, or a name as
 *   `list` prints it (`[addr]:port`, comma lists).
 * - `forget HOST…` removes the host's pins from kay's file (never from the user's known_hosts files).
 * - `repin HOST…` dials the host (the key exchange only, no login), shows the key it presents next to the keys known
 *   for it, and pins it after a confirmation on the terminal, or with `--yes`. Without a terminal and without
 *   `--yes` it refuses at once (exit 1).
 */

import { createInterface, type Interface } from 'node:readline'
import {
  ConfigError,
  defaultPinFile,
  expandHostList,
  fingerprint,
  type HostTarget,
  type KayError,
  KnownHostsStore,
  keyTypeOf,
  loadSshConfig,
  parseCertificate,
  probeHostKey,
  type SshConfig,
  type TrustExplanation,
  toKayError,
} from '@kay/core'
import { verdictError } from '@kay/core/internal'
import { type ConnectionOptions, DEFAULTS, type ParsedCommand } from '../args.js'
import { EXIT, type ExitCode, exitCodeFor } from '../help.js'
import { errorLine, type Io } from './common.js'

/** Where repin reads its confirmation from (a terminal). */
export interface TrustInput {
  stream: NodeJS.ReadableStream
  isTTY: boolean
}

export async function cmdTrust(
  cmd: ParsedCommand & { command: 'trust' },
  io: Io,
  input: TrustInput = { stream: process.stdin, isTTY: process.stdin.isTTY === true },
): Promise<ExitCode> {
  if (cmd.action === 'repin' && !cmd.yes && !input.isTTY) {
    throw new ConfigError(
      `'kay trust repin' asks before it pins and there is no terminal to ask on; check the host's key, then add --yes`,
    )
  }
  const store = new KnownHostsStore({
    path: cmd.connection.knownHosts ?? defaultPinFile(),
    policy: cmd.connection.strictHostKeyChecking,
  })
  if (cmd.action === 'list' && cmd.hosts.length === 0) {
    for (const e of await store.list()) {
      const source = e.marker === 'cert-authority' ? 'ca' : (e.marker ?? 'pin')
      io.out.write(`${e.hosts.join(',')}  ${source}  ${e.keyType}  ${e.fingerprint}  ${e.file}:${e.line}\n`)
    }
    return EXIT.ok
  }
  const config = await loadSshConfig(cmd.connection.sshConfig)
  const targets = await Promise.all(
    cmd.hosts
      .flatMap(expandTrustHost)
      .map(async (h) => ({ name: h, target: await resolveTrustHost(config, h, cmd.connection) })),
  )
  switch (cmd.action) {
    case 'list':
      return list(store, targets, io)
    case 'forget': {
      const n = await store.forget(targets.map((t) => t.target))
      io.out.write(`removed ${n} pin(s)\n`)
      for (const { name, target } of targets) {
        for (const e of await store.explain(target)) {
          if (e.source === 'known-hosts' || e.source === 'ca') {
            io.err.write(
              `kay: ${name}: still trusted by ${e.file}:${e.line} (${e.source}); kay only edits its own pins\n`,
            )
          }
        }
      }
      return EXIT.ok
    }
    case 'repin':
      return repin(store, targets, cmd, io, input)
  }
}

/** `[addr]:port` as known_hosts writes it, with an optional user. */
const KNOWN_HOSTS_NAME = /^(?:([^@[\]]+)@)?\[([^\]]+)\]:(\d+)$/

/** pdsh-style expressions (`web[1-3]`) expand as for the other commands; known_hosts names stay as they are. */
function expandTrustHost(host: string): string[] {
  return KNOWN_HOSTS_NAME.test(host) || host.startsWith('|') ? [host] : expandHostList(host)
}

/** A HOST as the operator wrote it, resolved through ssh_config (known_hosts `[addr]:port` names accepted). */
async function resolveTrustHost(config: SshConfig, host: string, conn: ConnectionOptions): Promise<HostTarget> {
  if (host.startsWith('|')) {
    throw new ConfigError(`'${host.slice(0, 12)}…' is a hashed known_hosts name; name the host instead`)
  }
  // `[host]:port` is how known_hosts (and `kay trust list`) writes a host on another port.
  const m = KNOWN_HOSTS_NAME.exec(host)
  const spec = m ? `${m[1] ? `${m[1]}@` : ''}${(m[2] as string).includes(':') ? `[${m[2]}]` : m[2]}:${m[3]}` : host
  // -l wins over ssh_config's User, as on ssh's command line.
  return config.resolve(spec, conn.user === undefined ? {} : { user: conn.user })
}

const SOURCE_NAME: Record<TrustExplanation['source'], string> = {
  pin: 'pin',
  'known-hosts': 'known_hosts',
  ca: 'ca',
  revoked: 'revoked',
}

function explanationLine(name: string, e: TrustExplanation): string {
  const notes: string[] = []
  if (e.source === 'ca') notes.push(`@cert-authority ${e.hosts.join(',')}`)
  if (e.source === 'revoked') notes.push(`@revoked ${e.hosts.join(',')}`)
  if (!e.name.startsWith('[') && name !== e.name && e.source !== 'pin') notes.push(`port-less name ${e.name}`)
  const note = notes.length > 0 ? `  (${notes.join('; ')})` : ''
  return `${name}  ${SOURCE_NAME[e.source]}  ${e.keyType}  ${e.fingerprint}  ${e.file}:${e.line}${note}\n`
}

async function list(
  store: KnownHostsStore,
  targets: ReadonlyArray<{ name: string; target: HostTarget }>,
  io: Io,
): Promise<ExitCode> {
  // Two names for one host (`web1` and `[10.0.0.1]:22` from list's own output) print its entries once.
  const printed = new Set<string>()
  for (const { name, target } of targets) {
    const entries = await store.explain(target)
    if (entries.length === 0) {
      io.out.write(`${name}  none  (no pin, known_hosts entry or CA: pinned on first use under accept-new)\n`)
      continue
    }
    for (const e of entries) {
      const key = `${target.hostname}\0${target.port}\0${e.file}\0${e.line}`
      if (printed.has(key)) continue
      printed.add(key)
      io.out.write(explanationLine(name, e))
    }
  }
  return EXIT.ok
}

/** Ask `question` on the terminal; true for y/yes; false for anything else, end of input or Ctrl-C. */
function confirm(rl: Interface, io: Io, question: string): Promise<boolean> {
  return new Promise((resolve) => {
    io.err.write(question)
    const done = (answer: boolean) => {
      rl.off('close', onClose)
      rl.off('line', onLine)
      io.signal.removeEventListener('abort', onClose)
      resolve(answer)
    }
    const onClose = () => done(false)
    const onLine = (answer: string) => done(/^y(es)?$/i.test(answer.trim()))
    rl.on('close', onClose)
    rl.on('line', onLine)
    io.signal.addEventListener('abort', onClose)
  })
}

async function repin(
  store: KnownHostsStore,
  targets: ReadonlyArray<{ name: string; target: HostTarget }>,
  cmd: ParsedCommand & { command: 'trust' },
  io: Io,
  input: TrustInput,
): Promise<ExitCode> {
  const outcomes: Array<{ ok: boolean; errorCode?: string }> = []
  const fail = (name: string, err: KayError) => {
    io.err.write(`${errorLine(name, err)}\n`)
    outcomes.push({ ok: false, errorCode: err.code })
  }
  const rl = cmd.yes ? undefined : createInterface({ input: input.stream, terminal: false })
  let declined = false
  try {
    for (const { name, target } of targets) {
      if (io.signal.aborted) break
      let key: Buffer
      try {
        key = await probeHostKey(target, {
          hostKeyAlgorithms: await store.preferredHostKeyAlgorithms(target),
          // --connect-timeout wins over ssh_config's ConnectTimeout, which wins over the default, as for the other commands.
          timeoutMs: cmd.connection.connectTimeoutMs ?? target.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
        })
      } catch (err) {
        fail(name, toKayError(err, name))
        continue
      }
      // What kay decides now, without writing anything.
      const verdict = await store.verify({ ...target, strictHostKeyChecking: 'yes' }, key)
      if (verdict.kind === 'trusted') {
        const how =
          verdict.source && 'file' in verdict.source
            ? ` (${verdict.source.kind}, ${verdict.source.file}:${verdict.source.line})`
            : ''
        io.out.write(`${name}: already trusted${how}; nothing to repin\n`)
        outcomes.push({ ok: true })
        continue
      }
      if (verdict.kind === 'revoked') {
        fail(name, verdictError(target, verdict) as KayError)
        continue
      }
      // A certificate no trusted CA accepts is judged by its key, as in a connection: that is what gets pinned.
      const cert = parseCertificate(key)
      const plain = cert?.key ?? key
      const fp = fingerprint(plain)
      io.out.write(`${name}: presents ${keyTypeOf(plain)} ${fp}${cert ? ' (in a certificate)' : ''}\n`)
      if (verdict.kind === 'certificate') {
        io.out.write(`${name}: its certificate is refused (${verdict.problem}); a pin trusts its key without the CA\n`)
      }
      const known = (await store.explain(target)).filter((e) => e.source === 'pin' || e.source === 'known-hosts')
      for (const e of known) io.out.write(`${name}: known now: ${e.keyType} ${e.fingerprint} (${e.file}:${e.line})\n`)
      if (known.length === 0) io.out.write(`${name}: known now: nothing\n`)
      if (rl && !(await confirm(rl, io, `Replace the pins of ${name} with ${fp}? [y/N] `))) {
        io.err.write(`${io.signal.aborted ? '\n' : ''}kay: ${name}: not repinned\n`)
        declined = true
        continue
      }
      await store.repin([{ target, key: plain }])
      io.out.write(`${name}: pinned ${keyTypeOf(plain)} ${fp} in ${store.path}\n`)
      for (const e of known) {
        if (e.source === 'known-hosts' && e.fingerprint !== fp) {
          io.err.write(`kay: ${name}: ssh still has the old key in ${e.file}:${e.line} (kay trusts the new pin)\n`)
        }
      }
      outcomes.push({ ok: true })
    }
  } finally {
    rl?.close()
  }
  if (io.signal.aborted) return EXIT.interrupted
  const code = exitCodeFor(outcomes)
  return code === EXIT.ok && declined ? EXIT.usage : code
}
