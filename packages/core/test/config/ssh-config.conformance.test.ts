/**
 * kay's ssh_config resolution against the real OpenSSH client, case by case over the corpus in
 * fixtures/ssh-config/cases. For every host a case names:
 *
 * - `ssh -G` (run in a private namespace as kaytest, see support/ssh-lab.ts) and kay's `resolve` must agree on every
 *   field kay uses: HostName, User, Port, the host as given (%n), IdentityFile, CertificateFile, IdentitiesOnly,
 *   IdentityAgent, ConnectTimeout, ServerAlive*, UserKnownHostsFile, GlobalKnownHostsFile, HostKeyAlias,
 *   StrictHostKeyChecking, ProxyCommand and ProxyJump;
 * - where ssh only expands at connection time, ssh is made to show its expansion: IdentityFile/CertificateFile
 *   through `-o UserKnownHostsFile=<raw>` (the same expansion), ProxyCommand from `ssh -v`'s "Executing proxy
 *   command", and ProxyJump from the arguments ssh passes to the hop's ssh (a recording stand-in), whose own
 *   resolution is compared hop by hop;
 * - where ssh refuses (`-G` fails, or it would fail to connect), kay must refuse with KAY_CONFIG, naming the same
 *   file and line when ssh names one.
 */
import { randomUUID } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSshConfig, type SshConfig, type SshConfigOptions } from '../../src/config/ssh-config.js'
import { filesSystemDb } from '../../src/config/ssh-system.js'
import { expandProxyCommand } from '../../src/connection/proxy-command.js'
import { isKayError } from '../../src/errors.js'
import type { HostTarget } from '../../src/types.js'
import {
  type Case,
  firstErrorLine,
  type Layout,
  layOut,
  loadCases,
  parseG,
  quoteArg,
  type SshG,
  substitute,
} from './support/conformance.js'
import { hostsFileResolver } from './support/hosts-resolver.js'
import { LAB_HOSTNAME, LAB_UID, LAB_USER, Limiter, labAvailable, SshLab } from './support/ssh-lab.js'

const cases = await loadCases()
const limiter = new Limiter(6)
let tmp: string

beforeAll(async () => {
  const why = labAvailable()
  if (why) throw new Error(why)
  tmp = await mkdtemp(join(os.tmpdir(), 'kay-sshcfg-'))
  await chmod(tmp, 0o755)
})

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true })
})

/** What ssh does with one host: its `-G` view, plus what it expands only when it connects. */
interface SshResolution {
  refused?: string
  g?: SshG
  identityFiles?: string[]
  certificateFiles?: string[]
  /** The command ssh runs for ProxyCommand, expanded (after `exec `). */
  proxyRun?: string
  /** ProxyJump: the hop ssh runs (its own resolution, chain included). */
  hop?: SshResolution
}

const DEFAULT_IDS = ['id_rsa', 'id_ecdsa', 'id_ecdsa_sk', 'id_ed25519', 'id_ed25519_sk', 'id_xmss', 'id_dsa'].map(
  (f) => `~/.ssh/${f}`,
)

class CaseRun {
  constructor(
    readonly c: Case,
    readonly layout: Layout,
    readonly lab: SshLab,
  ) {}

  ssh(args: string[], extra: Record<string, string> = {}, argv0?: string) {
    return limiter.run(() => this.lab.ssh(args, { ...this.layout.env, ...extra }, argv0))
  }

  /** Expand paths exactly as ssh expands UserKnownHostsFile (tilde, then %tokens and ${VAR}), at most 16 per run. */
  async expandLikeUkhf(args: string[], paths: string[]): Promise<string[] | { refused: string }> {
    const out: string[] = []
    // ssh prints the list space-separated: a path with a space in it is expanded on its own.
    const chunks: string[][] = []
    for (const p of paths) {
      const last = chunks[chunks.length - 1]
      if (/\s/.test(p) || last === undefined || last.length >= 16 || last.some((q) => /\s/.test(q))) chunks.push([p])
      else last.push(p)
    }
    for (const chunk of chunks) {
      const r = await this.ssh(['-o', `UserKnownHostsFile=${chunk.map(quoteArg).join(' ')}`, ...args])
      if (r.status !== 0) return { refused: r.stderr }
      const line = parseG(r.stdout).get('userknownhostsfile')?.[0] ?? ''
      out.push(...(chunk.length === 1 ? [line] : line.split(' ')))
    }
    return out
  }

  async resolve(args: string[], depth = 0): Promise<SshResolution> {
    if (depth > 10) return { refused: 'ProxyJump chain too deep' }
    const r = await this.ssh(['-G', ...args])
    if (r.status !== 0) return { refused: r.stderr }
    const g = parseG(r.stdout)
    const res: SshResolution = { g }
    const ids = (g.get('identityfile') ?? []).filter((p) => p.toLowerCase() !== 'none')
    if (ids.length > 0) {
      const x = await this.expandLikeUkhf(['-G', ...args], ids)
      if ('refused' in x) return x
      res.identityFiles = x
    }
    const certs = g.get('certificatefile') ?? []
    if (certs.length > 0) {
      const x = await this.expandLikeUkhf(['-G', ...args], certs)
      if ('refused' in x) return x
      res.certificateFiles = x
    }
    if (g.has('proxyjump') || g.has('proxycommand')) {
      const out = join(this.layout.root, 'out', randomUUID())
      const v = await this.ssh(['-v', ...args], { KAY_FAKE_OUT: out }, join(this.layout.bin, 'ssh'))
      const ran = /Executing proxy command: exec (.*)$/m.exec(v.stderr)
      if (!ran) return { refused: v.stderr }
      if (g.has('proxyjump')) {
        let argv: string[]
        try {
          argv = (await readFile(out, 'utf8')).split('\0').slice(1, -1)
        } catch {
          return { refused: `the ProxyJump command did not run: ${ran[1]}` }
        }
        const hopArgs: string[] = []
        for (let i = 0; i < argv.length; i++) {
          if (argv[i] === '-W') i++
          else if (!/^-v+$/.test(argv[i] as string)) hopArgs.push(argv[i] as string)
        }
        const hop = await this.resolve(hopArgs, depth + 1)
        if (hop.refused !== undefined) return { refused: `hop ${hopArgs.join(' ')}: ${hop.refused}` }
        res.hop = hop
      } else res.proxyRun = ran[1] as string
    }
    return res
  }

  /** Every difference between kay's target (with the hops that lead to it) and ssh's resolution. */
  compare(t: HostTarget, chain: HostTarget[] | undefined, r: SshResolution, at: string): string[] {
    const g = r.g as SshG
    const one = (k: string) => g.get(k)?.[0]
    const out: string[] = []
    const eq = (what: string, kay: unknown, ssh: unknown) => {
      if (!isDeepStrictEqual(kay, ssh))
        out.push(`${at} ${what}: kay ${JSON.stringify(kay)}, ssh ${JSON.stringify(ssh)}`)
    }
    const env = this.layout.env
    eq('host (%n)', t.originalHost, one('host'))
    eq('hostname', t.hostname, one('hostname'))
    eq('user', t.user, one('user'))
    eq('port', String(t.port), one('port'))
    if (t.identityFiles === undefined) eq('identityfile (defaults)', DEFAULT_IDS, g.get('identityfile'))
    else eq('identityfile', t.identityFiles, r.identityFiles ?? [])
    eq('certificatefile', t.certificateFiles ?? [], r.certificateFiles ?? [])
    eq('identitiesonly', t.identitiesOnly === true ? 'yes' : 'no', one('identitiesonly'))
    const agent = one('identityagent')
    const agentUse =
      agent === undefined
        ? undefined
        : agent === 'SSH_AUTH_SOCK'
          ? (env.SSH_AUTH_SOCK ?? 'none')
          : /^\$[^{]/.test(agent)
            ? (env[agent.slice(1)] ?? 'none')
            : agent
    eq('identityagent', t.identityAgent, agentUse)
    const ct = one('connecttimeout')
    eq('connecttimeout', t.connectTimeoutMs, ct === 'none' || ct === '0' ? undefined : Number(ct) * 1000)
    const sai = one('serveraliveinterval')
    eq('serveraliveinterval', t.keepaliveIntervalMs, sai === '0' ? undefined : Number(sai) * 1000)
    eq('serveralivecountmax', String(t.keepaliveCountMax ?? 3), one('serveralivecountmax'))
    const ukh = one('userknownhostsfile')
    eq('userknownhostsfile', t.userKnownHostsFiles?.join(' '), ukh === 'none' ? '' : ukh)
    const gkh = one('globalknownhostsfile')
    eq('globalknownhostsfile', t.globalKnownHostsFiles, gkh === 'none' ? [] : gkh?.split(' ').map((p) => this.tilde(p)))
    eq('hostkeyalias', t.hostKeyAlias, one('hostkeyalias'))
    const strict = one('stricthostkeychecking')
    const want = { true: 'yes', false: 'no', 'accept-new': 'accept-new' }[strict as string]
    if (strict === 'ask') {
      if (t.strictHostKeyChecking !== undefined && t.strictHostKeyChecking !== 'yes')
        eq('stricthostkeychecking', t.strictHostKeyChecking, 'ask')
    } else eq('stricthostkeychecking', t.strictHostKeyChecking, want)
    eq('proxycommand', t.proxyCommand, one('proxycommand'))
    if (r.proxyRun !== undefined && t.proxyCommand !== undefined) {
      eq('proxycommand as run', expandProxyCommand(t.proxyCommand, t), r.proxyRun)
    }
    const hops = chain !== undefined && chain.length > 0 ? chain : undefined
    if (r.hop === undefined)
      eq(
        'proxyjump hops',
        hops?.map((h) => h.id),
        undefined,
      )
    else if (hops === undefined) out.push(`${at} proxyjump: kay has no hops, ssh jumps via ${one('proxyjump')}`)
    else {
      const last = hops[hops.length - 1] as HostTarget
      out.push(...this.compare(last, hops.slice(0, -1), r.hop, `${at} → hop ${last.originalHost}`))
    }
    return out
  }

  /** `~` and `~user` in GlobalKnownHostsFile, which ssh expands from the account database (the lab's passwd). */
  tilde(p: string): string {
    const m = /^~([^/]*)(\/.*)?$/.exec(p)
    if (!m) return p
    const name = m[1] === '' ? LAB_USER : (m[1] as string)
    const line = this.layout.passwdText.split('\n').find((l) => l.startsWith(`${name}:`))
    const home = line?.split(':')[5] as string
    return `${home}/${(m[2] ?? '/').replace(/^\/+/, '')}`
  }
}

function splitSpec(spec: string): { user?: string; host: string; port?: string } {
  const m = /^(?:([^@]+)@)?(\[[^\]]+\]|[^:]+|[^@]*:[^@]*:[^@]*)(?::(\d+))?$/.exec(spec)
  if (!m) throw new Error(`bad spec ${spec}`)
  const host = (m[2] as string).replace(/^\[(.*)\]$/, '$1')
  return { ...(m[1] ? { user: m[1] } : {}), host, ...(m[3] ? { port: m[3] } : {}) }
}

function overridesOf(flags: string[]) {
  const o: { user?: string; port?: number; identityFiles: string[]; options: string[] } = {
    identityFiles: [],
    options: [],
  }
  for (let i = 0; i < flags.length; i++) {
    const v = flags[++i] as string
    switch (flags[i - 1]) {
      case '-l':
        o.user ??= v
        break
      case '-p':
        o.port ??= Number(v)
        break
      case '-i':
        o.identityFiles.push(v)
        break
      case '-o':
        o.options.push(v)
        break
      default:
        throw new Error(`unsupported flag ${flags[i - 1]}`)
    }
  }
  return o
}

function kayOptions(l: Layout): SshConfigOptions {
  return {
    homeDir: l.home,
    localUser: LAB_USER,
    uid: LAB_UID,
    env: l.env,
    localHostname: LAB_HOSTNAME,
    systemConfig: l.systemConfig,
    resolver: hostsFileResolver(l.hostsText),
    system: filesSystemDb({ passwd: l.passwdText, group: l.groupText, services: l.servicesText }),
    localAddresses: () => [],
  }
}

async function runCase(c: Case): Promise<void> {
  const root = join(tmp, c.name)
  const layout = await layOut(c, root)
  await mkdir(join(root, 'out'))
  await chmod(join(root, 'out'), 0o777)
  const lab = await SshLab.start(layout.etc)
  const problems: string[] = []
  try {
    const run = new CaseRun(c, layout, lab)
    let config: SshConfig | undefined
    let loadError: unknown
    try {
      config = await loadSshConfig(layout.config, kayOptions(layout))
    } catch (err) {
      loadError = err
    }
    const flags = c.flags.map((f) => substitute(f, layout))
    const o = overridesOf(flags)
    const oFlags = flags.filter((_, i) => flags[i - (i % 2)] === '-o')
    const otherFlags = flags.filter((_, i) => flags[i - (i % 2)] !== '-o')
    // Hosts of a case run side by side; the limiter bounds the ssh processes.
    const perSpec = async ({ spec, refuse }: { spec: string; refuse: boolean }): Promise<string[]> => {
      const problems: string[] = []
      const s = splitSpec(spec)
      const args = [
        ...(layout.config ? ['-F', layout.config] : []),
        ...oFlags,
        ...(s.user ? ['-l', s.user] : []),
        ...(s.port ? ['-p', s.port] : []),
        ...otherFlags,
        s.host,
      ]
      const ssh = await run.resolve(args)
      let kay: HostTarget | undefined
      let kayError: unknown = loadError
      if (config) {
        try {
          kay = await config.resolve(spec, {
            ...(o.user === undefined ? {} : { user: o.user }),
            ...(o.port === undefined ? {} : { port: o.port }),
            identityFiles: o.identityFiles,
            options: o.options,
          })
        } catch (err) {
          kayError = err
        }
      }
      const sshRefused = ssh.refused !== undefined
      const expected = c.extension === undefined ? refuse : true
      if (sshRefused !== expected) {
        problems.push(
          `${spec}: the corpus says ssh ${expected ? 'refuses' : 'resolves'} it, ssh ${sshRefused ? `refused: ${ssh.refused?.trim()}` : 'resolved it'}`,
        )
        return problems
      }
      if (c.extension !== undefined) {
        if (kay === undefined)
          problems.push(`${spec}: kay extension ${c.extension}: kay refused: ${(kayError as Error)?.message}`)
        return problems
      }
      if (sshRefused) {
        if (kay !== undefined) {
          problems.push(`${spec}: ssh refuses (${ssh.refused?.trim()}), kay resolved ${JSON.stringify(kay)}`)
          return problems
        }
        if (!isKayError(kayError, 'KAY_CONFIG')) {
          problems.push(`${spec}: kay failed with ${String(kayError)} instead of KAY_CONFIG`)
          return problems
        }
        const line = firstErrorLine(ssh.refused as string)
        if (line) {
          const file = line.file.replace(/^\/etc\/ssh\//, `${layout.etc.sshDir}/`)
          const msg = (kayError as Error).message
          if (!msg.includes(`${file}:${line.line}`)) {
            problems.push(`${spec}: ssh names ${line.file} line ${line.line}; kay says: ${msg}`)
          }
        }
        return problems
      }
      if (kay === undefined) {
        problems.push(`${spec}: ssh resolves it, kay refused: ${(kayError as Error)?.message}`)
        return problems
      }
      for (const chk of c.checks.filter((x) => x.spec === spec)) {
        const got = ssh.g?.get(chk.keyword)?.join(' ')
        if (got !== substitute(chk.value, layout))
          problems.push(`${spec}: check ${chk.keyword}=${chk.value}: ssh says ${got}`)
      }
      problems.push(...run.compare(kay, kay.jump, ssh, spec))
      return problems
    }
    for (const p of await Promise.all(c.specs.map(perSpec))) problems.push(...p)
  } finally {
    await lab.stop()
  }
  expect(problems).toEqual([])
}

describe.concurrent('ssh_config resolution equals ssh -G (OpenSSH client in a private namespace)', () => {
  it('has a corpus of at least 60 cases, with refusals and ProxyJump chains among them', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60)
    expect(cases.flatMap((c) => c.specs).filter((s) => s.refuse).length).toBeGreaterThanOrEqual(20)
    // Every check names a host its case resolves.
    for (const c of cases)
      for (const chk of c.checks)
        expect(
          c.specs.map((s) => s.spec),
          c.name,
        ).toContain(chk.spec)
  })
  for (const c of cases) {
    it(`${c.name}: ${c.description.trim()}`, () => runCase(c), 120_000)
  }
})

describe('the system resolver (what kay uses outside tests)', () => {
  it('answers in the lab exactly as the test resolver answers from the same hosts file', async () => {
    const c = cases[0] as Case
    const layout = await layOut(c, join(tmp, 'system-resolver'))
    const lab = await SshLab.start(layout.etc)
    try {
      const names = [
        'web01.corp.example.com/0',
        'web01.corp.example.com./0',
        'cdn.corp.example.com./0',
        'jenkins/0',
        'Mixed.Corp.Example.COM./0',
        'v6only.corp.example.com./0',
        'v6only.corp.example.com./4',
        'v6only.corp.example.com./6',
        'web01.corp.example.com/6',
        'nosuch.corp.example.com./0',
        'nosuch/0',
      ]
      const script = join(dirname(fileURLToPath(import.meta.url)), 'support', 'resolve-in-lab.ts')
      const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..')
      const r = await lab.run([process.execPath, '--import', 'tsx', script, ...names], { cwd: repo })
      expect(r.stderr).toBe('')
      const lines = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as [string, 0 | 4 | 6, boolean, unknown])
      expect(lines).toHaveLength(names.length * 2)
      const table = hostsFileResolver(layout.hostsText)
      for (const [name, family, canonicalName, answer] of lines) {
        const want = (await table.lookup(name, { family, canonicalName })) ?? null
        // getaddrinfo lists an address once per socket type; the table lists it once.
        const got =
          answer === null
            ? null
            : { ...(answer as object), addresses: [...new Set((answer as { addresses: string[] }).addresses)] }
        expect(got, `${name} family ${family} canonname ${canonicalName}`).toEqual(want)
      }
      // The names the corpus relies on really resolve there, and one that must not, does not.
      expect(lines.find(([n, f, cn]) => n === 'cdn.corp.example.com.' && f === 0 && cn)?.[3]).toMatchObject({
        canonicalName: 'lb-7f3a.elb.cloud.example',
      })
      expect(lines.find(([n]) => n === 'nosuch')?.[3]).toBeNull()
    } finally {
      await lab.stop()
    }
  })
})
