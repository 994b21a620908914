#!/usr/bin/env node
// The `kay` executable: run main, set the exit code, and let the event loop drain (close leaves nothing behind).
// Name lookups (getaddrinfo) run in libuv's thread pool, one thread each until it returns, and file I/O shares it:
// size it before its first use. The resolver runs the pool less 16 lookups at once (core/connection/resolver.ts), so
// names that time out hold up the rest as little as an idle-cheap pool allows (docs/adr/0009).
import { setFlagsFromString } from 'node:v8'

process.env.UV_THREADPOOL_SIZE ??= '128'
// A collector wakes once per interval and idles in between. After each idle stretch V8's memory reducer ran
// full collections and shrank the heaps (the shard threads' too: their isolates start after this line), so
// the next ticks ran in a shrunken young generation and paid for it in collections (bench/RESULTS.md, "Cost per
// host-tick"). The heaps still collect as usual; they only keep the size the fleet needs.
setFlagsFromString('--no-memory-reducer')
const { main } = await import('./main.js')

const code = await main(process.argv.slice(2))
process.exitCode = code
// Safety net: if anything were left open, say so instead of hanging the operator's terminal.
setTimeout(() => {
  process.stderr.write('kay: internal: handles still open after exit; exiting\n')
  process.exit(code)
}, 5000).unref()
