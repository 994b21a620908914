#!/usr/bin/env node
// Packs the publishable packages into npm tarballs: `node scripts/pack.mjs [--out DIR] [--no-build]`.
//
// Each package is staged in a temporary directory and packed there with `npm pack`:
// - its manifest is the published one: `workspace:*` becomes the exact version, the contributors' `kay-source`
//   condition and the `./testing` entry (the real-sshd harness: repository only) are dropped, devDependencies too;
// - dist/ without the test harness, source maps and build info;
// - @kay/core bundles the PATCHED ssh2 (docs/adr/0014-packages-bundle-patched-ssh2.md): the copy pnpm installed with
//   patches/ssh2@1.17.0.patch applied, with its runtime dependencies, listed in `bundleDependencies`, so a consumer
//   installing from npm gets the same ssh2 as this workspace, never a stock one.
// Prints one tarball path per line on stdout.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const PACKAGES = ['core', 'workers', 'cli']
/** Packages whose installed (patched) copy is shipped inside the tarball, per package directory. */
const BUNDLED = { core: ['ssh2'] }

const args = process.argv.slice(2)
const outIdx = args.indexOf('--out')
const out = resolve(outIdx >= 0 ? args[outIdx + 1] : join(root, '.kay-tmp', 'pack'))
if (!args.includes('--no-build')) {
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b', ...PACKAGES.map(pkgDir)], {
    cwd: root,
    stdio: 'inherit',
  })
}
mkdirSync(out, { recursive: true })

const versions = new Map(PACKAGES.map((p) => [readJson(join(pkgDir(p), 'package.json')).name, version(p)]))
const stageRoot = mkdtempSync(join(tmpdir(), 'kay-pack-'))
try {
  for (const p of PACKAGES) console.log(packOne(p))
} finally {
  rmSync(stageRoot, { recursive: true, force: true })
}

function pkgDir(p) {
  return join(root, 'packages', p)
}

function version(p) {
  return readJson(join(pkgDir(p), 'package.json')).version
}

function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'))
}

function packOne(p) {
  const src = pkgDir(p)
  const stage = join(stageRoot, p)
  mkdirSync(stage, { recursive: true })
  const manifest = publishedManifest(readJson(join(src, 'package.json')), BUNDLED[p] ?? [])
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`)
  const skip = (path) => {
    const rel = relative(join(src, 'dist'), path)
    return (
      rel === 'testing' || rel.startsWith(`testing${sep}`) || path.endsWith('.map') || path.endsWith('.tsbuildinfo')
    )
  }
  cpSync(join(src, 'dist'), join(stage, 'dist'), { recursive: true, filter: (path) => !skip(path) })
  if (existsSync(join(src, 'bin'))) cpSync(join(src, 'bin'), join(stage, 'bin'), { recursive: true })
  cpSync(join(root, 'README.md'), join(stage, 'README.md'))
  for (const name of BUNDLED[p] ?? []) bundle(src, name, join(stage, 'node_modules'))
  const file = execFileSync('npm', ['pack', '--silent', '--pack-destination', out], { cwd: stage, encoding: 'utf8' })
  return join(out, file.trim().split('\n').at(-1))
}

/** The manifest as published: exact versions of sibling packages, no source condition, no repository-only entry. */
function publishedManifest(m, bundled) {
  const pub = { ...m }
  delete pub.devDependencies
  delete pub.scripts
  pub.exports = {}
  for (const [entry, conds] of Object.entries(m.exports)) {
    if (entry === './testing') continue
    const { 'kay-source': _source, ...rest } = conds
    pub.exports[entry] = rest
  }
  pub.files = [...new Set([...(m.files ?? []), ...bundled.map((b) => `node_modules/${b}`)])]
  if (m.dependencies) {
    pub.dependencies = {}
    for (const [name, spec] of Object.entries(m.dependencies)) {
      pub.dependencies[name] = spec.startsWith('workspace:') ? versions.get(name) : spec
    }
  }
  if (bundled.length > 0) {
    pub.bundleDependencies = bundled
    // A bundled package is pinned to the exact version bundled: npm keeps a bundled copy only if it satisfies it.
    for (const b of bundled) pub.dependencies[b] = readJson(join(installed(pkgDir('core'), b), 'package.json')).version
  }
  return pub
}

/** Where `name` is installed as seen from `fromDir` (pnpm: a symlink into its store; the patched copy if patched). */
function installed(fromDir, name) {
  let dir = fromDir
  for (;;) {
    const candidate = join(dir, 'node_modules', name)
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate)
    const up = dirname(dir)
    if (up === dir) throw new Error(`pack: ${name} is not installed for ${fromDir}; run pnpm install`)
    dir = up
  }
}

/**
 * Copy an installed package and its runtime dependencies (optional ones left out: ssh2's are native accelerators it
 * loads only if present) flat into `nodeModules`. No build output (a native binary for this machine), tests or
 * examples; no install script (nothing to build on the consumer's machine).
 */
function bundle(fromDir, name, nodeModules, seen = new Map()) {
  const dir = installed(fromDir, name)
  const m = readJson(join(dir, 'package.json'))
  const have = seen.get(name)
  if (have !== undefined) {
    if (have !== m.version) throw new Error(`pack: two versions of ${name} to bundle (${have}, ${m.version})`)
    return
  }
  seen.set(name, m.version)
  const dest = join(nodeModules, name)
  const skipped = new Set(['test', 'examples', 'build', 'node_modules', '.github'])
  cpSync(dir, dest, {
    recursive: true,
    dereference: true,
    filter: (path) =>
      !relative(dir, path)
        .split(sep)
        .some((part) => skipped.has(part)),
  })
  if (m.scripts) {
    const { install: _i, rebuild: _r, preinstall: _p, postinstall: _q, ...rest } = m.scripts
    const published = { ...m, scripts: rest }
    // Which patched copy this is: pnpm names it by the patch's hash.
    if (name === 'ssh2') published.kayPatched = basename(dirname(dirname(dir)))
    writeFileSync(join(dest, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)
  }
  for (const dep of Object.keys(m.dependencies ?? {})) bundle(dir, dep, nodeModules, seen)
}
