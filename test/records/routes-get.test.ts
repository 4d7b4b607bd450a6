import { Nango } from '@nangohq/node'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import { batchDelete, batchSave, batchUpdate } from '../helpers/records.ts'

type Meta = Record<'first_seen_at' | 'last_modified_at' | 'last_action' | 'cursor', string> &
  Record<'deleted_at' | 'pruned_at', string | null>
type Rec = { id: string; _nango_metadata: Meta } & Record<string, unknown>
type Page = { next_cursor: string | null; records: Rec[] }

const PCK = 'crm'
const META_KEYS = ['first_seen_at', 'last_modified_at', 'last_action', 'deleted_at', 'pruned_at', 'cursor']
// RFC 3339, UTC as +00:00, microseconds at most, trailing zeros trimmed.
const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,5}[1-9])?\+00:00$/
const UNKNOWN = 'Provided ConnectionId and ProviderConfigKey does not match a valid connection'
const PAGED = Array.from({ length: 25 }, (_, i) => `p${String(i).padStart(2, '0')}`)
const b64 = (text: string) => Buffer.from(text).toString('base64')

let t: TestApp
let nango: Nango
let conn: number

const ds = (model: string, variant = 'base') => ({ connectionPk: conn, model, variant })
const save = (model: string, records: unknown[], variant = 'base') =>
  batchSave(t.db.kysely, t.sealer, ds(model, variant), records)
const recs = (ids: string[], fields: Record<string, unknown> = {}) => ids.map((id) => ({ id, ...fields }))
const hdrs = (extra: Record<string, string> = {}) => ({
  ...bearer(t.keys.dev),
  ...{ 'connection-id': 'c1', 'provider-config-key': PCK },
  ...extra,
})
const get = (query: string, headers: Record<string, string> = hdrs()) =>
  t.app.inject({ url: `/records?${query}`, headers })
async function page(query: string): Promise<Page> {
  const res = await get(query)
  expect(res.statusCode, res.body).toBe(200)
  return res.json()
}
const idsOf = (p: { records: { id: string }[] }) => p.records.map((r) => r.id)

/** Pages through `query` with next_cursor; returns every page. */
async function pageAll(query: string, fetchPage = page): Promise<Page[]> {
  const pages: Page[] = []
  let cursor: string | null = null
  do {
    const p: Page = await fetchPage(cursor ? `${query}&cursor=${encodeURIComponent(cursor)}` : query)
    pages.push(p)
    cursor = p.next_cursor
  } while (cursor !== null && pages.length < 1000)
  return pages
}

/** Pins a record's timestamps so times and order can be asserted exactly. */
async function setTimes(model: string, id: string, modified: string, firstSeen = modified) {
  await sql`UPDATE records SET last_modified_at = ${modified}::timestamptz, first_seen_at = ${firstSeen}::timestamptz
            WHERE connection_pk = ${conn} AND model = ${model} AND external_id = ${id}`.execute(t.db.kysely)
}
async function internalId(model: string, id: string) {
  const { rows } = await sql<{ id: string }>`SELECT id::text FROM records WHERE connection_pk = ${conn}
    AND model = ${model} AND external_id = ${id}`.execute(t.db.kysely)
  return rows[0]!.id
}

beforeAll(async () => {
  t = await startTestApp({ listen: true })
  nango = new Nango({ host: t.url, secretKey: t.keys.dev })
  const input = { providerConfigKey: PCK, connectionId: 'c1' }
  conn = (await upsertConnection(t.db.kysely, t.sealer, t.envIds.dev, input)).connection.id
  await upsertConnection(t.db.kysely, t.sealer, t.envIds.prod, { ...input, connectionId: 'prod-only' })

  await save('Shape', [
    { id: 5, name: 'five', nested: { a: [1, 2] } },
    { id: 'six', 2024: 'year', z: 1 },
  ])
  await save('Clock', recs(['r1', 'r2', 'r3']))
  await setTimes('Clock', 'r1', '2024-03-27T15:10:27.123456Z', '2024-03-27T15:10:27.1Z')
  await setTimes('Clock', 'r2', '2024-03-27T15:10:27Z')
  await setTimes('Clock', 'r3', '2024-03-27T15:10:27.123456Z')
  // Three batches: records of one batch share a timestamp, so paging relies on the id tie-breaker.
  for (const at of [0, 10, 20]) await save('Paged', recs(PAGED.slice(at, at + 10)))
  await save('Mixed', recs(['a1', 'a2', 'u1', 'u2', 'd1', 'd2'], { v: 1 }))
  await save('Mixed', [{ id: 'u1', v: 2 }])
  await batchUpdate(t.db.kysely, t.sealer, ds('Mixed'), [{ id: 'u2', extra: true }])
  await batchDelete(t.db.kysely, ds('Mixed'), recs(['d1', 'd2']))
  await save('Picked', recs(['a', 'b', 'x,y', 'x', 'y']))
  await save('Timed', recs(['t1', 't2', 't3']))
  for (const hour of [10, 11, 12]) await setTimes('Timed', `t${hour - 9}`, `2024-01-01T${hour}:00:00Z`)
  await save('Thing', recs(['base-1']))
  await save('Thing', recs(['v2-1']), 'v2')
  await save('Thing', recs(['other-1']), 'other')
  await save('Gone', recs(['g1', 'g2'], { secret: 's' }))
  await batchDelete(t.db.kysely, ds('Gone'), recs(['g2']))
  const payload = {
    model: 'Gone',
    until_cursor: (await page('model=Gone')).records[1]!._nango_metadata.cursor,
  }
  const prune = await t.app.inject({ method: 'PATCH', url: '/records/prune', headers: hdrs(), payload })
  expect(prune.json()).toEqual({ count: 2, has_more: false })
  await save('Gone', recs(['g3'], { secret: 's' }))
})
afterAll(() => t.close())

describe('request errors', () => {
  const nangoCursor = b64('2024-03-04T06:59:51.471441-05:00||15ccc805-64d5-4940-a7e0-45fc704997a1')
  it.each([
    ['model=Shape&sort=asc', 'unrecognized_keys', []],
    ['model=Shape&metadata_only=true', 'unrecognized_keys', []],
    ['limit=5', 'invalid_type', ['model']],
    ['model=thing', 'invalid_format', ['model']],
    ['model=T', 'invalid_format', ['model']],
    ['model=Thing::v2', 'invalid_format', ['model']],
    ['model=Shape&limit=0', 'too_small', ['limit']],
    ['model=Shape&limit=10001', 'too_big', ['limit']],
    ['model=Shape&limit=1.5', 'invalid_type', ['limit']],
    ['model=Shape&limit=abc', 'invalid_type', ['limit']],
    ['model=Shape&filter=Added', 'invalid_format', ['filter']],
    ['model=Shape&filter=added,', 'invalid_format', ['filter']],
    ['model=Shape&modified_after=2024-01-01', 'invalid_format', ['modified_after']],
    ['model=Shape&modified_after=2024-01-01T00:00:00', 'invalid_format', ['modified_after']],
    ['model=Shape&delta=yesterday', 'invalid_format', ['delta']],
    ['model=Shape&ids=a%00b', 'invalid_format', ['ids', '0']],
    [`model=Shape&ids=${'a'.repeat(256)}`, 'too_big', ['ids', '0']],
    [`model=Shape&${Array.from({ length: 101 }, (_, i) => `ids=${i}`).join('&')}`, 'too_big', ['ids']],
    ['model=Shape&cursor=not-a-cursor', 'invalid_cursor'],
    [`model=Shape&cursor=${encodeURIComponent(nangoCursor)}`, 'invalid_cursor'],
    ['model=Shape&cursor=15ccc805-64d5-4940-a7e0-45fc704997a1', 'invalid_cursor'],
  ])('%s -> 400 (%s)', async (query, code, path?: string[]) => {
    const res = await get(query)
    expect(res.statusCode).toBe(400)
    const { error } = res.json()
    if (!path) return expect(error.code).toBe(code)
    expect(error.code).toBe('invalid_query_params')
    expect(error.errors).toContainEqual(expect.objectContaining({ code, path }))
  })

  it('reports both missing connection headers', async () => {
    const { error } = (await get('model=Shape', bearer(t.keys.dev))).json()
    expect(error.code).toBe('invalid_headers')
    expect(error.errors.map((e: { path: string[] }) => e.path)).toEqual([
      ['connection-id'],
      ['provider-config-key'],
    ])
  })

  it.each(['nope', 'prod-only'])('connection %s (not in this environment) -> 400', async (connectionId) => {
    const res = await get('model=Shape', hdrs({ 'connection-id': connectionId }))
    expect(res.statusCode).toBe(400)
    expect(res.json()).toEqual({ error: { code: 'unknown_connection', message: UNKNOWN } })
  })
})

describe('response shape', () => {
  it('puts next_cursor first, id first as a string, _nango_metadata last in Nango’s key order', async () => {
    const res = await get('model=Shape')
    expect(res.body.startsWith('{"next_cursor":null,"records":[{"id":"5","name":"five"')).toBe(true)
    // JSON.parse would hoist the integer-like key "2024"; the wire text keeps `id` first.
    expect(res.body).toContain('{"id":"six","2024":"year","z":1,"_nango_metadata":{"first_seen_at":')
    const [five, six] = (res.json() as Page).records
    expect(Object.keys(five!)).toEqual(['id', 'name', 'nested', '_nango_metadata'])
    expect(five).toMatchObject({ id: '5', nested: { a: [1, 2] } })
    for (const r of [five!, six!]) {
      expect(Object.keys(r._nango_metadata)).toEqual(META_KEYS)
      expect(r._nango_metadata).toMatchObject({ last_action: 'ADDED', deleted_at: null, pruned_at: null })
      expect(r._nango_metadata.first_seen_at).toMatch(TIME)
      expect(r._nango_metadata.cursor).toMatch(/^[A-Za-z0-9+/]+={0,2}$/)
      const [at, id] = Buffer.from(r._nango_metadata.cursor, 'base64').toString().split('||')
      expect(at).toBe(r._nango_metadata.last_modified_at)
      expect(id).toBe(await internalId('Shape', r.id))
    }
  })

  it('writes microseconds with trailing zeros trimmed, ordered by (last_modified_at, internal id)', async () => {
    const { records } = await page('model=Clock')
    expect(idsOf({ records })).toEqual(['r2', 'r1', 'r3'])
    expect(
      records.map(({ _nango_metadata: m }) => [m.first_seen_at, m.last_modified_at, m.last_action]),
    ).toEqual([
      ['2024-03-27T15:10:27+00:00', '2024-03-27T15:10:27+00:00', 'ADDED'],
      ['2024-03-27T15:10:27.1+00:00', '2024-03-27T15:10:27.123456+00:00', 'UPDATED'],
      ['2024-03-27T15:10:27.123456+00:00', '2024-03-27T15:10:27.123456+00:00', 'ADDED'],
    ])
    const r1Id = await internalId('Clock', 'r1')
    expect(records[1]!._nango_metadata.cursor).toBe(b64(`2024-03-27T15:10:27.123456+00:00||${r1Id}`))
  })

  it('answers /records/ (trailing slash) exactly as /records; an unknown model is an empty page', async () => {
    const slash = await t.app.inject({ url: '/records/?model=Shape', headers: hdrs() })
    expect(slash.body).toBe((await get('model=Shape')).body)
    expect((await get('model=Nothing')).body).toBe('{"next_cursor":null,"records":[]}')
  })

  it('returns deleted records with their last payload, pruned ones as id and metadata only', async () => {
    const [d1] = (await page('model=Mixed&filter=deleted')).records
    expect(d1).toMatchObject({ id: 'd1', v: 1, _nango_metadata: { last_action: 'DELETED' } })
    expect(d1!._nango_metadata.deleted_at).toMatch(TIME)
    const [g1, g2, g3] = (await page('model=Gone')).records
    for (const r of [g1!, g2!]) {
      expect(Object.keys(r)).toEqual(['id', '_nango_metadata'])
      expect(r._nango_metadata.pruned_at).toMatch(TIME)
    }
    expect(g1!._nango_metadata).toMatchObject({ last_action: 'ADDED', deleted_at: null })
    expect(g2!._nango_metadata).toMatchObject({
      last_action: 'DELETED',
      deleted_at: expect.stringMatching(TIME),
    })
    expect(g3).toMatchObject({ id: 'g3', secret: 's', _nango_metadata: { pruned_at: null } })
  })
})

describe('paging', () => {
  it.each([1, 4, 5, 10, 24, 25, 26, 100])('limit %i returns every record once, in order', async (limit) => {
    const pages = await pageAll(`model=Paged&limit=${limit}`)
    expect(pages.flatMap(idsOf)).toEqual(PAGED)
    // exactly `limit` remaining records make a last page with next_cursor null, not an empty page after it
    expect(pages).toHaveLength(Math.ceil(PAGED.length / limit))
    expect(pages.at(-1)!.next_cursor).toBeNull()
    for (const p of pages.slice(0, -1)) {
      expect(p.records).toHaveLength(limit)
      expect(p.next_cursor).toBe(p.records.at(-1)!._nango_metadata.cursor)
    }
  })

  it('defaults to 100 records a page', async () => {
    await save('Many', recs(Array.from({ length: 101 }, (_, i) => `m${i}`)))
    expect((await pageAll('model=Many')).map((p) => p.records.length)).toEqual([100, 1])
  })

  it('shows a record changed after it was paged again, after the cursor', async () => {
    await save('Moving', recs(['m1', 'm2', 'm3']))
    const first = await page('model=Moving&limit=2')
    await save('Moving', [{ id: 'm1', changed: true }])
    const rest = await page(`model=Moving&cursor=${encodeURIComponent(first.next_cursor!)}`)
    expect(idsOf(rest)).toEqual(['m3', 'm1'])
    expect(rest.records[1]!._nango_metadata.last_action).toBe('UPDATED')
  })
})

describe('selecting records', () => {
  it.each([
    ['Mixed', 'filter=added', ['a1', 'a2']],
    ['Mixed', 'filter=UPDATED', ['u1', 'u2']],
    ['Mixed', 'filter=deleted', ['d1', 'd2']],
    ['Mixed', 'filter=added,deleted', ['a1', 'a2', 'd1', 'd2']],
    ['Mixed', 'filter=DELETED,updated', ['d1', 'd2', 'u1', 'u2']],
    ['Mixed', 'filter=added,added', ['a1', 'a2']],
    ['Mixed', 'filter=added,updated,deleted', ['a1', 'a2', 'd1', 'd2', 'u1', 'u2']],
    ['Picked', 'ids=x', ['x']],
    ['Picked', 'ids=x&ids=y', ['x', 'y']],
    ['Picked', 'ids=x%2Cy', ['x,y']],
    ['Picked', 'ids=b&ids=a&ids=b&ids=unknown', ['a', 'b']],
    ['Timed', 'modified_after=2024-01-01T11:00:00Z', ['t2', 't3']],
    ['Timed', 'modified_after=2024-01-01T12:00:00%2B01:00', ['t2', 't3']],
    ['Timed', 'modified_after=2024-01-01T10:30:00-00:30', ['t2', 't3']],
    ['Timed', 'modified_after=2024-01-01T11:00:00.000001Z', ['t3']],
    ['Timed', 'modified_after=2000-01-01T00:00:00Z', ['t1', 't2', 't3']],
    ['Timed', 'delta=2024-01-01T12:00:00Z&modified_after=2000-01-01T00:00:00Z', ['t3']],
    ['Thing', 'limit=100', ['base-1']],
    ['Thing', 'variant=base', ['base-1']],
    ['Thing', 'variant=v2', ['v2-1']],
    ['Thing', 'variant=other', ['other-1']],
    ['Thing', 'variant=none', []],
  ])('%s with %s', async (model, query, expected) => {
    expect(idsOf(await page(`model=${model}&${query}`)).sort()).toEqual(expected)
  })
})

describe('through @nangohq/node', () => {
  const base = { providerConfigKey: PCK, connectionId: 'c1' }

  it('pages with next_cursor', async () => {
    const seen: string[] = []
    let cursor: string | null = null
    do {
      const res: Page = (await nango.listRecords({ ...base, model: 'Paged', limit: 7, cursor })) as never
      seen.push(...idsOf(res))
      cursor = res.next_cursor
    } while (cursor)
    expect(seen).toEqual(PAGED)
  })

  it.each([
    [{ model: 'Mixed', filter: 'added,deleted' as const }, ['a1', 'a2', 'd1', 'd2']],
    [{ model: 'Mixed', filter: 'UPDATED' as const }, ['u1', 'u2']],
    [{ model: 'Picked', ids: ['x,y'] }, ['x,y']],
    [{ model: 'Picked', ids: ['y', 'x'] }, ['x', 'y']],
    [{ model: 'Timed', modifiedAfter: '2024-01-01T11:00:00Z' }, ['t2', 't3']],
    [{ model: 'Timed', modifiedAfter: '2024-01-01T12:00:00+01:00' }, ['t2', 't3']],
    [{ model: 'Thing', variant: 'v2' }, ['v2-1']],
    [{ model: 'Thing', variant: 'base' }, ['base-1']],
    [{ model: 'Shape', limit: 1 }, ['5']],
  ])('listRecords(%o)', async (options, expected) => {
    expect(idsOf((await nango.listRecords({ ...base, ...options })) as never).sort()).toEqual(expected)
  })

  it('rejects an unknown connection with the 400 body', async () => {
    const err = await nango
      .listRecords({ ...base, connectionId: 'x', model: 'Shape' })
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ response: { status: 400, data: { error: { code: 'unknown_connection' } } } })
  })
})

describe('byte budget (SYNCSTORE_MAX_PAGE_BYTES=5000)', () => {
  const BUDGET = 5000
  let small: TestApp
  // ~2 KB each in 2-byte characters (the budget counts bytes); b06 alone is over the budget.
  const ids = Array.from({ length: 13 }, (_, i) => `b${String(i).padStart(2, '0')}`)
  beforeAll(async () => {
    small = await startTestApp({ env: { SYNCSTORE_MAX_PAGE_BYTES: String(BUDGET) } })
    const input = { providerConfigKey: PCK, connectionId: 'c1' }
    const { connection } = await upsertConnection(small.db.kysely, small.sealer, small.envIds.dev, input)
    const dataset = (model: string) => ({ connectionPk: connection.id, model, variant: 'base' })
    const big = ids.map((id) => ({ id, pad: 'é'.repeat(id === 'b06' ? 4500 : 1000) }))
    await batchSave(small.db.kysely, small.sealer, dataset('Big'), big)
    // Stored JSON of exactly 2100 bytes: two records use the budget to the byte (2 × (2100 + 400)).
    const edge = recs(['e0', 'e1', 'e2', 'e3'], { pad: 'é'.repeat(1040) })
    await batchSave(small.db.kysely, small.sealer, dataset('Edge'), edge)
  })
  afterAll(() => small.close())

  const fetchSmall = async (query: string) => {
    const res = await small.app.inject({ url: `/records?${query}`, headers: hdrs(bearer(small.keys.dev)) })
    expect(res.statusCode).toBe(200)
    const p: Page = res.json()
    if (p.records.length > 1) expect(Buffer.byteLength(res.body)).toBeLessThanOrEqual(BUDGET)
    return p
  }

  it.each([100, 10_000, 3])('limit %i: pages are cut by bytes, every record comes once', async (limit) => {
    const pages = await pageAll(`model=Big&limit=${limit}`, fetchSmall)
    expect(pages.flatMap(idsOf)).toEqual(ids)
    expect(pages.every((p) => p.records.length >= 1 && p.records.length <= 2)).toBe(true)
    expect(pages.some((p) => p.records.length === 2)).toBe(true)
    const oversized = pages.find((p) => idsOf(p).includes('b06'))!
    expect(idsOf(oversized)).toEqual(['b06'])
    expect(oversized.next_cursor).toBe(oversized.records[0]!._nango_metadata.cursor)
    expect(pages.at(-1)!.next_cursor).toBeNull()
  })

  it('fills a page to the byte when records use the budget exactly', async () => {
    expect((await pageAll('model=Edge', fetchSmall)).map(idsOf)).toEqual([
      ['e0', 'e1'],
      ['e2', 'e3'],
    ])
  })

  it('limit 1 still gives one record a page', async () => {
    expect((await pageAll('model=Big&limit=1', fetchSmall)).map(idsOf)).toEqual(ids.map((id) => [id]))
  })
})

describe('a dataset holding a record over 2 MiB', () => {
  it('pages at limit 1000 (its size times the rows fetched is past 2^31)', async () => {
    const huge = 'x'.repeat(2_200_000)
    await save('Huge', [{ id: 'h0' }, { id: 'h1', huge }, { id: 'h2' }])
    const pages = await pageAll('model=Huge&limit=1000')
    expect(pages.flatMap(idsOf)).toEqual(['h0', 'h1', 'h2'])
    expect(pages.flatMap((p) => p.records).find((r) => r.id === 'h1')!.huge).toBe(huge)
  })
})
