import { describe, expect, it } from 'vitest'
import * as errors from '../src/errors.js'

const classes = Object.entries(errors).filter(
  ([name, v]) => typeof v === 'function' && /^[A-Z]\w*Error$/.test(name) && name !== 'KayError',
) as Array<[string, new (m: string, o?: errors.KayErrorOptions) => errors.KayError]>

describe('errors', () => {
  it.each(classes)('%s has a stable KAY_ code and survives a JSON round trip as the same class', (name, Cls) => {
    const err = new Cls('boom', { host: 'web01', details: { a: 1 } })
    expect(err.name).toBe(name)
    expect(err.code).toMatch(/^KAY_[A-Z_]+$/)
    const wire = JSON.parse(JSON.stringify(err))
    expect(wire).toEqual({ code: err.code, message: 'boom', host: 'web01', details: { a: 1 } })
    const back = errors.errorFromJSON(wire)
    expect(back).toBeInstanceOf(Cls)
    expect(back.code).toBe(err.code)
    expect(back.host).toBe('web01')
  })

  it('gives every class its own code', () => {
    const codes = classes.map(([, Cls]) => new Cls('x').code)
    expect(new Set(codes).size).toBe(codes.length)
  })

  it('turns unknown throwables into KAY_INTERNAL and keeps KayErrors as they are', () => {
    expect(errors.toKayError(new Error('x')).code).toBe('KAY_INTERNAL')
    expect(errors.toKayError('str', 'h').host).toBe('h')
    const e = new errors.TimeoutError('t')
    expect(errors.toKayError(e)).toBe(e)
    expect(errors.isKayError(e, 'KAY_TIMEOUT')).toBe(true)
    expect(errors.isKayError(e, 'KAY_CLOSED')).toBe(false)
  })
})
