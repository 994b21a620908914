/**
 * The child-process side of `spawnSimFleet`: starts a fleet from the options the parent sends over IPC and
 * answers control calls. Exits when the parent closes it or dies (IPC disconnect) — never left orphaned.
 */
import { toKayError } from '../errors.js'
import { startSimFleet } from './fleet.js'
import { type ChildMessage, isParentMessage, type ParentMessage } from './protocol.js'
import type { RestartOptions, SimFleet, SimHostSettings } from './types.js'

let fleet: SimFleet | undefined
let exiting = false

function send(msg: ChildMessage): void {
  if (process.connected) process.send?.(msg)
}

async function shutdown(code: number): Promise<void> {
  if (exiting) return
  exiting = true
  // Bounded: a close that hangs must not keep an orphan alive.
  const deadline = setTimeout(() => process.exit(code), 5000)
  deadline.unref()
  await fleet?.close().catch(() => {})
  if (process.connected) process.disconnect()
  process.exit(code)
}

async function call(msg: Extract<ParentMessage, { kind: 'kay-sim:call' }>): Promise<unknown> {
  const f = fleet
  if (!f) throw new Error('fleet not started')
  const [which, arg] = msg.args as [number | string, unknown]
  switch (msg.method) {
    case 'setFault':
      return f.setFault(which, arg as SimHostSettings)
    case 'drop':
      return f.drop(which)
    case 'restart':
      return await f.restart(which, arg as RestartOptions | undefined)
    case 'stats':
      return f.stats()
    case 'resetStats':
      return f.resetStats()
    case 'close':
      await f.close()
      return undefined
  }
}

process.on('message', (raw: unknown) => {
  if (!isParentMessage(raw)) return
  if (raw.kind === 'kay-sim:start') {
    if (fleet) return
    startSimFleet(raw.opts).then(
      (f) => {
        fleet = f
        send({ kind: 'kay-sim:ready', hosts: [...f.hosts] })
      },
      (err: unknown) => {
        send({ kind: 'kay-sim:failed', error: toKayError(err).toJSON() })
        void shutdown(1)
      },
    )
    return
  }
  call(raw).then(
    (value) => {
      send({ kind: 'kay-sim:reply', id: raw.id, ok: true, value: value ?? null })
      if (raw.method === 'close') void shutdown(0)
    },
    (err: unknown) => send({ kind: 'kay-sim:reply', id: raw.id, ok: false, error: toKayError(err).toJSON() }),
  )
})

// The parent died or let go of us: close everything and exit.
process.on('disconnect', () => void shutdown(0))

if (!process.send) {
  process.stderr.write('kay sim: this entry is started by spawnSimFleet() (needs an IPC channel)\n')
  process.exit(2)
}
