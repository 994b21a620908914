#!/usr/bin/env node
// Import boundaries of kay's packages (part of `pnpm lint`): `node scripts/check-boundaries.mjs [--root DIR]`.
//
// - core never imports workers or cli; workers never imports cli.
// - inside core, configuration (config/) and trust (trust/) never import the transport (connection/) or
//   collection (collection/).
// - a package reaches another only by its name and an entry its package.json exports (`@kay/core/internal`, not
//   `../../core/src/…` nor `@kay/core/src/…`), and product code never imports the test harness (`@kay/core/testing`,
//   core's src/testing/) — only core's own testing/ may.
// Prints one line per crossing (file:line: rule) and exits 1 if there is any.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const args = process.argv.slice(2)
const rootIdx = args.indexOf('--root')
const root = resolve(rootIdx >= 0 ? args[rootIdx + 1] : join(dirname(fileURLToPath(import.meta.url)), '..'))
const packagesDir = join(root, 'packages')

/** What each package may import from the others (by directory name). */
const ALLOWED = { core: [], workers: ['core'], cli: ['core', 'workers'] }
/** Inside core: areas and the areas they must not import. */
const CORE_FORBIDDEN = { config: ['connection', 'collection'], trust: ['connection', 'collection'] }

const names = new Map() // '@kay/core' -> 'core'
const entries = new Map() // 'core' -> Set of export keys ('.', './internal', ...)
for (const dir of readdirSync(packagesDir)) {
  const manifest = join(packagesDir, dir, 'package.json')
  if (!existsSync(manifest)) continue
  const m = JSON.parse(readFileSync(manifest, 'utf8'))
  names.set(m.name, dir)
  entries.set(dir, new Set(Object.keys(m.exports ?? { '.': null })))
}

const problems = []
for (const pkg of entries.keys()) {
  const src = join(packagesDir, pkg, 'src')
  if (existsSync(src)) for (const file of walk(src)) check(pkg, file)
}
for (const p of problems) console.log(p)
if (problems.length > 0) {
  console.log(`check-boundaries: ${problems.length} import(s) cross a boundary`)
  process.exit(1)
}

function* walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) yield* walk(path)
    else if (/\.(ts|mts|mjs|js)$/.test(name)) yield path
  }
}

/** Import and export-from specifiers with their line numbers (static and dynamic imports). */
function specifiers(text) {
  const out = []
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)(['"])([^'"\n]+)\1/gm
  for (const m of text.matchAll(re)) out.push({ spec: m[2], line: text.slice(0, m.index).split('\n').length })
  return out
}

/** The package and area (first folder under src/) of an absolute path, if it is in a package's src. */
function locate(path) {
  const rel = relative(packagesDir, path).split(sep)
  if (rel[0] === '..' || rel[1] !== 'src') return { pkg: rel[0] === '..' ? undefined : rel[0], area: undefined }
  return { pkg: rel[0], area: rel.length > 3 ? rel[2] : '' }
}

function check(pkg, file) {
  const from = locate(file)
  const where = relative(root, file)
  for (const { spec, line } of specifiers(readFileSync(file, 'utf8'))) {
    const at = `${where}:${line}`
    let to
    if (spec.startsWith('.')) {
      to = locate(resolve(dirname(file), spec))
      if (to.pkg !== pkg) {
        problems.push(`${at}: '${spec}' reaches into another package by path: import it by name and a public entry`)
        continue
      }
    } else {
      const m = /^(@kay\/[^/]+)(\/.*)?$/.exec(spec)
      if (!m) continue
      const target = names.get(m[1])
      if (target === undefined) continue
      const entry = `.${m[2] ?? ''}`
      if (target !== pkg && !ALLOWED[pkg]?.includes(target)) {
        problems.push(`${at}: ${pkg} must not import ${target} ('${spec}')`)
        continue
      }
      if (!entries.get(target).has(entry)) {
        problems.push(`${at}: '${spec}' is not an entry of ${m[1]} (its package.json exports)`)
        continue
      }
      to = { pkg: target, area: entry === './testing' ? 'testing' : undefined }
    }
    if (to.area === 'testing' && !(pkg === 'core' && from.area === 'testing')) {
      problems.push(`${at}: product code must not import the test harness ('${spec}')`)
      continue
    }
    if (pkg === 'core' && to.pkg === 'core' && CORE_FORBIDDEN[from.area]?.includes(to.area)) {
      problems.push(`${at}: core/${from.area} must not import core/${to.area} ('${spec}')`)
    }
  }
}
