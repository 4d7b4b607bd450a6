import { randomBytes } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer } from '../../src/crypto.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { BASE_VARIANT, type Dataset, recordCount } from '../../src/records/datasets.ts'
import { TrackDeletesError } from '../../src/records/delete.ts'
import { RecordError } from '../../src/records/payload.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import {
  batchDelete,
  batchSave,
  batchUpdate,
  pruneRecords,
  trackDeletesEnd,
  trackDeletesStart,
} from '../helpers/records.ts'

/** batchUpdate, batchDelete and delete tracking, with datasets.record_count checked after each. */

let database: TestDatabase
let envId: number
const sealer = createSealer(null)

beforeAll(async () => {
  database = await createTestDatabase()
  envId = (await findEnvironment(database.db.kysely, 'dev'))!.id
})
afterAll(() => database.destroy())

const db = () => database.db.kysely

/** A dataset on a connection of its own, so tests never see each other's records. */
async function newDataset(variant = BASE_VARIANT, model = 'Ticket'): Promise<Dataset> {
  const connectionId = `conn-${randomBytes(4).toString('hex')}`
  const { connection } = await upsertConnection(db(), sealer, envId, {
    providerConfigKey: 'desk',
    connectionId,
  })
  return { connectionPk: connection.id, model, variant }
}

interface Row {
  external_id: string
  data: Record<string, unknown> | null
  first_seen_at: string
  last_modified_at: string
  deleted_at: string | null
  pruned_at: string | null
}

async function rows(ds: Dataset): Promise<Row[]> {
  const { rows } = await sql<Omit<Row, 'data'> & { payload: string | null }>`
    SELECT external_id, payload, first_seen_at::text, last_modified_at::text, deleted_at::text, pruned_at::text
    FROM records WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
    ORDER BY external_id`.execute(db())
  return rows.map(({ payload, ...r }) => ({ ...r, data: payload === null ? null : JSON.parse(payload) }))
}
const row = async (ds: Dataset, id: string) => (await rows(ds)).find((r) => r.external_id === id)

/** datasets.record_count equals the live rows, and is `expected`. */
async function expectExactCount(ds: Dataset, expected: number) {
  const { rows: live } = await sql<{ n: string }>`
    SELECT count(*) AS n FROM records
    WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
      AND deleted_at IS NULL`.execute(db())
  expect(Number(live[0]!.n)).toBe(expected)
  expect(await recordCount(db(), ds)).toBe(expected)
}

const save = (ds: Dataset, records: unknown[]) => batchSave(db(), sealer, ds, records)

describe('batchUpdate', () => {
  it('deep-merges into the stored record: objects recursively, arrays and scalars replaced', async () => {
    const ds = await newDataset()
    await save(ds, [
      { id: 't1', title: 'Old', meta: { a: 1, inner: { x: 1, y: 2 } }, tags: ['a', 'b'], gone: { k: 1 } },
    ])
    const before = (await row(ds, 't1'))!

    const result = await batchUpdate(db(), sealer, ds, [
      { id: 't1', meta: { inner: { y: 3, z: 4 }, b: [1] }, tags: ['c'], gone: null, added: true },
    ])
    expect(result).toEqual({
      added: [],
      updated: ['t1'],
      deleted: [],
      unchanged: [],
      duplicates: [],
      ignored: [],
    })
    const after = (await row(ds, 't1'))!
    expect(after.data).toEqual({
      id: 't1',
      title: 'Old',
      meta: { a: 1, inner: { x: 1, y: 3, z: 4 }, b: [1] },
      tags: ['c'],
      gone: null,
      added: true,
    })
    expect(Object.keys(after.data!)[0]).toBe('id')
    expect(after.first_seen_at).toBe(before.first_seen_at)
    expect(after.last_modified_at > before.last_modified_at).toBe(true)
    await expectExactCount(ds, 1)
  })

  it('ignores unknown, deleted and pruned ids, creating nothing and restoring nothing', async () => {
    const ds = await newDataset()
    await save(ds, [
      { id: 'pruned', v: 1 },
      { id: 'deleted', v: 1 },
    ])
    await pruneRecords(db(), ds, { modifiedAt: '2999-01-01T00:00:00Z', id: Number.MAX_SAFE_INTEGER }, 1000)
    await save(ds, [{ id: 'live', v: 1 }])
    await batchDelete(db(), ds, [{ id: 'deleted' }])
    const before = await rows(ds)

    const result = await batchUpdate(db(), sealer, ds, [
      { id: 'unknown', v: 2 },
      { id: 'deleted', v: 2 },
      { id: 'pruned', v: 2 },
      { id: 'live', v: 2 },
    ])
    expect(result.updated).toEqual(['live'])
    expect(result.ignored.sort()).toEqual(['deleted', 'pruned', 'unknown'])
    const after = await rows(ds)
    expect(after.map((r) => r.external_id)).toEqual(['deleted', 'live', 'pruned'])
    expect(after.find((r) => r.external_id === 'pruned')).toEqual(
      before.find((r) => r.external_id === 'pruned'),
    )
    expect(after.find((r) => r.external_id === 'deleted')).toEqual(
      before.find((r) => r.external_id === 'deleted'),
    )
    await expectExactCount(ds, 2)
  })

  it('a merge that changes nothing is unchanged and does not move the cursor', async () => {
    const ds = await newDataset()
    await save(ds, [{ id: 'same', a: 1, nested: { b: [1, 2] } }])
    const before = (await row(ds, 'same'))!
    const result = await batchUpdate(db(), sealer, ds, [
      { id: 'same', nested: { b: [1, 2] } },
      { id: 'same', a: 9 },
    ])
    expect(result).toMatchObject({ updated: [], unchanged: ['same'], duplicates: ['same'] })
    expect(await row(ds, 'same')).toEqual(before)
    await expectExactCount(ds, 1)
  })

  it('refuses a bad partial record and writes nothing from the batch', async () => {
    const ds = await newDataset()
    await save(ds, [
      { id: 'x', v: 1 },
      { id: 'y', v: 1 },
    ])
    const before = await rows(ds)
    const error = await batchUpdate(db(), sealer, ds, [
      { id: 'x', v: 2 },
      JSON.parse('{"id":"y","__proto__":{"polluted":1}}'),
    ]).catch((err: unknown) => err)
    expect(error).toBeInstanceOf(RecordError)
    expect(error).toMatchObject({ index: 1, recordId: 'y' })
    expect(await rows(ds)).toEqual(before)
    await expectExactCount(ds, 2)
  })
})

describe('batchDelete', () => {
  it('soft-deletes keeping the last payload; repeats are unchanged; unknown ids are ignored without tombstones', async () => {
    const ds = await newDataset()
    await save(ds, [{ id: 'd1', name: 'Kept', deep: { v: 1 } }, { id: 'd2' }, { id: 'd3' }])
    await expectExactCount(ds, 3)

    const first = await batchDelete(db(), ds, [
      { id: 'd1' },
      { id: 'd2', name: 'ignored payload' },
      { id: 'nope' },
      { id: 'd1' },
    ])
    expect(first.deleted.sort()).toEqual(['d1', 'd2'])
    expect(first).toMatchObject({
      added: [],
      updated: [],
      unchanged: [],
      ignored: ['nope'],
      duplicates: ['d1'],
    })
    await expectExactCount(ds, 1)

    const d1 = (await row(ds, 'd1'))!
    expect(d1.data).toEqual({ id: 'd1', name: 'Kept', deep: { v: 1 } })
    expect((await row(ds, 'd2'))!.data).toEqual({ id: 'd2' })
    expect(d1.deleted_at).not.toBeNull()
    expect(d1.deleted_at).toBe(d1.last_modified_at)
    expect(await row(ds, 'nope')).toBeUndefined()

    const again = await batchDelete(db(), ds, [{ id: 'd1' }, { id: 'd3' }])
    expect(again).toMatchObject({ deleted: ['d3'], unchanged: ['d1'], ignored: [] })
    expect(await row(ds, 'd1')).toEqual(d1)
    await expectExactCount(ds, 0)
  })

  it('accepts numeric ids and refuses a batch with a bad one without deleting anything', async () => {
    const ds = await newDataset()
    await save(ds, [{ id: 1 }, { id: 2 }])
    await expect(batchDelete(db(), ds, [{ id: 1 }, { id: '' }])).rejects.toMatchObject({
      name: 'RecordError',
      index: 1,
    })
    await expectExactCount(ds, 2)
    expect((await batchDelete(db(), ds, [{ id: 1 }])).deleted).toEqual(['1'])
    await expectExactCount(ds, 1)
  })
})

describe('trackDeletesStart / trackDeletesEnd', () => {
  it('deletes every live record not saved or updated since the start, unchanged saves included', async () => {
    const ds = await newDataset()
    await save(ds, [{ id: 'saved', v: 1 }, { id: 'updated', v: 1 }, { id: 'vanished', v: 1 }, { id: 'dead' }])
    await batchDelete(db(), ds, [{ id: 'dead' }])
    const deadBefore = (await row(ds, 'dead'))!
    await trackDeletesStart(db(), ds)
    expect((await save(ds, [{ id: 'saved', v: 1 }, { id: 'new' }])).unchanged).toEqual(['saved'])
    expect((await batchUpdate(db(), sealer, ds, [{ id: 'updated', v: 1 }])).unchanged).toEqual(['updated'])
    await expectExactCount(ds, 4)

    expect(await trackDeletesEnd(db(), ds)).toEqual(['vanished'])
    const vanished = (await row(ds, 'vanished'))!
    expect(vanished.deleted_at).not.toBeNull()
    expect(vanished.data).toEqual({ id: 'vanished', v: 1 })
    expect(await row(ds, 'dead')).toEqual(deadBefore)
    await expectExactCount(ds, 3)
  })

  it('ending a window that was never started throws, and so does ending one twice', async () => {
    const ds = await newDataset('base', 'Invoice')
    await save(ds, [{ id: 'i' }])
    await expect(trackDeletesEnd(db(), ds)).rejects.toThrow(TrackDeletesError)
    await expect(trackDeletesEnd(db(), ds)).rejects.toThrow(
      "No track deletes starting point found for model 'Invoice'.",
    )
    await trackDeletesStart(db(), ds)
    await save(ds, [{ id: 'i' }])
    expect(await trackDeletesEnd(db(), ds)).toEqual([])
    await expect(trackDeletesEnd(db(), ds)).rejects.toThrow(TrackDeletesError)
    await expectExactCount(ds, 1)
  })

  it('a second start keeps the open window, so a failed run is carried over', async () => {
    const ds = await newDataset()
    await save(ds, [{ id: 'a' }, { id: 'b' }, { id: 'c' }])
    await trackDeletesStart(db(), ds)
    await save(ds, [{ id: 'a' }]) // the first run saves `a`, then fails before trackDeletesEnd
    await trackDeletesStart(db(), ds)
    await save(ds, [{ id: 'b' }])
    expect(await trackDeletesEnd(db(), ds)).toEqual(['c'])
    await expectExactCount(ds, 2)
  })

  it('records saved before the start are not seen, and an empty window deletes every live record', async () => {
    const ds = await newDataset()
    await save(ds, [{ id: 'before-1' }, { id: 'before-2' }])
    await trackDeletesStart(db(), ds)
    expect((await trackDeletesEnd(db(), ds)).sort()).toEqual(['before-1', 'before-2'])
    await expectExactCount(ds, 0)

    // A new window starts empty: what the previous one saw does not count.
    await save(ds, [{ id: 'before-1' }])
    await trackDeletesStart(db(), ds)
    expect(await trackDeletesEnd(db(), ds)).toEqual(['before-1'])
    await expectExactCount(ds, 0)
  })

  it('only touches its own variant', async () => {
    const base = await newDataset()
    const other = { ...base, variant: 'eu' }
    await save(base, [{ id: 'shared' }, { id: 'base-only' }])
    await save(other, [{ id: 'shared' }, { id: 'eu-only' }])
    await trackDeletesStart(db(), other)
    await save(other, [{ id: 'eu-only' }])
    expect(await trackDeletesEnd(db(), other)).toEqual(['shared'])
    await expectExactCount(other, 1)
    await expectExactCount(base, 2)
    expect((await row(base, 'shared'))!.deleted_at).toBeNull()
  })

  it('keeps record_count exact through a mix of every write, including undelete and prune', async () => {
    const ds = await newDataset()
    await save(
      ds,
      Array.from({ length: 50 }, (_, i) => ({ id: i, v: i })),
    )
    await expectExactCount(ds, 50)
    await batchDelete(
      db(),
      ds,
      Array.from({ length: 20 }, (_, i) => ({ id: i })),
    )
    await expectExactCount(ds, 30)
    await pruneRecords(db(), ds, { modifiedAt: '2999-01-01T00:00:00Z', id: Number.MAX_SAFE_INTEGER }, 1000)
    await expectExactCount(ds, 30)
    await save(
      ds,
      Array.from({ length: 30 }, (_, i) => ({ id: i, v: i })),
    ) // 20 undeleted, 10 restored
    await expectExactCount(ds, 50)
    await trackDeletesStart(db(), ds)
    await batchUpdate(
      db(),
      sealer,
      ds,
      Array.from({ length: 10 }, (_, i) => ({ id: i, v: -i })),
    )
    await batchDelete(db(), ds, [{ id: 0 }, { id: 49 }])
    expect(await trackDeletesEnd(db(), ds)).toHaveLength(39)
    await expectExactCount(ds, 9)
  })
})
