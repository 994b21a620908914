import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { defaultGroupsFiles, loadGroups, parseGroups } from '../../src/config/groups.js'

describe('host groups (ClusterShell flat format)', () => {
  const text = [
    '# site groups',
    'web: web[01-03] web-canary   # trailing comment',
    'db: db1,db2',
    '',
    'all: @web @db extra1',
    'web: web99',
  ].join('\n')

  it('resolves a group to its host expressions, following @references, in file order', () => {
    const g = parseGroups(text, 'groups')
    expect(g.names()).toEqual(['web', 'db', 'all'])
    expect(g.resolve('web')).toEqual(['web[01-03]', 'web-canary', 'web99'])
    expect(g.resolve('all')).toEqual(['web[01-03]', 'web-canary', 'web99', 'db1', 'db2', 'extra1'])
  })

  it.each([
    ['an unknown group names the known ones', 'a: h1\n', 'zz', /unknown group '@zz' in g \(groups: a\)/],
    ['a cycle', 'a: @b\nb: @a\n', 'a', /refers to itself \(a → b → a\)/],
    ['a set operator', 'a: @b!h1\n', 'a', /uses a set operator/],
    ['a line that is not NAME: list', 'just hosts\n', 'a', /g:1: expected 'NAME: host list'/],
  ])('refuses %s with one line', (_what, body, name, message) => {
    expect(() => parseGroups(body, 'g').resolve(name)).toThrow(message)
  })

  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kay-groups-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('loads the given file, or the first default that exists, and says where it looked when none does', async () => {
    const file = join(dir, 'g.cfg')
    await writeFile(file, 'x: h[1-2]\n')
    expect((await loadGroups(file)).resolve('x')).toEqual(['h[1-2]'])
    await expect(loadGroups(join(dir, 'missing'))).rejects.toMatchObject({ code: 'KAY_CONFIG' })
    const home = join(dir, 'home')
    expect(defaultGroupsFiles(home)[0]).toBe(join(home, '.config', 'kay', 'groups'))
    const { mkdir } = await import('node:fs/promises')
    await mkdir(join(home, '.config', 'kay'), { recursive: true })
    await writeFile(join(home, '.config', 'kay', 'groups'), 'mine: m1\n')
    expect((await loadGroups(undefined, home)).resolve('mine')).toEqual(['m1'])
  })
})
