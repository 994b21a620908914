import { execFile } from 'node:child_process'
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type Server as NetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import ssh2, { type AuthContext, type ParsedKey } from 'ssh2'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { isKayError } from '../../src/errors.js'
import { authHandlerFor, clearKeyCache, createAuthState, loadIdentity } from '../../src/trust/keys.js'
import type { Identity } from '../../src/types.js'

const run = promisify(execFile)
let dir: string
let agentServer: NetServer
let agentSock: string
const servers: ssh2.Server[] = []

async function keygen(name: string, args: string[], passphrase = ''): Promise<string> {
  const path = join(dir, name)
  await run('ssh-keygen', [...args, '-N', passphrase, '-q', '-C', name, '-f', path])
  await chmod(path, 0o600)
  return path
}

let ed: string
let ed2: string
let ecdsa: string
let rsaPem: string
let rsaSmall: string
let encrypted: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kay-keys-'))
  ;[ed, ed2, ecdsa, rsaPem, rsaSmall, encrypted] = await Promise.all([
    keygen('id_ed25519', ['-t', 'ed25519']),
    keygen('second_ed25519', ['-t', 'ed25519']),
    keygen('id_ecdsa', ['-t', 'ecdsa', '-b', '384']),
    keygen('rsa_pem', ['-t', 'rsa', '-b', '2048', '-m', 'PEM']),
    keygen('rsa_small', ['-t', 'rsa', '-b', '1024']),
    keygen('encrypted', ['-t', 'ed25519'], 'sekret'),
  ])
  // Something listening where an agent socket would be: availability is "the socket exists".
  agentSock = join(dir, 'agent.sock')
  agentServer = createServer((s) => s.destroy())
  await new Promise<void>((resolve) => agentServer.listen(agentSock, resolve))
})

afterEach(() => {
  clearKeyCache()
})

afterAll(async () => {
  for (const s of servers) s.close()
  await new Promise<void>((resolve) => agentServer.close(() => resolve()))
  await rm(dir, { recursive: true, force: true })
})

const noAgent = { agent: 'none' as const }

describe('loadIdentity', () => {
  it('loads OpenSSH ed25519 and ECDSA keys and a PEM RSA key of 2048 bits', async () => {
    const id = await loadIdentity({ username: 'u', identityFiles: [ed, ecdsa, rsaPem], ...noAgent })
    expect(id.keys.map((k) => [k.source, k.key.type])).toEqual([
      [ed, 'ssh-ed25519'],
      [ecdsa, 'ecdsa-sha2-nistp384'],
      [rsaPem, 'ssh-rsa'],
    ])
    expect(id.agent).toBeUndefined()
  })

  it('parses each key file once and shares the parsed key between identities', async () => {
    const a = await loadIdentity({ username: 'a', identityFiles: [ed], ...noAgent })
    const b = await loadIdentity({ username: 'b', identityFiles: [ed], ...noAgent })
    expect(a.keys[0]?.key).toBe(b.keys[0]?.key)
  })

  it('refuses a group-readable key file, naming it', async () => {
    const loose = join(dir, 'loose_key')
    await copyFile(ed, loose)
    await chmod(loose, 0o640)
    const err = await loadIdentity({ username: 'u', identityFiles: [loose], ...noAgent }).catch((e: unknown) => e)
    expect(isKayError(err, 'KAY_KEY_PERMISSIONS')).toBe(true)
    expect((err as Error).message).toContain(loose)
    expect((err as Error).message).toContain('0640')
  })

  it('refuses a key path that is a directory as a config error, saying so (not as too-open permissions)', async () => {
    const err = await loadIdentity({ username: 'u', identityFiles: [dir], ...noAgent }).catch((e: unknown) => e)
    expect(isKayError(err, 'KAY_CONFIG')).toBe(true)
    expect((err as Error).message).toBe(
      `'${dir}' is a directory, not a private key file; give the key file itself to -i`,
    )
  })

  it('refuses RSA keys under 2048 bits, public keys and garbage', async () => {
    for (const path of [rsaSmall, `${ed}.pub`]) {
      await chmod(path, 0o600)
      const err = await loadIdentity({ username: 'u', identityFiles: [path], ...noAgent }).catch((e: unknown) => e)
      expect(isKayError(err, 'KAY_KEY_INVALID'), path).toBe(true)
      expect((err as Error).message).toContain(path)
    }
    expect(
      ((await loadIdentity({ username: 'u', identityFiles: [rsaSmall], ...noAgent }).catch((e: unknown) => e)) as Error)
        .message,
    ).toMatch(/1024 bits/)
  })

  it('refuses a passphrase-protected key without an agent and skips it with one', async () => {
    const err = await loadIdentity({ username: 'u', identityFiles: [encrypted], ...noAgent }).catch((e: unknown) => e)
    expect(isKayError(err, 'KAY_KEY_ENCRYPTED')).toBe(true)
    expect((err as Error).message).toContain(encrypted)
    const id = await loadIdentity({ username: 'u', identityFiles: [encrypted, ed], agent: agentSock })
    expect(id.keys.map((k) => k.source)).toEqual([ed])
    expect(id.agent).toBe(agentSock)
    const viaEnv = await loadIdentity({ username: 'u', identityFiles: [encrypted], env: { SSH_AUTH_SOCK: agentSock } })
    expect(viaEnv.agent).toBe(agentSock)
  })

  it('treats a dangling agent socket path as no agent', async () => {
    const err = await loadIdentity({ username: 'u', identityFiles: [encrypted], agent: join(dir, 'gone.sock') }).catch(
      (e: unknown) => e,
    )
    expect(isKayError(err, 'KAY_KEY_ENCRYPTED')).toBe(true)
  })

  it('skips missing default identity files silently but not a missing explicit one', async () => {
    const home = join(dir, 'home')
    await mkdir(join(home, '.ssh'), { recursive: true })
    await copyFile(ecdsa, join(home, '.ssh', 'id_ecdsa'))
    await chmod(join(home, '.ssh', 'id_ecdsa'), 0o600)
    const id = await loadIdentity({ username: 'u', homeDir: home, ...noAgent })
    expect(id.keys.map((k) => k.source)).toEqual([join(home, '.ssh', 'id_ecdsa')])
    const err = await loadIdentity({ username: 'u', identityFiles: [join(dir, 'nope')], ...noAgent }).catch(
      (e: unknown) => e,
    )
    expect(isKayError(err, 'KAY_CONFIG')).toBe(true)
    const lenient = await loadIdentity({
      username: 'u',
      identityFiles: [join(dir, 'nope'), ed],
      skipMissing: true,
      ...noAgent,
    })
    expect(lenient.keys.map((k) => k.source)).toEqual([ed])
  })
})

describe('authHandler', () => {
  it('offers each key, then the agent, then gives up; never password or keyboard-interactive', async () => {
    const id = await loadIdentity({ username: 'u', identityFiles: [ed, ecdsa], agent: agentSock })
    const state = createAuthState(id)
    const answers: unknown[] = []
    const ask = (left: string[] | null) =>
      (state.authHandler as unknown as (l: string[] | null, p: boolean | null, cb: (m: unknown) => void) => void)(
        left,
        null,
        (m) => answers.push(m),
      )
    ask(null)
    ask(['publickey', 'password', 'keyboard-interactive'])
    ask(['publickey', 'password', 'keyboard-interactive'])
    ask(['publickey', 'password', 'keyboard-interactive'])
    expect(answers).toEqual([
      { type: 'publickey', username: 'u', key: id.keys[0]?.key },
      { type: 'publickey', username: 'u', key: id.keys[1]?.key },
      { type: 'agent', username: 'u', agent: agentSock },
      false,
    ])
    expect(state.describeFailure()).toEqual({
      methodsOffered: ['publickey', 'password', 'keyboard-interactive'],
      keysTried: [ed, ecdsa, `agent:${agentSock}`],
    })
  })

  it('stops at once when the server no longer accepts publickey', async () => {
    const id = await loadIdentity({ username: 'u', identityFiles: [ed, ecdsa], ...noAgent })
    const answers: unknown[] = []
    const h = authHandlerFor(id) as unknown as (l: string[] | null, p: boolean, cb: (m: unknown) => void) => void
    h(['password'], false, (m) => answers.push(m))
    expect(answers).toEqual([false])
  })
})

interface SeenAuth {
  method: string
  user: string
  keyAlgo?: string
}

/** An in-process ssh2 server on 127.0.0.1:0 with a custom auth decision. */
async function startServer(
  decide: (ctx: AuthContext, seen: SeenAuth[]) => void,
): Promise<{ port: number; seen: SeenAuth[] }> {
  const hostKey = await readFile(ed2)
  const seen: SeenAuth[] = []
  const server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    client.on('authentication', (ctx) => {
      seen.push({
        method: ctx.method,
        user: ctx.username,
        ...(ctx.method === 'publickey' ? { keyAlgo: ctx.key.algo } : {}),
      })
      decide(ctx, seen)
    })
    client.on('ready', () => client.end())
    client.on('error', () => {})
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, seen }
}

/** Accept publickey only for `allowed`, verifying the signature. */
function acceptKey(allowed: ParsedKey) {
  return (ctx: AuthContext): void => {
    const ok =
      ctx.method === 'publickey' &&
      allowed.getPublicSSH().equals(ctx.key.data) &&
      (ctx.signature === undefined || (ctx.blob !== undefined && allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo)))
    if (ok) ctx.accept()
    else ctx.reject(['publickey'])
  }
}

function connect(
  port: number,
  identity: Identity,
): Promise<{ ok: boolean; state: ReturnType<typeof createAuthState>; error?: Error }> {
  const state = createAuthState(identity)
  const client = new ssh2.Client()
  return new Promise((resolve) => {
    let settled = false
    const done = (ok: boolean, error?: Error) => {
      if (settled) return
      settled = true
      client.end()
      resolve(error ? { ok, state, error } : { ok, state })
    }
    client.on('ready', () => done(true))
    client.on('error', (e) => done(false, e))
    client.on('close', () => done(false, new Error('closed')))
    client.connect({
      host: '127.0.0.1',
      port,
      username: identity.username,
      authHandler: state.authHandler,
      hostVerifier: () => true,
      readyTimeout: 10_000,
    })
  })
}

describe('against an in-process ssh2 server', () => {
  it('authenticates with the second key after the first is refused', async () => {
    const id = await loadIdentity({ username: 'ops', identityFiles: [ed, ecdsa], ...noAgent })
    const { port, seen } = await startServer(acceptKey(id.keys[1]!.key))
    const r = await connect(port, id)
    expect(r.ok).toBe(true)
    expect(r.state.describeFailure().keysTried).toEqual([ed, ecdsa])
    expect(seen.every((s) => s.method === 'publickey' && s.user === 'ops')).toBe(true)
    expect(seen.map((s) => s.keyAlgo)).toContain('ecdsa-sha2-nistp384')
  })

  it('never sends a password to a server that only offers password, and fails with the details', async () => {
    const id = await loadIdentity({ username: 'ops', identityFiles: [ed, rsaPem], ...noAgent })
    const { port, seen } = await startServer((ctx) => ctx.reject(['password', 'keyboard-interactive']))
    const r = await connect(port, id)
    expect(r.ok).toBe(false)
    expect((r.error as Error & { level?: string }).level).toBe('client-authentication')
    expect(seen.map((s) => s.method)).toEqual(['publickey'])
    const err = r.state.toError('web01')
    expect(err.code).toBe('KAY_AUTH_FAILED')
    expect(err.host).toBe('web01')
    expect(err.details).toEqual({ methodsOffered: ['password', 'keyboard-interactive'], keysTried: [ed] })
  })

  it('fails cleanly with no keys at all and never tries another method', async () => {
    const { port, seen } = await startServer((ctx) => ctx.reject(['password']))
    const r = await connect(port, { username: 'ops', keys: [] })
    expect(r.ok).toBe(false)
    expect(seen).toEqual([])
    expect(r.state.toError().message).toMatch(/no keys/)
  })
})
