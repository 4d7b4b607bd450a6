/**
 * Retention (SPEC section 5, issue 3): payloads of records not modified for pruneAfterDays are
 * pruned; every record of a dataset whose sync has not run (nor been written) for deleteAfterDays
 * is deleted, with the dataset. Both off when 0, both in bounded passes, both safe to run on
 * several instances at once. The clock is passed in (`now`), never waited for.
 */
import { sql } from 'kysely'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer, type Sealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { BASE_VARIANT, type Dataset, recordCount } from '../../src/records/datasets.ts'
import { pruneLocked } from '../../src/records/prune.ts'
import { readPage } from '../../src/records/read.ts'
import { type RetentionLimits, runRetention } from '../../src/records/retention.ts'
import { createTestDatabase, type TestDatabase, testDatabaseKind } from '../helpers/database.ts'
import { batchDelete, batchSave } from '../helpers/records.ts'

const DAY = 86_400_000
const days = (from: Date, n: number) => new Date(from.getTime() + n * DAY)
const PRUNE_ONLY = { pruneAfterDays: 30, deleteAfterDays: 0 }
const DELETE_ONLY = { pruneAfterDays: 0, deleteAfterDays: 60 }
const MAX_PASSES = 30

interface Row {
  external_id: string
  payload: string | null
  pruned_at: string | null
  deleted_at: string | null
  last_modified_at: string
}

describe('retention', () => {
  let database: TestDatabase
  let sealer: Sealer
  let connection: { id: number; environmentId: number; providerConfigKey: string; connectionId: string }

  beforeAll(async () => {
    // Postgres: a pool of several connections, so concurrent passes really overlap.
    database = await createTestDatabase({ poolMax: 6 })
    sealer = createSealer(null)
    const env = await ensureEnvironment(database.db.kysely, 'dev')
    ;({ connection } = await upsertConnection(database.db.kysely, sealer, env.id, {
      providerConfigKey: 'retention',
      connectionId: 'conn',
    }))
  })
  afterAll(async () => {
    await database?.destroy()
  })
  // runRetention works on every dataset in the database: each test starts from none.
  beforeEach(async () => {
    await sql`DELETE FROM datasets`.execute(database.db.kysely)
  })

  const db = () => database.db.kysely
  const dataset = (model: string): Dataset => ({ connectionPk: connection.id, model, variant: BASE_VARIANT })

  /** Saves `count` records (`deleted` of them then soft-deleted); returns the dataset. */
  async function seed(model: string, count: number, deleted = 0): Promise<Dataset> {
    const ds = dataset(model)
    const records = Array.from({ length: count }, (_, i) => ({
      id: `${model}-${i}`,
      n: i,
      text: `record ${i}`,
    }))
    await batchSave(db(), sealer, ds, records)
    if (deleted > 0) await batchDelete(db(), ds, records.slice(0, deleted))
    return ds
  }

  async function rows(ds: Dataset): Promise<Row[]> {
    const { rows } = await sql<Row>`
      SELECT external_id, payload, pruned_at::text, deleted_at::text, last_modified_at::text FROM records
      WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
      ORDER BY last_modified_at, id`.execute(db())
    return rows
  }

  async function datasetExists(ds: Dataset): Promise<boolean> {
    const row = await db()
      .selectFrom('datasets')
      .select('connection_pk')
      .where('connection_pk', '=', ds.connectionPk)
      .where('model', '=', ds.model)
      .where('variant', '=', ds.variant)
      .executeTakeFirst()
    return row !== undefined
  }

  /** The whole dataset as GET /records renders it: id → metadata (cursor, pruned_at, ...). */
  async function wire(ds: Dataset) {
    const page = await readPage(
      database.db,
      sealer,
      { ...connection, model: ds.model, variant: ds.variant },
      { limit: 10_000, maxBytes: 10 * 1024 * 1024 },
    )
    const body = JSON.parse(page!.body.toString()) as {
      records: {
        id: string
        _nango_metadata: { cursor: string; pruned_at: string | null; last_modified_at: string }
      }[]
    }
    return body.records
  }

  /** record_count is exactly the number of live rows. */
  async function expectExactCount(ds: Dataset) {
    const live = (await rows(ds)).filter((r) => r.deleted_at === null).length
    expect(await recordCount(db(), ds), `record_count of ${ds.model}`).toBe(live)
  }

  /** Runs passes until one does nothing; returns each pass's result. */
  async function passes(settings: typeof PRUNE_ONLY, now: Date, limits?: RetentionLimits) {
    const results: { pruned: number; deleted: number }[] = []
    for (let i = 0; i < MAX_PASSES; i++) {
      const result = await runRetention(db(), settings, now, limits)
      results.push(result)
      if (result.pruned === 0 && result.deleted === 0) return results
    }
    throw new Error(`retention still had work after ${MAX_PASSES} passes`)
  }

  it('prunes records written now at now + 31 days but not at now + 29 days, keeping cursors and counts', async () => {
    const ds = await seed('Contact', 6, 1)
    const now = new Date()
    const before = await rows(ds)
    const wireBefore = await wire(ds)
    expect(await recordCount(db(), ds)).toBe(5)

    expect(await runRetention(db(), PRUNE_ONLY, days(now, 29))).toEqual({ pruned: 0, deleted: 0 })
    expect(await rows(ds)).toEqual(before)

    expect(await runRetention(db(), PRUNE_ONLY, days(now, 31))).toEqual({ pruned: 6, deleted: 0 })
    const after = await rows(ds)
    expect(after.map((r) => r.external_id)).toEqual(before.map((r) => r.external_id))
    for (const [i, row] of after.entries()) {
      expect(row.payload, row.external_id).toBeNull()
      expect(row.pruned_at, row.external_id).not.toBeNull()
      expect(row.last_modified_at).toBe(before[i]!.last_modified_at)
      expect(row.deleted_at).toBe(before[i]!.deleted_at) // deleted records are pruned too, and stay deleted
    }
    const wireAfter = await wire(ds)
    expect(wireAfter.map((r) => r._nango_metadata.cursor)).toEqual(
      wireBefore.map((r) => r._nango_metadata.cursor),
    )
    for (const rec of wireAfter) {
      const { _nango_metadata: meta, ...payload } = rec
      expect(payload).toEqual({ id: rec.id })
      expect(meta.pruned_at).not.toBeNull()
    }
    expect(await recordCount(db(), ds)).toBe(5)
    expect(await datasetExists(ds)).toBe(true)

    // Nothing left to prune: nothing is pruned (or counted) twice.
    expect(await runRetention(db(), PRUNE_ONLY, days(now, 31))).toEqual({ pruned: 0, deleted: 0 })

    // Re-saving restores the payload.
    await batchSave(db(), sealer, ds, [{ id: 'Contact-3', n: 3, text: 'record 3' }])
    const restored = (await rows(ds)).find((r) => r.external_id === 'Contact-3')!
    expect(restored.pruned_at).toBeNull()
    expect(JSON.parse(restored.payload!)).toEqual({ id: 'Contact-3', n: 3, text: 'record 3' })
  })

  it('prunes only the records older than the cutoff', async () => {
    const ds = await seed('Deal', 8)
    // Half of them as if last modified 40 days ago (the oldest half, so cursor order still holds).
    await sql`UPDATE records SET last_modified_at = last_modified_at - interval '40 days', first_seen_at = first_seen_at - interval '40 days'
              WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model}
                AND external_id IN ('Deal-0', 'Deal-1', 'Deal-2', 'Deal-3')`.execute(db())
    const now = new Date()
    expect(await runRetention(db(), PRUNE_ONLY, days(now, 1))).toEqual({ pruned: 4, deleted: 0 })
    const pruned = (await rows(ds)).filter((r) => r.pruned_at !== null).map((r) => r.external_id)
    expect(pruned.sort()).toEqual(['Deal-0', 'Deal-1', 'Deal-2', 'Deal-3'])
    expect(await recordCount(db(), ds)).toBe(8)
  })

  it('finishes datasets with more stale records than one pass allows over several passes', async () => {
    const big = await seed('Big', 25, 3)
    const small = [await seed('Small1', 7), await seed('Small2', 3, 1), await seed('Small3', 1)]
    const now = new Date()
    const limits = { datasets: 2, records: 10 }
    const results = await passes(PRUNE_ONLY, days(now, 31), limits)
    const counts = results.map((r) => r.pruned)
    expect(counts.reduce((a, b) => a + b, 0)).toBe(25 + 7 + 3 + 1)
    for (const count of counts) expect(count).toBeLessThanOrEqual(limits.datasets * limits.records)
    expect(counts.length).toBeGreaterThanOrEqual(4) // Big alone needs 3 passes with work
    for (const ds of [big, ...small]) {
      expect(
        (await rows(ds)).every((r) => r.payload === null && r.pruned_at !== null),
        ds.model,
      ).toBe(true)
      await expectExactCount(ds)
    }
    expect(await recordCount(db(), big)).toBe(22)
  })

  it('a pass with nothing left to prune moves the prune mark past the pruned records, so later passes skip them', async () => {
    const ds = await seed('Mark', 6, 0)
    const now = new Date()
    const key = sql`connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}`
    expect(await runRetention(db(), PRUNE_ONLY, days(now, 31))).toEqual({ pruned: 6, deleted: 0 })
    // As a dataset pruned before migration 0012 stands: pruned records, no mark.
    await sql`UPDATE datasets SET pruned_through_at = NULL, pruned_through_id = NULL WHERE ${key}`.execute(
      db(),
    )

    // A pass of 2 records a dataset walks 3 of the 6 pruned ones, finds nothing to prune past them,
    // and still moves the mark to the last.
    expect(await runRetention(db(), PRUNE_ONLY, days(now, 32), { datasets: 50, records: 2 })).toEqual({
      pruned: 0,
      deleted: 0,
    })
    const last = await sql<{ at: string; id: number }>`
      SELECT last_modified_at::text AS at, id FROM records WHERE ${key}
      ORDER BY last_modified_at DESC, id DESC LIMIT 1`.execute(db())
    const mark = await sql<{ at: string; id: number }>`
      SELECT pruned_through_at::text AS at, pruned_through_id AS id FROM datasets WHERE ${key}`.execute(db())
    expect(mark.rows).toEqual(last.rows)
  })

  it('a pass reads only the records it prunes: the walk starts at the prune mark and stops after limit + 1', async () => {
    // Joined to the dataset's prune mark, the walk was either the inner side of a nested loop,
    // which has no order (every record past the mark fetched and sorted), or began at the
    // dataset's first record with the mark as a filter: 1,000 records or more fetched here to prune
    // 10. Sequential and bitmap scans are turned off, so the test is about what the statement
    // allows, whatever the planner would pick for a table this small.
    const ds = await seed('Walk', 2000)
    const stale = sql`r.last_modified_at < now() + interval '1 day'`
    const fetched = await db()
      .transaction()
      .execute(async (trx) => {
        expect(await pruneLocked(trx, ds, stale, 1000)).toEqual({ count: 1000, hasMore: true })
        await sql`SET LOCAL enable_seqscan = off`.execute(trx)
        await sql`SET LOCAL enable_bitmapscan = off`.execute(trx)
        // Counts not yet reported from earlier transactions of this connection are in the view too.
        const count = async () => {
          const { rows } = await sql<{ fetched: string }>`
            SELECT idx_tup_fetch::text AS fetched FROM pg_stat_xact_user_tables WHERE relname = 'records'`.execute(
            trx,
          )
          return Number(rows[0]!.fetched)
        }
        const before = await count()
        expect(await pruneLocked(trx, ds, stale, 10)).toEqual({ count: 10, hasMore: true })
        return (await count()) - before
      })
    expect(fetched).toBeGreaterThanOrEqual(11)
    expect(fetched).toBeLessThan(50)
  })

  it('pruneAfterDays 0 turns pruning off', async () => {
    const ds = await seed('Kept', 5)
    const before = await rows(ds)
    const now = new Date()
    expect(await runRetention(db(), { pruneAfterDays: 0, deleteAfterDays: 0 }, days(now, 1000))).toEqual({
      pruned: 0,
      deleted: 0,
    })
    expect(await rows(ds)).toEqual(before)
    expect(await datasetExists(ds)).toBe(true)
  })

  it('deletes every record and the dataset when its sync has not run for deleteAfterDays', async () => {
    const idle = await seed('Idle', 6, 2)
    const synced = await seed('Synced', 4, 1)
    const written = await seed('Written', 3)
    const now = new Date()
    // A sync completed recently (50 days on), and a write happened recently.
    await sql`UPDATE datasets SET last_sync_at = ${days(now, 50)} WHERE connection_pk = ${synced.connectionPk}
              AND model = ${synced.model} AND variant = ${synced.variant}`.execute(db())
    await sql`UPDATE datasets SET last_write_at = ${days(now, 50)} WHERE connection_pk = ${written.connectionPk}
              AND model = ${written.model} AND variant = ${written.variant}`.execute(db())

    expect(await runRetention(db(), DELETE_ONLY, days(now, 59))).toEqual({ pruned: 0, deleted: 0 })
    expect(await datasetExists(idle)).toBe(true)

    expect(await runRetention(db(), DELETE_ONLY, days(now, 61))).toEqual({ pruned: 0, deleted: 6 })
    expect(await rows(idle)).toEqual([])
    expect(await datasetExists(idle)).toBe(false)
    expect(await recordCount(db(), idle)).toBe(0)
    expect(await wire(idle)).toEqual([])

    for (const [ds, total, live] of [
      [synced, 4, 3],
      [written, 3, 3],
    ] as const) {
      expect(await datasetExists(ds), ds.model).toBe(true)
      expect(await rows(ds)).toHaveLength(total)
      expect(await recordCount(db(), ds)).toBe(live)
      expect((await rows(ds)).every((r) => r.payload !== null)).toBe(true)
    }
    expect(await runRetention(db(), DELETE_ONLY, days(now, 61))).toEqual({ pruned: 0, deleted: 0 })

    // Writing to the dataset again starts it afresh.
    await seed('Idle', 2)
    expect(await recordCount(db(), idle)).toBe(2)
    expect(await runRetention(db(), DELETE_ONLY, days(now, 59))).toEqual({ pruned: 0, deleted: 0 })
  })

  it('deletes a large idle dataset over several passes, counts exact after each', async () => {
    const ds = await seed('Large', 25, 6)
    const now = new Date()
    const limits = { datasets: 5, records: 10 }
    const deleted: number[] = []
    for (let i = 0; i < MAX_PASSES; i++) {
      const result = await runRetention(db(), DELETE_ONLY, days(now, 61), limits)
      expect(result.pruned).toBe(0)
      if (result.deleted === 0) break
      deleted.push(result.deleted)
      if (await datasetExists(ds)) await expectExactCount(ds)
    }
    expect(deleted).toEqual([10, 10, 5])
    expect(await datasetExists(ds)).toBe(false)
    expect(await rows(ds)).toEqual([])
  })

  it('the pass that deletes the last records of a dataset removes the dataset too', async () => {
    const ds = await seed('Even', 20)
    const now = new Date()
    const limits = { datasets: 5, records: 10 }
    expect(await runRetention(db(), DELETE_ONLY, days(now, 61), limits)).toEqual({ pruned: 0, deleted: 10 })
    expect(await datasetExists(ds)).toBe(true)
    await expectExactCount(ds)
    expect(await runRetention(db(), DELETE_ONLY, days(now, 61), limits)).toEqual({ pruned: 0, deleted: 10 })
    expect(await datasetExists(ds)).toBe(false)
    expect(await rows(ds)).toEqual([])
  })

  it('deleteAfterDays 0 turns deletion off', async () => {
    const ds = await seed('Forever', 4)
    const now = new Date()
    expect(await runRetention(db(), { pruneAfterDays: 0, deleteAfterDays: 0 }, days(now, 1000))).toEqual({
      pruned: 0,
      deleted: 0,
    })
    expect(await runRetention(db(), PRUNE_ONLY, days(now, 1000))).toEqual({ pruned: 4, deleted: 0 })
    expect(await datasetExists(ds)).toBe(true)
    expect(await rows(ds)).toHaveLength(4)
    expect(await recordCount(db(), ds)).toBe(4)
  })

  it('two passes at once both succeed and never prune or delete a record twice', async () => {
    const sizes = [15, 12, 9, 20, 4, 11]
    const all: Dataset[] = []
    for (const [i, size] of sizes.entries()) all.push(await seed(`Con${i}`, size, i % 3))
    const total = sizes.reduce((a, b) => a + b, 0)
    const limits = { datasets: 2, records: 5 }
    const now = new Date()

    let bothWorked = 0
    const rounds = async (settings: typeof PRUNE_ONLY, at: Date, key: 'pruned' | 'deleted') => {
      let sum = 0
      for (let round = 0; round < MAX_PASSES; round++) {
        const results = await Promise.all([
          runRetention(db(), settings, at, limits),
          runRetention(db(), settings, at, limits),
        ])
        const done = results.reduce((a, r) => a + r[key], 0)
        if (results.every((r) => r[key] > 0)) bothWorked++
        for (const r of results) expect(r[key]).toBeLessThanOrEqual(limits.datasets * limits.records)
        sum += done
        for (const ds of all) if (await datasetExists(ds)) await expectExactCount(ds)
        if (done === 0) return sum
      }
      throw new Error(`retention still had work after ${MAX_PASSES} rounds`)
    }

    expect(await rounds(PRUNE_ONLY, days(now, 31), 'pruned')).toBe(total)
    for (const ds of all) {
      expect((await rows(ds)).every((r) => r.pruned_at !== null && r.payload === null)).toBe(true)
    }

    expect(await rounds(DELETE_ONLY, days(now, 61), 'deleted')).toBe(total)
    for (const ds of all) {
      expect(await datasetExists(ds), ds.model).toBe(false)
      expect(await rows(ds)).toEqual([])
    }
    // The passes shared the work (SKIP LOCKED hands each its own datasets) rather than taking turns.
    expect(bothWorked).toBeGreaterThan(0)
  })

  // Embedded has one connection: a transaction held open there would block the pass itself.
  it.runIf(testDatabaseKind === 'postgres')(
    'skips a dataset a writer holds instead of waiting for it',
    async () => {
      const busy = await seed('Busy', 5)
      const free = await seed('Free', 3)
      const now = new Date()
      const trx = await db().startTransaction().execute()
      try {
        await sql`SELECT 1 FROM datasets WHERE connection_pk = ${busy.connectionPk} AND model = ${busy.model}
                AND variant = ${busy.variant} FOR UPDATE`.execute(trx)
        expect(await runRetention(db(), PRUNE_ONLY, days(now, 31))).toEqual({ pruned: 3, deleted: 0 })
        expect(await runRetention(db(), DELETE_ONLY, days(now, 61))).toEqual({ pruned: 0, deleted: 3 })
      } finally {
        await trx.commit().execute()
      }
      expect(await datasetExists(free)).toBe(false)
      expect(await runRetention(db(), { pruneAfterDays: 30, deleteAfterDays: 60 }, days(now, 61))).toEqual({
        pruned: 5,
        deleted: 5,
      })
      expect(await datasetExists(busy)).toBe(false)
    },
  )
})
