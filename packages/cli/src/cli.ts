#!/usr/bin/env node
// The `kay` executable: run main, set the exit code, and let the event loop drain (close leaves nothing behind).
import { main } from './main.js'

const code = await main(process.argv.slice(2))
process.exitCode = code
// Safety net: if anything were left open, say so instead of hanging the operator's terminal.
setTimeout(() => {
  process.stderr.write('kay: internal: handles still open after exit; exiting\n')
  process.exit(code)
}, 5000).unref()
