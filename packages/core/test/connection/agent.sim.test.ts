import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { HostActor } from '../../src/connection/actor.js'
import { LocalDialGate } from '../../src/connection/dial-gate.js'
import { generateClientKey, startSimFleet } from '../../src/sim/index.js'
import { until } from '../../src/testing/index.js'
import { loadIdentity } from '../../src/trust/keys.js'
import { memoryVerifier, waitForState } from '../support/fixtures.js'

it('authenticates through ssh-agent (SSH_AUTH_SOCK) with no key file, and loads a passphrase key only via the agent', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kay-agent-'))
  const sock = join(dir, 'agent.sock')
  const key = generateClientKey()
  const fleet = await startSimFleet({ hosts: 1, authorizedKeys: [key.publicKey] })
  let agent: ChildProcess | undefined
  let actor: HostActor | undefined
  try {
    // A passphrase-protected copy of the key: without an agent kay refuses it by name; with one it is skipped.
    const keyFile = join(dir, 'id_ed25519')
    await writeFile(keyFile, key.privateKey, { mode: 0o600 })
    await run('ssh-keygen', ['-q', '-p', '-N', 'secret', '-f', keyFile])
    await expect(loadIdentity({ username: 'kay', identityFiles: [keyFile], agent: 'none' })).rejects.toMatchObject({
      code: 'KAY_KEY_ENCRYPTED',
    })

    agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' })
    await until('agent socket', () => existsSync(sock), 5000)
    const plain = join(dir, 'plain')
    await writeFile(plain, key.privateKey, { mode: 0o600 })
    await run('ssh-add', ['-q', plain], { SSH_AUTH_SOCK: sock })

    const identity = await loadIdentity({ username: 'kay', identityFiles: [keyFile], agent: sock })
    expect(identity.keys).toHaveLength(0)
    expect(identity.agent).toBe(sock)
    const h = fleet.hosts[0]!
    actor = new HostActor({
      target: { id: h.name, hostname: h.host, port: h.port, user: 'kay' },
      identity,
      verifier: memoryVerifier(),
      dialGate: new LocalDialGate(),
    })
    actor.start()
    await waitForState(actor, 'ready')
    expect((await actor.run('hostname')).stdout.trim()).toBe(h.name)
  } finally {
    await actor?.close()
    if (agent?.pid && agent.exitCode === null) agent.kill('SIGTERM')
    await fleet.close()
    await rm(dir, { recursive: true, force: true })
  }
})

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, ...env } }, (err, _o, stderr) =>
      err ? reject(new Error(`${cmd}: ${stderr || err.message}`)) : resolve(),
    )
  })
}
