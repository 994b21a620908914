import { createHash } from 'node:crypto'
import type { HostActor } from '../../src/connection/actor.js'
import { generateClientKey } from '../../src/sim/index.js'
import type { ActorState, HostKeyVerdict, HostKeyVerifier, HostStatus, Identity } from '../../src/types.js'

/** An in-memory TOFU verifier for actor tests (the real one lives in trust/known-hosts.ts). */
export function memoryVerifier(): HostKeyVerifier & { pins: Map<string, string>; calls: number } {
  const pins = new Map<string, string>()
  const v = {
    pins,
    calls: 0,
    async verify(target: { id: string }, key: Buffer): Promise<HostKeyVerdict> {
      v.calls++
      const fp = `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`
      const known = pins.get(target.id)
      if (known === undefined) {
        pins.set(target.id, fp)
        return { kind: 'pinned', fingerprint: fp }
      }
      return known === fp ? { kind: 'trusted' } : { kind: 'mismatch', expected: [known], offered: fp }
    },
  }
  return v
}

export function clientIdentity(username = 'kay'): { identity: Identity; publicKey: string } {
  const k = generateClientKey()
  return { identity: { username, keys: [{ key: k.parsed, source: 'test-key' }] }, publicKey: k.publicKey }
}

/** Resolves when the actor reaches `state` (bounded: rejects after `ms` of real time). */
export function waitForState(actor: HostActor, state: ActorState, ms = 5000): Promise<void> {
  return waitForStatus(actor, (s) => s.state === state, ms, state).then(() => undefined)
}

/**
 * Resolves with the first status (the current one, or one the actor emits) that satisfies `pred`; bounded: rejects
 * after `ms` of real time, naming `what`.
 */
export function waitForStatus(
  actor: HostActor,
  pred: (s: HostStatus) => boolean,
  ms = 5000,
  what = 'the status wanted',
): Promise<HostStatus> {
  const now = actor.status()
  if (pred(now)) return Promise.resolve(now)
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      actor.off('state', on)
      reject(new Error(`${actor.id}: still ${actor.state} after ${ms} ms, wanted ${what}`))
    }, ms)
    const on = (s: HostStatus) => {
      if (pred(s)) {
        clearTimeout(t)
        actor.off('state', on)
        resolve(s)
      }
    }
    actor.on('state', on)
  })
}

/** True if the promise is already settled after the current microtasks drain (no timers, no I/O). */
export async function settledNow(p: Promise<unknown>): Promise<boolean> {
  let settled = false
  p.then(
    () => {
      settled = true
    },
    () => {
      settled = true
    },
  )
  for (let i = 0; i < 5; i++) await Promise.resolve()
  return settled
}
