import { randomBytes } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer } from '../../src/crypto.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { decodeCursor } from '../../src/records/cursor.ts'
import { BASE_VARIANT, type Dataset, recordCount } from '../../src/records/datasets.ts'
import { RecordError } from '../../src/records/payload.ts'
import { readPage } from '../../src/records/read.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { batchDelete, batchSave, pruneRecords } from '../helpers/records.ts'

/** batchSave (src/records/save.ts) against a real database: classification, ids, all-or-nothing. */

let database: TestDatabase
let envId: number
const sealer = createSealer(null)
const MODEL = 'Contact'

beforeAll(async () => {
  database = await createTestDatabase()
  envId = (await findEnvironment(database.db.kysely, 'dev'))!.id
})
afterAll(() => database.destroy())

const db = () => database.db.kysely

interface ApiRecord {
  id: string
  [key: string]: unknown
  _nango_metadata: {
    first_seen_at: string
    last_modified_at: string
    last_action: 'ADDED' | 'UPDATED' | 'DELETED'
    deleted_at: string | null
    pruned_at: string | null
    cursor: string
  }
}

/** A dataset on a connection of its own, so tests in this file never see each other's records. */
async function newDataset() {
  const connectionId = `conn-${randomBytes(4).toString('hex')}`
  const { connection } = await upsertConnection(db(), sealer, envId, {
    providerConfigKey: 'crm',
    connectionId,
  })
  const ds: Dataset = { connectionPk: connection.id, model: MODEL, variant: BASE_VARIANT }
  const get = async () => {
    const target = {
      environmentId: envId,
      providerConfigKey: 'crm',
      connectionId,
      model: MODEL,
      variant: BASE_VARIANT,
    }
    const page = await readPage(database.db, sealer, target, { limit: 10_000, maxBytes: 1 << 30 })
    expect(page).not.toBeNull()
    const body = page!.body.toString()
    return { body, records: (JSON.parse(body) as { records: ApiRecord[] }).records }
  }
  const byId = async (id: string) => (await get()).records.find((r) => r.id === id)
  return { ds, get, byId }
}

/** Every row of the dataset as stored, timestamps as Postgres text (microseconds). */
async function rows(ds: Dataset) {
  const { rows } = await sql<{
    external_id: string
    payload: string | null
    payload_hash: string
    first_seen_at: string
    last_modified_at: string
    deleted_at: string | null
    pruned_at: string | null
  }>`
    SELECT external_id, payload, payload_hash, first_seen_at::text, last_modified_at::text, deleted_at::text,
           pruned_at::text
    FROM records WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
    ORDER BY external_id`.execute(db())
  return rows
}
const row = async (ds: Dataset, id: string) => (await rows(ds)).find((r) => r.external_id === id)

/** datasets.record_count must equal the live rows after every write. */
async function expectExactCount(ds: Dataset, expected: number) {
  const { rows: live } = await sql<{ n: string }>`
    SELECT count(*) AS n FROM records
    WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
      AND deleted_at IS NULL`.execute(db())
  expect(Number(live[0]!.n)).toBe(expected)
  expect(await recordCount(db(), ds)).toBe(expected)
}

describe('batchSave', () => {
  it('adds new records, stores `id` first, strips _nango_metadata, and GET shows them as ADDED', async () => {
    const { ds, get } = await newDataset()
    const result = await batchSave(db(), sealer, ds, [
      { name: 'Ada', id: 'a', _nango_metadata: { last_action: 'DELETED', cursor: 'forged' }, tags: ['x'] },
      { id: 'b', nested: { deep: { v: 1 } } },
    ])
    // The lists are sets: their order is not part of the contract.
    expect({ ...result, added: result.added.sort() }).toEqual({
      added: ['a', 'b'],
      updated: [],
      deleted: [],
      unchanged: [],
      duplicates: [],
      ignored: [],
    })
    await expectExactCount(ds, 2)

    expect((await row(ds, 'a'))!.payload).toBe('{"id":"a","name":"Ada","tags":["x"]}')
    const { body, records } = await get()
    expect(body).toContain('{"id":"a","name":"Ada","tags":["x"],"_nango_metadata":{"first_seen_at":')
    const a = records.find((r) => r.id === 'a')!
    expect(Object.keys(a)).toEqual(['id', 'name', 'tags', '_nango_metadata'])
    expect(Object.keys(a._nango_metadata)).toEqual([
      'first_seen_at',
      'last_modified_at',
      'last_action',
      'deleted_at',
      'pruned_at',
      'cursor',
    ])
    expect(a._nango_metadata).toMatchObject({ last_action: 'ADDED', deleted_at: null, pruned_at: null })
    expect(a._nango_metadata.cursor).not.toBe('forged')
    expect(a._nango_metadata.first_seen_at).toBe(a._nango_metadata.last_modified_at)
    expect(a._nango_metadata.last_modified_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00$/)
  })

  it('stores numeric ids as strings, strips NUL characters, and accepts ids of exactly 255 characters', async () => {
    const { ds, get } = await newDataset()
    const long = 'x'.repeat(255)
    const result = await batchSave(db(), sealer, ds, [
      { id: 42 },
      { id: -7.5 },
      { id: 'a\u0000b\u0000' },
      { id: long },
      { id: `${'y'.repeat(255)}\u0000` },
    ])
    expect(result.added.sort()).toEqual(['42', '-7.5', 'ab', long, 'y'.repeat(255)].sort())
    const { records } = await get()
    expect(records.map((r) => r.id).sort()).toEqual(['-7.5', '42', 'ab', long, 'y'.repeat(255)].sort())
    expect(records.every((r) => typeof r.id === 'string')).toBe(true)

    // The number and its string are one record; the NUL-stripped id matches the plain one.
    const again = await batchSave(db(), sealer, ds, [{ id: '42' }, { id: 'ab' }])
    expect(again.unchanged.sort()).toEqual(['42', 'ab'])
    await expectExactCount(ds, 5)
  })

  it('changed payload is UPDATED (cursor moves, first_seen_at stays); identical payload is unchanged and not rewritten', async () => {
    const { ds, byId } = await newDataset()
    await batchSave(db(), sealer, ds, [
      { id: 'c', v: 1 },
      { id: 'd', v: 1 },
    ])
    const before = (await byId('c'))!._nango_metadata
    const beforeRow = (await row(ds, 'd'))!

    const result = await batchSave(db(), sealer, ds, [
      { id: 'c', v: 2 },
      { id: 'd', v: 1 },
    ])
    expect(result).toMatchObject({ added: [], updated: ['c'], unchanged: ['d'] })
    const c = (await byId('c'))!
    expect(c.v).toBe(2)
    expect(c._nango_metadata.last_action).toBe('UPDATED')
    expect(c._nango_metadata.first_seen_at).toBe(before.first_seen_at)
    expect(c._nango_metadata.last_modified_at > before.last_modified_at).toBe(true)
    expect(c._nango_metadata.cursor).not.toBe(before.cursor)

    // Unchanged: not rewritten at all, so its timestamps (and cursor) are exactly as before.
    expect(await row(ds, 'd')).toEqual(beforeRow)
    const unchangedOnly = await batchSave(db(), sealer, ds, [{ id: 'd', v: 1 }])
    expect(unchangedOnly.unchanged).toEqual(['d'])
    expect(await row(ds, 'd')).toEqual(beforeRow)
    await expectExactCount(ds, 2)
  })

  it('first occurrence of a duplicate id wins and the others are reported', async () => {
    const { ds, byId } = await newDataset()
    const result = await batchSave(db(), sealer, ds, [
      { id: 'd1', v: 'first' },
      { id: 'd1', v: 'second' },
      { id: 5 },
      { id: '5', v: 'string five' },
      { id: 'd1', v: 'third' },
    ])
    expect(result.added.sort()).toEqual(['5', 'd1'])
    expect(result.duplicates).toEqual(['d1', '5', 'd1'])
    expect((await byId('d1'))!.v).toBe('first')
    expect((await byId('5'))!.v).toBeUndefined()
    await expectExactCount(ds, 2)
  })

  it('re-saving a deleted record undeletes it as ADDED with first_seen_at reset', async () => {
    const { ds, byId } = await newDataset()
    await batchSave(db(), sealer, ds, [{ id: 'u', v: 1 }, { id: 'keep' }])
    const original = (await byId('u'))!._nango_metadata
    await batchDelete(db(), ds, [{ id: 'u' }])
    await expectExactCount(ds, 1)

    const result = await batchSave(db(), sealer, ds, [{ id: 'u', v: 1 }])
    expect(result).toMatchObject({ added: ['u'], updated: [], unchanged: [] })
    const meta = (await byId('u'))!._nango_metadata
    expect(meta.last_action).toBe('ADDED')
    expect(meta.deleted_at).toBeNull()
    expect(meta.first_seen_at > original.first_seen_at).toBe(true)
    expect(meta.first_seen_at).toBe(meta.last_modified_at)
    await expectExactCount(ds, 2)
  })

  it('re-saving a pruned record restores its payload; identical data keeps its cursor, changed data moves it', async () => {
    const { ds, byId } = await newDataset()
    await batchSave(db(), sealer, ds, [
      { id: 'p', v: 1 },
      { id: 'q', v: 1 },
    ])
    const before = (await byId('q'))!._nango_metadata
    const pruned = await pruneRecords(db(), ds, decodeCursor(before.cursor)!, 1000)
    expect(pruned.count).toBe(2)
    expect((await row(ds, 'p'))!.payload).toBeNull()
    expect((await byId('p'))!.v).toBeUndefined()
    expect((await byId('p'))!._nango_metadata.pruned_at).not.toBeNull()

    const result = await batchSave(db(), sealer, ds, [
      { id: 'p', v: 2 },
      { id: 'q', v: 1 },
    ])
    expect(result).toMatchObject({ added: [], updated: ['p'], unchanged: ['q'] })
    const q = (await byId('q'))!
    expect(q.v).toBe(1)
    expect(q._nango_metadata).toMatchObject({ pruned_at: null, cursor: before.cursor })
    expect(q._nango_metadata.last_modified_at).toBe(before.last_modified_at)
    const p = (await byId('p'))!
    expect(p).toMatchObject({ v: 2, _nango_metadata: { pruned_at: null, last_action: 'UPDATED' } })
    expect(p._nango_metadata.last_modified_at > before.last_modified_at).toBe(true)
    await expectExactCount(ds, 2)
  })

  it('gives one batch one timestamp, strictly later than every earlier write, so GET order is commit order', async () => {
    const { ds, get } = await newDataset()
    await batchSave(db(), sealer, ds, [{ id: 'b1' }, { id: 'b2' }, { id: 'b3' }])
    expect(new Set((await rows(ds)).map((r) => r.last_modified_at)).size).toBe(1)
    await batchSave(db(), sealer, ds, [{ id: 'c1' }, { id: 'b1', v: 'changed' }])
    await batchDelete(db(), ds, [{ id: 'b2' }])
    await batchSave(db(), sealer, ds, [{ id: 'd1' }])

    const all = await rows(ds)
    const stamp = (id: string) => all.find((r) => r.external_id === id)!.last_modified_at
    expect(new Set([stamp('c1'), stamp('b1')]).size).toBe(1)
    expect(stamp('b1') > stamp('b3')).toBe(true)
    expect(stamp('b2') > stamp('b1')).toBe(true)
    expect(stamp('d1') > stamp('b2')).toBe(true)

    const order = (await get()).records.map((r) => r.id)
    expect(order.slice(0, 1)).toEqual(['b3'])
    expect(order.slice(1, 3).sort()).toEqual(['b1', 'c1'])
    expect(order.slice(3)).toEqual(['b2', 'd1'])
    await expectExactCount(ds, 4)
  })
})

const deeplyNested = (levels: number): unknown => (levels === 0 ? 'leaf' : { a: deeplyNested(levels - 1) })

describe('batchSave refuses a bad record and writes nothing from the batch', () => {
  const bad: [string, unknown, RegExp][] = [
    ['a missing id', { name: 'no id' }, /needs an "id"/],
    ['an empty id', { id: '' }, /needs an "id"/],
    ['an id that is only NUL', { id: '\u0000' }, /needs an "id"/],
    ['an id of 256 characters', { id: 'z'.repeat(256) }, /needs an "id"/],
    ['a boolean id', { id: true }, /needs an "id"/],
    ['an object id', { id: { x: 1 } }, /needs an "id"/],
    ['a non-finite number id', { id: Number.POSITIVE_INFINITY }, /needs an "id"/],
    ['a null id', { id: null }, /needs an "id"/],
    ['an array', [{ id: 'arr' }], /must be a JSON object/],
    ['a string', 'just text', /must be a JSON object/],
    ['null', null, /must be a JSON object/],
    ['JSON nested 65 levels', { id: 'deep', a: deeplyNested(64) }, /nested more than 64 levels/],
    [
      'JSON nested 10,000 levels',
      JSON.parse(`{"id":"deep",${'"a":{'.repeat(10_000)}${'}'.repeat(10_000)}}`),
      /nested/,
    ],
    ['a __proto__ key', JSON.parse('{"id":"proto","__proto__":{"polluted":true}}'), /__proto__/],
    ['a nested __proto__ key', JSON.parse('{"id":"proto","x":[{"__proto__":{"p":1}}]}'), /__proto__/],
  ]

  it.each(bad)('%s', async (_what, record, reason) => {
    const { ds } = await newDataset()
    await batchSave(db(), sealer, ds, [
      { id: 'existing', v: 1 },
      { id: 'gone', v: 1 },
    ])
    await batchDelete(db(), ds, [{ id: 'gone' }])
    const before = await rows(ds)

    const batch = [{ id: 'new-1' }, { id: 'existing', v: 2 }, record, { id: 'gone', v: 1 }, { id: 'new-2' }]
    const error = await batchSave(db(), sealer, ds, batch).catch((err: unknown) => err)
    expect(error).toBeInstanceOf(RecordError)
    expect((error as RecordError).index).toBe(2)
    expect((error as RecordError).message).toMatch(/^record 2\b/)
    expect((error as RecordError).message).toMatch(reason)

    expect(await rows(ds)).toEqual(before)
    await expectExactCount(ds, 1)
    expect(Object.prototype).not.toHaveProperty('polluted')
  })

  it('names the id of a record whose id is fine but whose content is not', async () => {
    const { ds } = await newDataset()
    const error = (await batchSave(db(), sealer, ds, [
      { id: 'ok' },
      { id: 'deep-one', a: deeplyNested(100) },
    ]).catch((err: unknown) => err)) as RecordError
    expect(error).toMatchObject({ index: 1, recordId: 'deep-one' })
    expect(error.message).toContain('"deep-one"')
    expect(await rows(ds)).toEqual([])
    await expectExactCount(ds, 0)
  })

  it('accepts JSON nested exactly 64 levels', async () => {
    const { ds } = await newDataset()
    const result = await batchSave(db(), sealer, ds, [{ id: 'deep', a: deeplyNested(63) }])
    expect(result.added).toEqual(['deep'])
  })
})

describe('records go with their dataset (migrations/0014: a trigger, not a foreign key)', () => {
  const count = async (connectionPk: number, model?: string) =>
    (
      await sql<{ n: number }>`SELECT count(*)::int AS n FROM records
        WHERE connection_pk = ${connectionPk} AND (${model ?? null}::text IS NULL OR model = ${model ?? null})`.execute(
        db(),
      )
    ).rows[0]!.n

  it('deleting a dataset deletes its records and no others; deleting the connection deletes the rest', async () => {
    const { ds } = await newDataset()
    const other: Dataset = { ...ds, model: 'Deal' }
    await batchSave(db(), sealer, ds, [{ id: 'a' }, { id: 'b' }, { id: 'c' }])
    await batchSave(db(), sealer, other, [{ id: 'x' }, { id: 'y' }])
    expect(await count(ds.connectionPk)).toBe(5)

    await db()
      .deleteFrom('datasets')
      .where('connection_pk', '=', ds.connectionPk)
      .where('model', '=', MODEL)
      .execute()
    expect(await count(ds.connectionPk, MODEL)).toBe(0)
    expect(await count(ds.connectionPk, 'Deal')).toBe(2)

    // connections -> datasets is a cascading key; the trigger runs for the cascaded delete too.
    await db().deleteFrom('connections').where('id', '=', ds.connectionPk).execute()
    expect(await count(ds.connectionPk)).toBe(0)
  })
})
