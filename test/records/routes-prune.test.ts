import { Nango } from '@nangohq/node'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import { batchDelete, batchSave } from '../helpers/records.ts'

interface Meta {
  first_seen_at: string
  last_modified_at: string
  last_action: string
  deleted_at: string | null
  pruned_at: string | null
  cursor: string
}
type Rec = { id: string; _nango_metadata: Meta } & Record<string, unknown>

const PCK = 'crm'
const b64 = (text: string) => Buffer.from(text).toString('base64')

let t: TestApp
let nango: Nango
let conn: number

const ds = (model: string, variant = 'base') => ({ connectionPk: conn, model, variant })
/** Saves `n` records `<prefix>0..` with a payload, each in its own batch unless `oneBatch`. */
async function seed(model: string, n: number, options: { variant?: string; oneBatch?: boolean } = {}) {
  const records = Array.from({ length: n }, (_, i) => ({ id: `${model}-${i}`, payload: `data ${i}` }))
  if (options.oneBatch) return batchSave(t.db.kysely, t.sealer, ds(model, options.variant), records)
  for (const r of records) await batchSave(t.db.kysely, t.sealer, ds(model, options.variant), [r])
}
const hdrs = (extra: Record<string, string> = {}) => ({
  ...bearer(t.keys.dev),
  'connection-id': 'c1',
  'provider-config-key': PCK,
  ...extra,
})
const prune = (payload: unknown, headers: Record<string, string> = hdrs(), url = '/records/prune') =>
  t.app.inject({ method: 'PATCH', url, headers, payload: payload as object })
async function pruneOk(body: Record<string, unknown>) {
  const res = await prune(body)
  expect(res.statusCode, res.body).toBe(200)
  return res.json() as { count: number; has_more: boolean }
}
async function list(model: string, variant = 'base'): Promise<Rec[]> {
  const res = await t.app.inject({
    url: `/records?model=${model}&variant=${variant}&limit=10000`,
    headers: hdrs(),
  })
  expect(res.statusCode).toBe(200)
  return res.json().records
}
const cursorOf = async (model: string, index: number) => (await list(model)).at(index)!._nango_metadata.cursor
const prunedIds = async (model: string) =>
  (await list(model)).filter((r) => r._nango_metadata.pruned_at !== null).map((r) => r.id)
const withoutPrunedAt = ({ pruned_at: _, ...rest }: Meta) => rest

beforeAll(async () => {
  t = await startTestApp({ listen: true })
  nango = new Nango({ host: t.url, secretKey: t.keys.dev })
  conn = (
    await upsertConnection(t.db.kysely, t.sealer, t.envIds.dev, {
      providerConfigKey: PCK,
      connectionId: 'c1',
    })
  ).connection.id
})
afterAll(() => t.close())

describe('PATCH /records/prune', () => {
  it('has_more is exact: limit 2 over 5 records gives 2/true, 2/true, 1/false, then 0/false', async () => {
    await seed('Five', 5)
    const until = await cursorOf('Five', -1)
    const steps = []
    for (let i = 0; i < 4; i++) {
      steps.push(await pruneOk({ model: 'Five', until_cursor: until, limit: 2 }))
      if (i === 0) expect(await prunedIds('Five')).toEqual(['Five-0', 'Five-1'])
    }
    expect(steps).toEqual([
      { count: 2, has_more: true },
      { count: 2, has_more: true },
      { count: 1, has_more: false },
      { count: 0, has_more: false },
    ])
    expect(await prunedIds('Five')).toHaveLength(5)
  })

  it.each([
    ['the limit reached exactly at the cursor', 3, 2, 3, { count: 3, has_more: false }],
    ['records after the cursor', 5, 2, 1000, { count: 3, has_more: false }],
    ['a limit that stops before the cursor', 5, 4, 3, { count: 3, has_more: true }],
  ])('has_more ignores %s', async (_label, n, untilIndex, limit, expected) => {
    const model = `Exact${n}x${untilIndex}x${limit}`
    await seed(model, n, { oneBatch: true })
    expect(await pruneOk({ model, until_cursor: await cursorOf(model, untilIndex), limit })).toEqual(expected)
  })

  it('is inclusive of until_cursor and keeps metadata and cursors', async () => {
    await seed('Incl', 4, { oneBatch: true })
    const before = await list('Incl')
    expect(await pruneOk({ model: 'Incl', until_cursor: before[1]!._nango_metadata.cursor })).toEqual({
      count: 2,
      has_more: false,
    })
    const after = await list('Incl')
    expect(after.map((r) => Object.keys(r))).toEqual([
      ['id', '_nango_metadata'],
      ['id', '_nango_metadata'],
      ['id', 'payload', '_nango_metadata'],
      ['id', 'payload', '_nango_metadata'],
    ])
    expect(after.map((r) => withoutPrunedAt(r._nango_metadata))).toEqual(
      before.map((r) => withoutPrunedAt(r._nango_metadata)),
    )
    expect(after.map((r) => r._nango_metadata.pruned_at !== null)).toEqual([true, true, false, false])
  })

  it('prunes deleted records too, and never counts a pruned record twice', async () => {
    await seed('Del', 3)
    await batchDelete(t.db.kysely, ds('Del'), [{ id: 'Del-0' }])
    const records = await list('Del')
    expect(records.map((r) => r.id)).toEqual(['Del-1', 'Del-2', 'Del-0'])
    expect(await pruneOk({ model: 'Del', until_cursor: records[0]!._nango_metadata.cursor })).toEqual({
      count: 1,
      has_more: false,
    })
    expect(await pruneOk({ model: 'Del', until_cursor: records[2]!._nango_metadata.cursor })).toEqual({
      count: 2,
      has_more: false,
    })
    const deleted = (await list('Del')).find((r) => r.id === 'Del-0')!
    expect(deleted).toEqual({
      id: 'Del-0',
      _nango_metadata: expect.objectContaining({ last_action: 'DELETED' }),
    })
    expect(deleted._nango_metadata.deleted_at).not.toBeNull()
    expect(deleted._nango_metadata.pruned_at).not.toBeNull()
  })

  it('defaults to 1000 records a request', async () => {
    await seed('Thousand', 1001, { oneBatch: true })
    const until = await cursorOf('Thousand', -1)
    expect(await pruneOk({ model: 'Thousand', until_cursor: until })).toEqual({ count: 1000, has_more: true })
    expect(await pruneOk({ model: 'Thousand', until_cursor: until })).toEqual({ count: 1, has_more: false })
  })

  it.each([
    ['before every record', 'Early', b64('2000-01-01T00:00:00+00:00||1'), { count: 0, has_more: false }],
    ['after every record', 'Late', b64('2999-01-01T00:00:00Z||1'), { count: 2, has_more: false }],
  ])('accepts any well-formed cursor: %s', async (_label, model, until_cursor, expected) => {
    await seed(model, 2)
    expect(await pruneOk({ model, until_cursor })).toEqual(expected)
  })

  it('prunes nothing, and creates nothing, for a model without records', async () => {
    const until_cursor = b64('2999-01-01T00:00:00Z||1')
    expect(await pruneOk({ model: 'Absent', variant: 'v9', until_cursor })).toEqual({
      count: 0,
      has_more: false,
    })
    const { rows } = await sql`SELECT 1 FROM datasets WHERE model = 'Absent'`.execute(t.db.kysely)
    expect(rows).toEqual([])
  })

  it('treats an equivalent cursor (Z instead of +00:00, URL-safe, unpadded) as the same position', async () => {
    await seed('Equiv', 3, { oneBatch: true })
    const [at, id] = Buffer.from(await cursorOf('Equiv', 1), 'base64')
      .toString()
      .split('||')
    const until = b64(`${at!.replace('+00:00', 'Z')}||${id}`)
      .replace(/=+$/, '')
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
    expect(await pruneOk({ model: 'Equiv', until_cursor: until })).toEqual({ count: 2, has_more: false })
  })

  it('keeps variants apart', async () => {
    await seed('Var', 2)
    await seed('Var', 2, { variant: 'v2' })
    const until = (await list('Var', 'v2')).at(-1)!._nango_metadata.cursor
    expect(await pruneOk({ model: 'Var', variant: 'v2', until_cursor: until })).toEqual({
      count: 2,
      has_more: false,
    })
    expect(await prunedIds('Var')).toEqual([])
    expect((await list('Var', 'v2')).every((r) => r._nango_metadata.pruned_at !== null)).toBe(true)
    // the base dataset's records were saved earlier, so a later v2 cursor covers their position
    expect(await pruneOk({ model: 'Var', variant: 'base', until_cursor: until })).toEqual({
      count: 2,
      has_more: false,
    })
  })

  it('re-saving a pruned record restores its payload and clears pruned_at', async () => {
    await seed('Restore', 2, { oneBatch: true })
    const before = await list('Restore')
    await pruneOk({ model: 'Restore', until_cursor: before[1]!._nango_metadata.cursor })
    await seed('Restore', 2, { oneBatch: true })
    const after = await list('Restore')
    expect(after).toEqual(before)
    // and it can be pruned again
    expect(await pruneOk({ model: 'Restore', until_cursor: after[1]!._nango_metadata.cursor })).toEqual({
      count: 2,
      has_more: false,
    })
  })

  it('finds a record restored in place between pruned ones, and only it', async () => {
    await seed('Between', 4, { oneBatch: true })
    const until = await cursorOf('Between', -1)
    expect(await pruneOk({ model: 'Between', until_cursor: until })).toEqual({ count: 4, has_more: false })
    // Saved unchanged, Between-1 gets its payload back and keeps its place in the stream.
    await batchSave(t.db.kysely, t.sealer, ds('Between'), [{ id: 'Between-1', payload: 'data 1' }])
    expect(await prunedIds('Between')).toEqual(['Between-0', 'Between-2', 'Between-3'])
    expect(await pruneOk({ model: 'Between', until_cursor: until, limit: 1 })).toEqual({
      count: 1,
      has_more: false,
    })
    expect(await prunedIds('Between')).toHaveLength(4)
  })

  it('counts exactly past pruned records that lie beyond the prune mark (deleted after a prune)', async () => {
    await seed('Past', 3, { oneBatch: true })
    expect(await pruneOk({ model: 'Past', until_cursor: await cursorOf('Past', -1) })).toEqual({
      count: 3,
      has_more: false,
    })
    for (const id of ['New-0', 'New-1', 'New-2']) {
      await batchSave(t.db.kysely, t.sealer, ds('Past'), [{ id, payload: id }])
    }
    // Deleting moves a pruned record to the end of the stream, still pruned: past the prune mark.
    await batchDelete(t.db.kysely, ds('Past'), [{ id: 'Past-0' }])
    await batchDelete(t.db.kysely, ds('Past'), [{ id: 'Past-1' }])
    for (const id of ['New-3', 'New-4']) {
      await batchSave(t.db.kysely, t.sealer, ds('Past'), [{ id, payload: id }])
    }
    const order = (await list('Past')).map((r) => r.id)
    expect(order).toEqual(['Past-2', 'New-0', 'New-1', 'New-2', 'Past-0', 'Past-1', 'New-3', 'New-4'])
    const until = await cursorOf('Past', -1)
    // The first four records after the mark hold one pruned already; a limit of 4 still prunes four.
    expect(await pruneOk({ model: 'Past', until_cursor: until, limit: 4 })).toEqual({
      count: 4,
      has_more: true,
    })
    expect(await prunedIds('Past')).toEqual(order.slice(0, 7))
    expect(await pruneOk({ model: 'Past', until_cursor: until, limit: 4 })).toEqual({
      count: 1,
      has_more: false,
    })
    expect(await pruneOk({ model: 'Past', until_cursor: until, limit: 4 })).toEqual({
      count: 0,
      has_more: false,
    })
    // has_more looks past pruned records too: only pruned ones between the limit and the cursor.
    await batchSave(t.db.kysely, t.sealer, ds('Past'), [{ id: 'New-5', payload: 'x' }])
    await batchDelete(t.db.kysely, ds('Past'), [{ id: 'Past-2' }])
    expect(await pruneOk({ model: 'Past', until_cursor: await cursorOf('Past', -1), limit: 1 })).toEqual({
      count: 1,
      has_more: false,
    })
  })

  it('empties each record in place, on the heap page it was on (migrations/0013: pages keep room)', async () => {
    // 1 KB records fill their pages as the benchmarks' do; in place means a HOT update, no index touched.
    const records = Array.from({ length: 300 }, (_, i) => ({ id: `InPlace-${i}`, text: 'x'.repeat(900) }))
    for (let i = 0; i < records.length; i += 100) {
      await batchSave(t.db.kysely, t.sealer, ds('InPlace'), records.slice(i, i + 100))
    }
    const pages = async () =>
      (
        await sql<{ external_id: string; page: string }>`
          SELECT external_id, (ctid::text::point)[0]::text AS page FROM records
          WHERE connection_pk = ${conn} AND model = 'InPlace' ORDER BY external_id`.execute(t.db.kysely)
      ).rows
    const before = await pages()
    expect(new Set(before.map((r) => r.page)).size).toBeGreaterThan(30)
    const until = await cursorOf('InPlace', -1)
    expect(await pruneOk({ model: 'InPlace', until_cursor: until })).toEqual({ count: 300, has_more: false })
    expect(await prunedIds('InPlace')).toHaveLength(300)
    expect(await pages()).toEqual(before)
  })
})

describe('prune errors', () => {
  const until_cursor = b64('2024-01-01T00:00:00+00:00||1')
  it.each([
    ['garbage until_cursor', { model: 'Five', until_cursor: 'nope' }, 'invalid_cursor'],
    [
      'Nango uuid cursor',
      { model: 'Five', until_cursor: b64('2024-03-04T06:59:51Z||15ccc805-64d5-4940-a7e0-45fc704997a1') },
      'invalid_cursor',
    ],
    ['unknown key', { model: 'Five', until_cursor, extra: 1 }, 'invalid_body'],
    ['missing until_cursor', { model: 'Five' }, 'invalid_body'],
    ['missing model', { until_cursor }, 'invalid_body'],
    ['lower-case model', { model: 'five', until_cursor }, 'invalid_body'],
    ['empty until_cursor', { model: 'Five', until_cursor: '' }, 'invalid_body'],
    ['until_cursor over 1000 chars', { model: 'Five', until_cursor: 'A'.repeat(1001) }, 'invalid_body'],
    ['limit 0', { model: 'Five', until_cursor, limit: 0 }, 'invalid_body'],
    ['limit 10001', { model: 'Five', until_cursor, limit: 10_001 }, 'invalid_body'],
    ['limit 1.5', { model: 'Five', until_cursor, limit: 1.5 }, 'invalid_body'],
    ['limit as a string', { model: 'Five', until_cursor, limit: '5' }, 'invalid_body'],
  ])('%s -> 400 %s', async (_label, body, code) => {
    const res = await prune(body)
    expect(res.statusCode).toBe(400)
    expect(res.json().error.code).toBe(code)
  })

  it('rejects malformed JSON, a query string, missing headers and an unknown connection', async () => {
    const json = { ...hdrs(), 'content-type': 'application/json' }
    expect((await prune('{"model":', json)).json().error.code).toBe('invalid_json')
    const query = await prune({ model: 'Five', until_cursor }, hdrs(), '/records/prune?model=Five')
    expect(query.json().error).toMatchObject({
      code: 'invalid_query_params',
      errors: [{ code: 'unrecognized_keys' }],
    })
    const headers = await prune({ model: 'Five', until_cursor }, bearer(t.keys.dev))
    expect(headers.json().error.errors.map((e: { path: string[] }) => e.path)).toEqual([
      ['connection-id'],
      ['provider-config-key'],
    ])
    const unknown = await prune({ model: 'Five', until_cursor }, hdrs({ 'connection-id': 'nope' }))
    expect([unknown.statusCode, unknown.json().error.code]).toEqual([400, 'unknown_connection'])
  })

  it('needs environment:records:write', async () => {
    const reader = await t.keyWith(['environment:records:read'])
    const res = await prune({ model: 'Five', until_cursor }, hdrs(bearer(reader)))
    expect(res.statusCode).toBe(403)
    expect(res.json().error.message).toContain('environment:records:write')
  })
})

describe('through @nangohq/node', () => {
  const base = { providerConfigKey: PCK, connectionId: 'c1' }

  it('pruneRecords prunes in steps, listRecords shows the pruned records, re-saving restores them', async () => {
    await seed('Client', 3, { oneBatch: true })
    const { records } = await nango.listRecords({ ...base, model: 'Client' })
    const untilCursor = records.at(-1)!._nango_metadata.cursor
    expect(await nango.pruneRecords({ ...base, model: 'Client', untilCursor, limit: 2 })).toEqual({
      count: 2,
      has_more: true,
    })
    expect(await nango.pruneRecords({ ...base, model: 'Client', untilCursor })).toEqual({
      count: 1,
      has_more: false,
    })
    const pruned = await nango.listRecords({ ...base, model: 'Client' })
    expect(pruned.records.map((r) => Object.keys(r))).toEqual(Array(3).fill(['id', '_nango_metadata']))
    await seed('Client', 3, { oneBatch: true })
    const restored = await nango.listRecords({ ...base, model: 'Client' })
    expect(restored.records).toEqual(records)
  })

  it('pruneRecords with a variant, and its errors as axios errors', async () => {
    await seed('ClientV', 1, { variant: 'v2' })
    const { records } = await nango.listRecords({ ...base, model: 'ClientV', variant: 'v2' })
    const untilCursor = records[0]!._nango_metadata.cursor
    expect(await nango.pruneRecords({ ...base, model: 'ClientV', variant: 'v2', untilCursor })).toEqual({
      count: 1,
      has_more: false,
    })
    const err = await nango
      .pruneRecords({ ...base, model: 'ClientV', untilCursor: 'bad' })
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ response: { status: 400, data: { error: { code: 'invalid_cursor' } } } })
  })
})
