import type { LightMyRequestResponse } from 'fastify'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { decodeCursor } from '../../src/records/cursor.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import { batchDelete, batchSave, pruneRecords } from '../helpers/records.ts'

/**
 * Hostile input to GET /records and PATCH /records/prune: every request is refused with a 4xx
 * StdError (never a 500), and nothing stored changes.
 */

const PCK = 'crm'
const b64 = (text: string) => Buffer.from(text).toString('base64')
const enc = encodeURIComponent
const DEEP_ARRAY = '['.repeat(10_000) + ']'.repeat(10_000)
const DEEP_OBJECT = '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)
const BAD_CURSORS = [
  'garbage',
  '15ccc805-64d5-4940-a7e0-45fc704997a1',
  b64('2024-03-04T06:59:51.471441-05:00||15ccc805-64d5-4940-a7e0-45fc704997a1'),
  b64('2024-01-01T00:00:00+23:59||1'),
  b64('2024-01-01T00:00:00-16:00||1'),
  b64('0000-01-01T00:00:00Z||1'),
  b64('2024-02-30T00:00:00Z||1'),
  b64('2024-01-01T00:00:00Z||0'),
  b64('2024-01-01T00:00:00Z||-1'),
  b64('2024-01-01T00:00:00Z||99999999999999999999'),
  b64('2024-01-01T00:00:00Z||1||2'),
  b64('2024-01-01T00:00:00Z||1\u0000'),
  b64("2024-01-01T00:00:00Z'; DROP TABLE records; --||1"),
  '\u0000',
]

let t: TestApp
let base: Record<string, string>

const hdrs = (extra: Record<string, string> = {}) => ({ ...base, ...extra })
const get = (query: string, headers = hdrs()) => t.app.inject({ url: `/records?${query}`, headers })
const patch = (payload: string, headers: Record<string, string> = {}, url = '/records/prune') =>
  t.app.inject({
    method: 'PATCH',
    url,
    headers: hdrs({ 'content-type': 'application/json', ...headers }),
    payload,
  })
const body = (fields: Record<string, unknown>) =>
  JSON.stringify({ model: 'Thing', until_cursor: BAD_CURSORS[0], ...fields })

/** Everything a request could change: the API's full listing and the raw rows behind it. */
async function snapshot() {
  const listing: unknown[] = []
  for (const variant of ['base', 'v2']) {
    const res = await get(`model=Thing&variant=${variant}&limit=10000`)
    expect(res.statusCode).toBe(200)
    listing.push(res.json())
  }
  const { rows } = await sql`SELECT r.*, r.last_modified_at::text AS lm, r.pruned_at::text AS pa
                             FROM records r ORDER BY r.id`.execute(t.db.kysely)
  const { rows: datasets } = await sql`SELECT d.*, d.last_write_at::text AS lw FROM datasets d
                                       ORDER BY connection_pk, model, variant`.execute(t.db.kysely)
  return { listing, rows, datasets }
}
let before: Awaited<ReturnType<typeof snapshot>>

function expectRefused(res: LightMyRequestResponse, status: number, code?: string) {
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status })
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  const error = res.json().error
  expect(Object.keys(res.json())).toEqual(['error'])
  if (code) expect(error.code).toBe(code)
  expect(res.body).not.toMatch(/\n\s+at |node_modules|\.ts:\d+|<html/i)
}

beforeAll(async () => {
  t = await startTestApp()
  base = { ...bearer(t.keys.dev), 'connection-id': 'c1', 'provider-config-key': PCK }
  const { connection } = await upsertConnection(t.db.kysely, t.sealer, t.envIds.dev, {
    providerConfigKey: PCK,
    connectionId: 'c1',
  })
  const ds = (variant: string) => ({ connectionPk: connection.id, model: 'Thing', variant })
  await batchSave(
    t.db.kysely,
    t.sealer,
    ds('base'),
    [1, 2, 3, 4, 5, 6].map((n) => ({ id: n, secret: `s${n}` })),
  )
  await batchSave(t.db.kysely, t.sealer, ds('v2'), [
    { id: 'v1', x: 1 },
    { id: 'v2', x: 2 },
  ])
  await batchDelete(t.db.kysely, ds('base'), [{ id: 3 }])
  const listing = (await get('model=Thing')).json().records
  await pruneRecords(t.db.kysely, ds('base'), decodeCursor(listing[1]._nango_metadata.cursor)!, 1000)
  before = await snapshot()
  expect(before.rows.filter((r) => (r as { pa: string | null }).pa !== null)).toHaveLength(2)
})
afterAll(() => t.close())

describe('GET /records refuses hostile queries and changes nothing', () => {
  it.each([
    ...BAD_CURSORS.map((c) => [
      `cursor ${JSON.stringify(c).slice(0, 60)}`,
      `model=Thing&cursor=${enc(c)}`,
      'invalid_cursor',
    ]),
    ['NUL in ids', 'model=Thing&ids=a%00b', 'invalid_query_params'],
    ['NUL in the second id', 'model=Thing&ids=1&ids=%00', 'invalid_query_params'],
    ['an id of 256 characters', `model=Thing&ids=${'a'.repeat(256)}`, 'invalid_query_params'],
    ['an id of 256 two-byte characters', `model=Thing&ids=${enc('é'.repeat(256))}`, 'invalid_query_params'],
    ['an empty id', 'model=Thing&ids=', 'invalid_query_params'],
    [
      '101 ids',
      `model=Thing&${Array.from({ length: 101 }, (_, i) => `ids=${i}`).join('&')}`,
      'invalid_query_params',
    ],
    ['limit 0', 'model=Thing&limit=0', 'invalid_query_params'],
    ['limit 10001', 'model=Thing&limit=10001', 'invalid_query_params'],
    ['limit -1', 'model=Thing&limit=-1', 'invalid_query_params'],
    ['limit 1e309', 'model=Thing&limit=1e309', 'invalid_query_params'],
    ['model with ::', 'model=Thing::v2', 'invalid_query_params'],
    ['model with NUL', 'model=Thing%00', 'invalid_query_params'],
    ['model of 256 characters', `model=T${'h'.repeat(255)}`, 'invalid_query_params'],
    ['variant with ::', 'model=Thing&variant=a::b', 'invalid_query_params'],
    ['filter with SQL', `model=Thing&filter=${enc("added') OR 1=1 --")}`, 'invalid_query_params'],
    ['modified_after in year 0', 'model=Thing&modified_after=0000-01-01T00:00:00Z', 'invalid_query_params'],
    [
      'modified_after at +23:59',
      `model=Thing&modified_after=${enc('2024-01-01T00:00:00+23:59')}`,
      'invalid_query_params',
    ],
    ['delta at -16:00', 'model=Thing&delta=2024-01-01T00:00:00-16:00', 'invalid_query_params'],
    [
      'modified_after of 65 characters',
      `model=Thing&modified_after=2024-01-01T00:00:00.${'1'.repeat(44)}Z`,
      'invalid_query_params',
    ],
    ['__proto__ as a key', 'model=Thing&__proto__=x', 'invalid_query_params'],
    ['constructor as a key', 'model=Thing&constructor=x', 'invalid_query_params'],
    ['model given twice', 'model=Thing&model=Other', 'invalid_query_params'],
  ])('%s -> 400', async (_label, query, code) => {
    expectRefused(await get(query), 400, code)
    expect(await snapshot()).toEqual(before)
  })

  it.each([
    ['Content-Type text/plain', { 'content-type': 'text/plain' }, 415, 'invalid_content_type'],
    ['a connection id of 256 characters', { 'connection-id': 'c'.repeat(256) }, 400, 'invalid_headers'],
    ['a connection id with latin-1 text', { 'connection-id': 'caf\u00e9' }, 400, 'invalid_headers'],
    ['a prod key for a dev connection', { authorization: 'prod' }, 400, 'unknown_connection'],
    ['a write-only key', { authorization: 'writer' }, 403, 'forbidden'],
    ['an empty Authorization header', { authorization: '' }, 401, 'malformed_auth_header'],
  ])('%s -> %s', async (_label, headers, status, code) => {
    expectRefused(await get('model=Thing', hdrs(await keyed(headers))), status, code)
  })
})

describe('PATCH /records/prune refuses hostile bodies and changes nothing', () => {
  const proto = (inner: string) =>
    `{"model":"Thing","until_cursor":"${b64('2999-01-01T00:00:00Z||1')}",${inner}}`
  it.each([
    ...BAD_CURSORS.map((c) => [
      `until_cursor ${JSON.stringify(c).slice(0, 60)}`,
      body({ until_cursor: c }),
      400,
      'invalid_cursor',
    ]),
    [
      'a 10,000-deep array',
      body({ extra: 1 }).replace('"extra":1', `"extra":${DEEP_ARRAY}`),
      400,
      'invalid_body',
    ],
    [
      'a 10,000-deep object as until_cursor',
      body({}).replace(/"until_cursor":"[^"]*"/, `"until_cursor":${DEEP_OBJECT}`),
      400,
      'invalid_body',
    ],
    ['a 10,000-deep array as the whole body', DEEP_ARRAY, 400, 'invalid_body'],
    ['a __proto__ key', proto('"__proto__":{"limit":10000}'), 400, 'invalid_body'],
    ['a nested __proto__ key', proto('"limit":{"__proto__":{"x":1}}'), 400, 'invalid_body'],
    ['a constructor.prototype key', proto('"constructor":{"prototype":{"x":1}}'), 400, 'invalid_body'],
    ['an unknown key', proto('"sort":"desc"'), 400, 'invalid_body'],
    ['malformed JSON', '{"model":"Thing",', 400, 'invalid_json'],
    ['a JSON array', '[]', 400, 'invalid_body'],
    ['a JSON string', '"Thing"', 400, 'invalid_body'],
    ['NUL in model', body({ model: 'Thing\u0000' }), 400, 'invalid_body'],
    ['model with ::', proto('"variant":"base"').replace('"Thing"', '"Thing::v2"'), 400, 'invalid_body'],
    ['limit 0', proto('"limit":0'), 400, 'invalid_body'],
    ['limit 10001', proto('"limit":10001'), 400, 'invalid_body'],
    ['limit 1e400', proto('"limit":1e400'), 400, 'invalid_body'],
    [
      'a lone surrogate in until_cursor',
      body({}).replace(/"until_cursor":"[^"]*"/, '"until_cursor":"\\ud800"'),
      400,
      'invalid_cursor',
    ],
    ['until_cursor over 1000 characters', body({ until_cursor: 'A'.repeat(1001) }), 400, 'invalid_body'],
    ['a body over the 1 MiB limit', body({ pad: 'x'.repeat(1_100_000) }), 413, 'request_too_large'],
  ])('%s -> %s', async (_label, payload, status, code) => {
    expectRefused(await patch(payload as string), status as number, code as string)
    expect(await snapshot()).toEqual(before)
  })

  const valid = proto('"limit":10000')
  it.each([
    ['Content-Type text/plain', { 'content-type': 'text/plain' }, '', 415, 'invalid_content_type'],
    ['a form body', { 'content-type': 'application/x-www-form-urlencoded' }, '', 415, 'invalid_content_type'],
    ['a query string', {}, '?model=Thing', 400, 'invalid_query_params'],
    ['a prod key for a dev connection', { authorization: 'prod' }, '', 400, 'unknown_connection'],
    ['a read-only key', { authorization: 'reader' }, '', 403, 'forbidden'],
  ])('a valid body with %s -> %s', async (_label, headers, query, status, code) => {
    expectRefused(await patch(valid, await keyed(headers), `/records/prune${query}`), status, code)
    expect(await snapshot()).toEqual(before)
  })
})

describe('no input gets a 500', () => {
  const values = [
    '',
    '%00',
    '%ED%A0%80',
    '%zz',
    'a'.repeat(1001),
    '-1',
    'NaN',
    '1e309',
    '[]',
    '{}',
    '__proto__',
    "'",
    ...BAD_CURSORS.map(enc),
  ]
  const keys = [
    'model',
    'variant',
    'cursor',
    'limit',
    'filter',
    'ids',
    'modified_after',
    'delta',
    '__proto__',
    'ids[]',
  ]

  it('GET: every hostile value in every query key', async () => {
    for (const key of keys) {
      for (const value of values) {
        const res = await get(`model=Thing&${key}=${value}`)
        expect(res.statusCode, `${key}=${value} -> ${res.body}`).toBeLessThan(500)
      }
    }
    expect(await snapshot()).toEqual(before)
  })

  it('PATCH: every hostile JSON value in every body key', async () => {
    const json = [
      null,
      true,
      -1,
      1e308,
      0.5,
      '',
      'x'.repeat(2000),
      [],
      {},
      '\u0000',
      '\ud800',
      ...BAD_CURSORS,
    ]
    for (const key of ['model', 'variant', 'until_cursor', 'limit']) {
      for (const value of json) {
        const res = await patch(body({ [key]: value }))
        expect(res.statusCode, `${key}=${JSON.stringify(value)} -> ${res.body}`).toBeLessThan(500)
      }
    }
    expect(await snapshot()).toEqual(before)
  })
})

/** Tables are built before beforeAll runs, so they name keys by role: resolved here. */
async function keyed(headers: Record<string, string | undefined>): Promise<Record<string, string>> {
  const role = headers.authorization
  const scopes: Record<string, string[]> = {
    reader: ['environment:records:read'],
    writer: ['environment:records:write'],
  }
  if (role === 'prod') return { ...headers, ...bearer(t.keys.prod) } as Record<string, string>
  const scoped = role ? scopes[role] : undefined
  if (scoped) return { ...headers, ...bearer(await t.keyWith(scoped)) } as Record<string, string>
  return headers as Record<string, string>
}
