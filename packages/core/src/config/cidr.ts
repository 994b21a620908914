/** OpenSSH's addr_match_cidr_list (addrmatch.c), for `Match localnetwork`. */
import { addressBytes } from './ssh-canonical.js'

/**
 * Whether `addr` lies in one of the comma-separated networks (`10.0.0.0/8`, `fd00::/8`, a bare address):
 * 1 it does, 0 it does not, -1 the list is malformed (then ssh treats it as no match).
 */
export function addressInCidrList(addr: string, list: string): -1 | 0 | 1 {
  const a = addressBytes(addr)
  if (a === undefined) return 0
  let ret: -1 | 0 | 1 = 0
  for (const entry of list.split(',')) {
    if (entry === '' || entry.length > 46 + 3) return -1
    if (!/^[0-9a-fA-F.:/]*$/.test(entry)) ret = -1
    const slash = entry.indexOf('/')
    const net = addressBytes(slash < 0 ? entry : entry.slice(0, slash))
    if (net === undefined || (slash >= 0 && !/^\d+$/.test(entry.slice(slash + 1)))) return -1
    const bits = net.length * 8
    const len = slash < 0 ? bits : Number(entry.slice(slash + 1))
    if (len > 128) return -1
    if (len > bits) return -1
    if (!prefixOnly(net, len)) return -1
    if (net.length === a.length && samePrefix(a, net, len)) ret = 1
  }
  return ret
}

function prefixOnly(net: number[], len: number): boolean {
  return net.every((byte, i) => {
    const keep = Math.max(0, Math.min(8, len - i * 8))
    const mask = keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff
    return (byte & ~mask & 0xff) === 0
  })
}

function samePrefix(a: number[], b: number[], len: number): boolean {
  for (let i = 0; i < a.length; i++) {
    const keep = Math.max(0, Math.min(8, len - i * 8))
    if (keep === 0) return true
    const mask = (0xff << (8 - keep)) & 0xff
    if (((a[i] as number) & mask) !== ((b[i] as number) & mask)) return false
  }
  return true
}
