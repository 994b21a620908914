/**
 * The ssh_config conformance corpus: case files (fixtures/ssh-config/cases/*.case), how each is laid out on disk
 * for the real ssh and for kay, and the comparison of `ssh -G` (and, for proxied hosts, of what ssh actually runs)
 * with kay's resolution.
 *
 * A case file:
 *
 *     # What the case is about (free text).
 *     # resolve: web01 ops@db-02 !broken      hosts to resolve; `!` = ssh must refuse this one
 *     # env: KEYDIR=@HOME@/keys               environment for ssh and kay (HOME, SHELL, PATH default sensibly)
 *     # flags: -l alice -i ~/.ssh/extra       command-line flags (kay: ResolveOverrides)
 *     # expect: refuse                        every host is refused
 *     # check: web01 user=deploy port=2222    what `ssh -G` must print (the corpus checks itself)
 *     # kay-extension: localnetwork          ssh 9.2 refuses the file, kay (by design) resolves it
 *     === config                              a file; `config` is given with -F, else ~/.ssh/config is read
 *     Host web01
 *       ...
 *     === ~/.ssh/conf.d/a.conf mode=0664 owner=kaytest group=kaytest
 *     === /etc/ssh/ssh_config                 the system-wide file (default mode only)
 *
 * Placeholders in files and directives: @ROOT@ (the case's directory), @HOME@ (kaytest's home), @BIN@ (fake
 * commands: ssh, nc, ... that record their arguments and exit).
 */
import { chmod, chown, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { argvSplit } from '../../../src/config/ssh-lex.js'

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'ssh-config')

export interface CaseFile {
  path: string
  content: string
  mode?: number
  owner?: string
  group?: string
}

export interface Case {
  name: string
  description: string
  specs: Array<{ spec: string; refuse: boolean }>
  env: Record<string, string>
  flags: string[]
  extension?: string
  /** `# check: spec keyword=value ...`: what `ssh -G` must print for that host (so agreement is never vacuous). */
  checks: Array<{ spec: string; keyword: string; value: string }>
  files: CaseFile[]
  /** A `config` section: the case runs with `-F <root>/config`. */
  explicit: boolean
}

export function parseCase(name: string, text: string): Case {
  const c: Case = { name, description: '', specs: [], env: {}, flags: [], checks: [], files: [], explicit: false }
  let refuseAll = false
  let file: CaseFile | undefined
  for (const line of text.split('\n')) {
    const section = /^=== (\S+)(.*)$/.exec(line)
    if (section) {
      file = { path: section[1] as string, content: '' }
      for (const attr of (section[2] as string).trim().split(/\s+/).filter(Boolean)) {
        const [k, v] = attr.split('=') as [string, string]
        if (k === 'mode') file.mode = Number.parseInt(v, 8)
        else if (k === 'owner') file.owner = v
        else if (k === 'group') file.group = v
        else throw new Error(`${name}: unknown file attribute ${attr}`)
      }
      if (file.path === 'config') c.explicit = true
      c.files.push(file)
      continue
    }
    if (file) {
      file.content += `${line}\n`
      continue
    }
    const d = /^# (resolve|env|flags|expect|kay-extension|check): (.*)$/.exec(line)
    if (!d) {
      c.description += `${line.replace(/^# ?/, '')} `
      continue
    }
    const value = d[2] as string
    switch (d[1]) {
      case 'resolve':
        for (const s of value.trim().split(/\s+/)) {
          c.specs.push(s.startsWith('!') ? { spec: s.slice(1), refuse: true } : { spec: s, refuse: false })
        }
        break
      case 'env':
        for (const kv of argvSplit(value) ?? []) {
          const eq = kv.indexOf('=')
          c.env[kv.slice(0, eq)] = kv.slice(eq + 1)
        }
        break
      case 'flags':
        c.flags.push(...(argvSplit(value) ?? []))
        break
      case 'expect':
        if (value.trim() !== 'refuse') throw new Error(`${name}: expect: ${value}`)
        refuseAll = true
        break
      case 'check': {
        const [spec, ...pairs] = argvSplit(value) ?? []
        for (const p of pairs) {
          const eq = p.indexOf('=')
          c.checks.push({ spec: spec as string, keyword: p.slice(0, eq).toLowerCase(), value: p.slice(eq + 1) })
        }
        break
      }
      case 'kay-extension':
        c.extension = value.trim()
        break
    }
  }
  if (refuseAll) for (const s of c.specs) s.refuse = true
  if (c.specs.length === 0) throw new Error(`${name}: no '# resolve:' line`)
  return c
}

export async function loadCases(): Promise<Case[]> {
  const dir = join(FIXTURES, 'cases')
  const names = (await readdir(dir)).filter((n) => n.endsWith('.case')).sort()
  return Promise.all(names.map(async (n) => parseCase(n.replace(/\.case$/, ''), await readFile(join(dir, n), 'utf8'))))
}

export interface Layout {
  root: string
  home: string
  bin: string
  etc: { passwd: string; group: string; hosts: string; services: string; nsswitch: string; sshDir: string }
  passwdText: string
  groupText: string
  hostsText: string
  servicesText: string
  /** The -F file, when the case has one. */
  config?: string
  systemConfig: string
  env: Record<string, string>
}

const IDS: Record<string, number> = { root: 0, kaytest: 1001, opsbot: 1500, deploy: 1501, staff: 1002 }

/** The fake commands ProxyCommand and ProxyJump run: record their arguments (NUL-separated) and exit. */
const FAKE = '#!/bin/sh\n[ -n "$KAY_FAKE_OUT" ] && printf \'%s\\0\' "$0" "$@" > "$KAY_FAKE_OUT"\nexit 0\n'
export const FAKE_COMMANDS = ['ssh', 'nc', 'ncat', 'socat', 'connect-proxy', 'corkscrew', 'cloudflared', 'aws', 'tsh']

export function substitute(s: string, l: Pick<Layout, 'root' | 'home' | 'bin'>): string {
  return s.replaceAll('@ROOT@', l.root).replaceAll('@HOME@', l.home).replaceAll('@BIN@', l.bin)
}

/** Write a case's world under `root` (which must be reachable by uid 1001). */
export async function layOut(c: Case, root: string): Promise<Layout> {
  const home = join(root, 'home', 'kaytest')
  const bin = join(root, 'bin')
  const etcDir = join(root, 'etc')
  const sshDir = join(etcDir, 'ssh')
  const l0 = { root, home, bin }
  for (const d of [home, join(root, 'home', 'opsbot'), join(root, 'home', 'deploy'), bin, sshDir]) {
    await mkdir(d, { recursive: true, mode: 0o755 })
  }
  for (const d of [root, join(root, 'home'), home, etcDir, sshDir, bin]) await chmod(d, 0o755)
  const etcText = async (n: string) => substitute(await readFile(join(FIXTURES, 'etc', n), 'utf8'), l0)
  const layout: Layout = {
    root,
    home,
    bin,
    etc: {
      passwd: join(etcDir, 'passwd'),
      group: join(etcDir, 'group'),
      hosts: join(etcDir, 'hosts'),
      services: join(etcDir, 'services'),
      nsswitch: join(etcDir, 'nsswitch.conf'),
      sshDir,
    },
    passwdText: await etcText('passwd'),
    groupText: await etcText('group'),
    hostsText: await etcText('hosts'),
    servicesText: await etcText('services'),
    systemConfig: join(sshDir, 'ssh_config'),
    env: {},
  }
  await writeFile(layout.etc.passwd, layout.passwdText)
  await writeFile(layout.etc.group, layout.groupText)
  await writeFile(layout.etc.hosts, layout.hostsText)
  await writeFile(layout.etc.services, layout.servicesText)
  await writeFile(layout.etc.nsswitch, await etcText('nsswitch.conf'))
  await writeFile(layout.systemConfig, '')
  for (const cmd of FAKE_COMMANDS) await writeFile(join(bin, cmd), FAKE, { mode: 0o755 })
  for (const f of c.files) {
    let path: string
    if (f.path === 'config') {
      path = join(root, 'config')
      layout.config = path
    } else if (f.path === '/etc/ssh/ssh_config') path = layout.systemConfig
    else if (f.path.startsWith('~/')) path = join(home, f.path.slice(2))
    else if (f.path.startsWith('~')) {
      const slash = f.path.indexOf('/')
      path = join(root, 'home', f.path.slice(1, slash), f.path.slice(slash + 1))
    } else path = join(root, substitute(f.path, l0).replace(root, ''))
    await mkdir(dirname(path), { recursive: true, mode: 0o755 })
    await writeFile(path, substitute(f.content, l0), { mode: 0o644 })
    if (f.mode !== undefined) await chmod(path, f.mode)
    if (f.owner !== undefined || f.group !== undefined) {
      await chown(path, IDS[f.owner ?? 'root'] ?? 0, IDS[f.group ?? f.owner ?? 'root'] ?? 0)
    }
  }
  layout.env = {
    HOME: home,
    USER: 'kaytest',
    LOGNAME: 'kaytest',
    SHELL: '/bin/sh',
    PATH: `${bin}:/usr/bin:/bin`,
    ...Object.fromEntries(Object.entries(c.env).map(([k, v]) => [k, substitute(v, l0)])),
  }
  return layout
}

/** `ssh -G` output: keyword → values (one per line it printed). */
export type SshG = Map<string, string[]>

export function parseG(stdout: string): SshG {
  const out: SshG = new Map()
  for (const line of stdout.split('\n')) {
    const sp = line.indexOf(' ')
    if (sp < 0) continue
    const k = line.slice(0, sp).toLowerCase()
    out.set(k, [...(out.get(k) ?? []), line.slice(sp + 1)])
  }
  return out
}

/** The file and line ssh names first in a refusal (`/path line 3:` or `/path: line 3:`), when it names one. */
export function firstErrorLine(stderr: string): { file: string; line: number } | undefined {
  const m = /^(\S+?):? line (\d+):/m.exec(stderr)
  return m ? { file: m[1] as string, line: Number(m[2]) } : undefined
}

/** Quote a value for an `-o Keyword=…` argument (argv_split's rules). */
export function quoteArg(s: string): string {
  return /[\s"'\\]/.test(s) ? `"${s.replace(/(["\\])/g, '\\$1')}"` : s
}
