import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  expandHostList,
  foldHosts,
  formatHostSpec,
  parseHostFile,
  parseHostSpec,
  readHostFile,
} from '../../src/config/hostlist.js'
import { isKayError } from '../../src/errors.js'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return isKayError(err) ? err.code : 'not-a-kay-error'
  }
  return undefined
}

describe('expandHostList', () => {
  it('expands a zero-padded range with a single number and a suffix', () => {
    const hosts = expandHostList('web[01-03,25].dc1')
    expect(hosts).toEqual(['web01.dc1', 'web02.dc1', 'web03.dc1', 'web25.dc1'])
  })

  it('keeps the width of the lower bound across a decade', () => {
    expect(expandHostList('n[08-11]')).toEqual(['n08', 'n09', 'n10', 'n11'])
    expect(expandHostList('n[8-11]')).toEqual(['n8', 'n9', 'n10', 'n11'])
  })

  it('expands several groups as a cartesian product, left to right', () => {
    expect(expandHostList('db[1-3]-[a-b]')).toEqual(['db1-a', 'db1-b', 'db2-a', 'db2-b', 'db3-a', 'db3-b'])
  })

  it('splits top-level commas but keeps commas inside brackets as ranges', () => {
    expect(expandHostList('a,b,web[1-3]')).toEqual(['a', 'b', 'web1', 'web2', 'web3'])
    expect(expandHostList('a, b  c')).toEqual(['a', 'b', 'c'])
  })

  it('supports steps in numeric ranges', () => {
    expect(expandHostList('h[1-9/4]')).toEqual(['h1', 'h5', 'h9'])
  })

  it('carries user and port onto every expanded host', () => {
    expect(expandHostList('root@web[1-2]:2222')).toEqual(['root@web1:2222', 'root@web2:2222'])
  })

  it('accepts bracketed IPv6 literals with ports', () => {
    expect(expandHostList('[::1]:2200,ops@[fe80::1]')).toEqual(['[::1]:2200', 'ops@fe80::1'])
  })

  it('removes duplicates and keeps the first-seen order', () => {
    expect(expandHostList('c,a,web[1-2],a,web1,b')).toEqual(['c', 'a', 'web1', 'web2', 'b'])
  })

  it('applies exclusions that are expressions themselves', () => {
    expect(expandHostList('web[01-06]', { exclude: 'web[02-03],web05' })).toEqual(['web01', 'web04', 'web06'])
  })

  it('excludes a bare host whatever its user or port but a full spec only exactly', () => {
    const hosts = expandHostList('root@a:2222,b:22,b:23,c')
    expect(expandHostList('root@a:2222,b:22,b:23,c', { exclude: ['a', 'b:23'] })).toEqual(['b:22', 'c'])
    expect(hosts).toHaveLength(4)
  })

  it('refuses to expand past the limit without generating the hosts', () => {
    const start = performance.now()
    expect(codeOf(() => expandHostList('web[1-999999999999999999999]'))).toBe('KAY_EXPANSION_LIMIT')
    expect(codeOf(() => expandHostList('a[1-100]-[1-100]', { limit: 9_999 }))).toBe('KAY_EXPANSION_LIMIT')
    expect(expandHostList('a[1-100]-[1-100]', { limit: 10_000 })).toHaveLength(10_000)
    expect(performance.now() - start).toBeLessThan(2_000)
  })

  it('counts the limit across all items of a list', () => {
    expect(codeOf(() => expandHostList('a[1-6],b[1-5]', { limit: 10 }))).toBe('KAY_EXPANSION_LIMIT')
  })

  it.each([
    ['web[1-3'],
    ['web1-3]'],
    ['web[3-1]'],
    ['web[]'],
    ['web[1-x]'],
    ['we$b'],
    ['web:99999'],
    ['web:'],
    ['@web'],
    ['web[a-Z]'],
  ])('rejects the malformed expression %s with a config error naming the token', (expr) => {
    try {
      expandHostList(expr)
      expect.unreachable()
    } catch (err) {
      expect(isKayError(err, 'KAY_CONFIG')).toBe(true)
      expect((err as Error).message).toContain(expr.replace(/[[\]]/g, '').slice(0, 2))
    }
  })
})

describe('parseHostSpec', () => {
  it('splits user, host and port', () => {
    expect(parseHostSpec('root@Web01:2222')).toEqual({ user: 'root', host: 'web01', port: 2222 })
    expect(parseHostSpec('web01')).toEqual({ host: 'web01' })
    expect(parseHostSpec('[::1]:22')).toEqual({ host: '::1', port: 22 })
    expect(parseHostSpec('ops@fe80::1')).toEqual({ user: 'ops', host: 'fe80::1' })
  })

  it('refuses an expression where one host is expected', () => {
    expect(codeOf(() => parseHostSpec('web[1-2]'))).toBe('KAY_CONFIG')
  })

  it('formats a spec back, bracketing IPv6 with a port', () => {
    expect(formatHostSpec({ host: '::1', port: 2200 })).toBe('[::1]:2200')
    expect(formatHostSpec({ user: 'u', host: 'h' })).toBe('u@h')
  })
})

describe('host files', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kay-hostlist-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('parses specs, expressions, comments and blank lines', () => {
    const text = '# fleet\n\nroot@db1:2222\nweb[1-2]  # web tier\n  \nweb1\ncache-a\r\n'
    expect(parseHostFile(text)).toEqual(['root@db1:2222', 'web1', 'web2', 'cache-a'])
  })

  it('names the line of a malformed entry', () => {
    try {
      parseHostFile('ok\nbad[1-\n', { source: 'hosts.txt' })
      expect.unreachable()
    } catch (err) {
      expect(isKayError(err, 'KAY_CONFIG')).toBe(true)
      expect((err as Error).message).toMatch(/^hosts\.txt:2: /)
    }
  })

  it('reads a file from disk and reports a missing one as a config error', async () => {
    const path = join(dir, 'hosts')
    await writeFile(path, 'a\nb[1-2]\n')
    expect(await readHostFile(path, { exclude: 'b1' })).toEqual(['a', 'b2'])
    await expect(readHostFile(join(dir, 'missing'))).rejects.toMatchObject({ code: 'KAY_CONFIG' })
  })
})

describe('foldHosts', () => {
  it('folds a zero-padded run with a gap', () => {
    expect(foldHosts(['web01', 'web02', 'web03', 'web05'])).toBe('web[01-03,05]')
  })

  it('folds several dimensions and leaves lone names alone', () => {
    expect(foldHosts(['rack1-n1', 'rack1-n2', 'rack2-n1', 'rack2-n2', 'db'])).toBe('rack[1-2]-n[1-2],db')
    expect(foldHosts(['web7'])).toBe('web7')
  })

  it('keeps different paddings apart so the fold expands back exactly', () => {
    const names = ['n9', 'n10', 'n09', 'n010']
    expect(new Set(expandHostList(foldHosts(names)))).toEqual(new Set(names))
  })

  it('round-trips any set of generated host names', () => {
    const name = fc
      .tuple(
        fc.constantFrom('web', 'db', 'rack', 'x'),
        fc.nat(30),
        fc.boolean(),
        fc.constantFrom('', '.dc1', '-n'),
        fc.option(fc.nat(5)),
      )
      .map(([p, n, pad, s, m]) => `${p}${pad ? String(n).padStart(3, '0') : n}${s}${m ?? ''}`)
    fc.assert(
      fc.property(fc.array(name, { maxLength: 40 }), (names) => {
        const folded = foldHosts(names)
        const back = folded === '' ? [] : expandHostList(folded)
        expect(new Set(back)).toEqual(new Set(names))
        expect(back.length).toBe(new Set(names).size)
      }),
      { numRuns: 300 },
    )
  })
})

describe('parser robustness', () => {
  it('never throws anything but a KayError on arbitrary input', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (s) => {
        const code = codeOf(() => expandHostList(s, { limit: 10_000 }))
        expect(code === undefined || code === 'KAY_CONFIG' || code === 'KAY_EXPANSION_LIMIT').toBe(true)
      }),
      { numRuns: 1_000 },
    )
  })
})
