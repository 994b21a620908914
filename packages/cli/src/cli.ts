#!/usr/bin/env node
// The `kay` executable: run main, set the exit code, and let the event loop drain (close leaves nothing behind).
// Name lookups (getaddrinfo) run in libuv's thread pool, which file I/O shares: size it before its first use, so the
// resolver's lookups in flight (half the pool: core/connection/resolver.ts) never take every thread.
process.env.UV_THREADPOOL_SIZE ??= '32'
const { main } = await import('./main.js')

const code = await main(process.argv.slice(2))
process.exitCode = code
// Safety net: if anything were left open, say so instead of hanging the operator's terminal.
setTimeout(() => {
  process.stderr.write('kay: internal: handles still open after exit; exiting\n')
  process.exit(code)
}, 5000).unref()
