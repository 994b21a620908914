import { connect as netConnect, type Socket } from 'node:net'
import type { Connector, HostTarget } from '../types.js'
import { proxyCommandConnector } from './proxy-command.js'

/** The default connector: TCP with Nagle off (Nagle costs 40+ ms per exchange on small SSH packets). */
export const tcpConnector: Connector = (target) =>
  new Promise((resolve, reject) => {
    const sock: Socket = netConnect({ host: target.hostname, port: target.port })
    sock.setNoDelay(true)
    const onError = (err: Error) => reject(err)
    sock.once('error', onError)
    sock.once('connect', () => {
      sock.removeListener('error', onError)
      resolve(sock)
    })
  })

/** How a host (or a jump chain's first hop) is reached without a jump: its ProxyCommand, or TCP. */
export function directConnector(target: HostTarget): Connector {
  return target.proxyCommand === undefined ? tcpConnector : proxyCommandConnector
}
