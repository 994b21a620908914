#!/usr/bin/env node
// Installed `kay` bin: runs the built CLI (pnpm build). From sources, use `pnpm kay` at the repository root.
import('../dist/cli.js')
