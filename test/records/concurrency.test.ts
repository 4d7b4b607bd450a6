/**
 * Writers and a paging reader at once (issue 3; reliability-anchors test plan item 9).
 *
 * Several writers hammer ONE dataset with batches of new, changed, unchanged, updated and deleted
 * records (some ids shared between writers, some batches large so their transactions run long)
 * while a reader pages through it with its cursor, the way a Nango client follows next_cursor and
 * keeps the last record's cursor when it reaches the end. On Postgres a "lock holder" also keeps
 * taking the dataset lock and sleeping, so writers begin their transactions long before they get
 * the lock: the `now()`-is-transaction-start hazard. When the writers stop, the reader pages to
 * the end. It must then hold exactly the table: the latest last_modified_at, payload and deleted
 * state of every record, i.e. it never missed a committed change. On the embedded database the
 * same code runs serialised.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'

import { CompiledQuery, type Dialect, Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer, type Sealer } from '../../src/crypto.ts'
import type { Database } from '../../src/db/database.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { decodeCursor, pgTimestampToRfc3339 } from '../../src/records/cursor.ts'
import { BASE_VARIANT, type Dataset, recordCount } from '../../src/records/datasets.ts'
import { type PageTarget, readPage } from '../../src/records/read.ts'
import { createTestDatabase, type TestDatabase, testDatabaseKind } from '../helpers/database.ts'
import { batchDelete, batchSave, batchUpdate } from '../helpers/records.ts'

const WRITERS = 4
const WRITE_MS = Number(process.env.CONCURRENCY_WRITE_MS ?? 3000)
const MAX_BATCHES_PER_WRITER = 150
// A slow machine still gets a meaningful run: at least this many batches a writer, within 4 × WRITE_MS.
const MIN_BATCHES_PER_WRITER = 10
const SHARED_IDS = 40
const SEED = Number(process.env.CONCURRENCY_SEED ?? randomBytes(4).readUInt32LE())

/** mulberry32: a small seeded PRNG, one per loop, so a run's choices can be replayed. */
function prng(seed: number) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  const pickSome = <T>(from: readonly T[], count: number) =>
    from.length === 0 ? [] : Array.from({ length: count }, () => from[int(0, from.length - 1)]!)
  return { next, int, pickSome }
}

/**
 * A dialect whose transactions start early and get going late: after BEGIN it fixes the
 * transaction's `now()` and then idles for `delay()` ms before the caller's first statement, so
 * other writers commit in between. Exactly the writer that breaks a store stamping with `now()`.
 */
function slowStart(dialect: Dialect, delay: () => number): Dialect {
  return {
    createAdapter: () => dialect.createAdapter(),
    createIntrospector: (db) => dialect.createIntrospector(db),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createDriver() {
      const driver = dialect.createDriver()
      const begin = driver.beginTransaction.bind(driver)
      driver.beginTransaction = async (connection, settings) => {
        await begin(connection, settings)
        await connection.executeQuery(CompiledQuery.raw('SELECT now()'))
        await sleep(delay())
      }
      return driver
    },
  }
}

interface WireRecord {
  id: string
  _nango_metadata: {
    last_modified_at: string
    deleted_at: string | null
    pruned_at: string | null
    cursor: string
  }
  [key: string]: unknown
}

/** A cursor's position as a sortable pair; Postgres may print fewer than 6 fractional digits. */
function position(cursor: string): [bigint, number] {
  const decoded = decodeCursor(cursor)!
  const m = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\+00:00$/.exec(decoded.modifiedAt)!
  return [BigInt(Date.parse(`${m[1]}Z`)) * 1000n + BigInt((m[2] ?? '').padEnd(6, '0')), decoded.id]
}
const isAfter = (a: [bigint, number], b: [bigint, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1])

describe('concurrent writers and a paging reader', () => {
  let database: TestDatabase
  let sealer: Sealer
  let ds: Dataset
  let target: PageTarget

  beforeAll(async () => {
    // Several connections on Postgres, so writers, the lock holder and the reader really overlap.
    database = await createTestDatabase({ poolMax: 8 })
    sealer = createSealer(randomBytes(32)) // payloads encrypted at rest, as in production
    const env = await ensureEnvironment(database.db.kysely, 'dev')
    const { connection } = await upsertConnection(database.db.kysely, sealer, env.id, {
      providerConfigKey: 'concurrency',
      connectionId: 'conn',
    })
    ds = { connectionPk: connection.id, model: 'Ticket', variant: BASE_VARIANT }
    target = {
      environmentId: env.id,
      providerConfigKey: 'concurrency',
      connectionId: 'conn',
      model: ds.model,
      variant: ds.variant,
    }
  })
  afterAll(async () => {
    await database?.destroy()
  })

  it(`the reader's final view equals the table (seed ${SEED})`, async () => {
    const db = database.db.kysely
    const deadline = Date.now() + WRITE_MS
    const hardDeadline = Date.now() + 4 * WRITE_MS
    const moreBatches = (batch: number) =>
      batch < MAX_BATCHES_PER_WRITER &&
      Date.now() < hardDeadline &&
      (batch < MIN_BATCHES_PER_WRITER || Date.now() < deadline)
    let writing = true
    const stats = { batches: 0, large: 0, pagesWhileWriting: 0, reappeared: 0, holds: 0 }
    let rev = 0
    const payload = (writer: number, id: string, pad = 0) => ({
      id,
      writer,
      rev: ++rev,
      title: `ticket ${id}`,
      nested: { rev, tags: ['a', `w${writer}`] },
      ...(pad > 0 ? { pad: 'x'.repeat(pad) } : {}),
    })

    async function writer(w: number, db: Kysely<Database>) {
      const rnd = prng(SEED + w)
      const own: string[] = []
      const shared = Array.from({ length: SHARED_IDS }, (_, i) => `s${i}`)
      const last = new Map<string, Record<string, unknown>>()
      for (let batch = 0; moreBatches(batch); batch++) {
        const choice = rnd.next()
        if (choice < 0.3 || own.length === 0) {
          // New records; now and then a large batch, so its transaction runs long.
          const large = rnd.next() < 0.08
          const count = large ? 400 : rnd.int(1, 30)
          const records = Array.from({ length: count }, () => {
            const id = `w${w}-${own.length}`
            own.push(id)
            return payload(w, id, large ? 200 : rnd.int(0, 100))
          })
          records.forEach((r) => last.set(r.id, r))
          await batchSave(db, sealer, ds, records)
          if (large) stats.large++
        } else if (choice < 0.55) {
          // Changed records, own and shared (a shared id may be new, or deleted by another writer).
          const ids = [...rnd.pickSome(own, rnd.int(1, 15)), ...rnd.pickSome(shared, rnd.int(0, 5))]
          const records = ids.map((id) => payload(w, id))
          records.forEach((r) => last.set(r.id, r))
          await batchSave(db, sealer, ds, records)
        } else if (choice < 0.65) {
          // Re-saves of what this writer last wrote: unchanged unless someone changed or deleted it since.
          const ids = rnd.pickSome([...last.keys()], rnd.int(1, 10))
          await batchSave(
            db,
            sealer,
            ds,
            ids.map((id) => last.get(id)!),
          )
        } else if (choice < 0.8) {
          const ids = [...rnd.pickSome(own, rnd.int(1, 8)), ...rnd.pickSome(shared, rnd.int(0, 3))]
          await batchDelete(
            db,
            ds,
            ids.map((id) => ({ id })),
          )
        } else {
          const ids = [...rnd.pickSome(own, rnd.int(1, 10)), ...rnd.pickSome(shared, rnd.int(0, 3))]
          await batchUpdate(
            db,
            sealer,
            ds,
            ids.map((id) => ({ id, nested: { updatedBy: w, n: rnd.int(0, 3) } })),
          )
        }
        stats.batches++
        if (rnd.next() < 0.3) await sleep(rnd.int(0, 3))
      }
    }

    /** Postgres only: holds the dataset lock for a while, so queued writers' transactions start early. */
    async function lockHolder() {
      const rnd = prng(SEED + 100)
      while (writing && Date.now() < hardDeadline) {
        await db.transaction().execute(async (trx) => {
          await sql`SELECT 1 FROM datasets WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model}
                    AND variant = ${ds.variant} FOR UPDATE`.execute(trx)
          await sql`SELECT pg_sleep(${rnd.int(5, 40) / 1000})`.execute(trx)
        })
        stats.holds++
        await sleep(rnd.int(5, 40))
      }
    }

    // The reader: the view it builds by applying what it sees, in order.
    const view = new Map<string, WireRecord>()
    let cursor: string | undefined
    let previous: [bigint, number] | undefined
    const rnd = prng(SEED + 200)
    async function readOnePage(): Promise<boolean> {
      const limit = rnd.next() < 0.5 ? 100 : rnd.int(1, 100)
      const page = await readPage(database.db, sealer, target, {
        after: cursor === undefined ? undefined : decodeCursor(cursor),
        limit,
        maxBytes: rnd.next() < 0.2 ? 4000 : 10 * 1024 * 1024,
      })
      expect(page).not.toBeNull()
      const body = JSON.parse(page!.body.toString()) as { next_cursor: string | null; records: WireRecord[] }
      const ids = body.records.map((r) => r.id)
      expect(new Set(ids).size, 'no duplicates within a page').toBe(ids.length)
      for (const rec of body.records) {
        const here = position(rec._nango_metadata.cursor)
        if (previous) expect(isAfter(here, previous), 'cursor only moves forward').toBe(true)
        previous = here
        if (view.has(rec.id)) stats.reappeared++
        view.set(rec.id, rec)
        cursor = rec._nango_metadata.cursor
      }
      if (body.next_cursor !== null) expect(body.next_cursor).toBe(cursor)
      return body.next_cursor === null
    }
    async function reader() {
      // Page while the writers run; at the end of the stream, poll again shortly after.
      for (let pages = 0; writing && pages < 100_000; pages++) {
        const atEnd = await readOnePage()
        stats.pagesWhileWriting++
        if (atEnd) await sleep(rnd.int(0, 5))
      }
    }

    // Create the dataset first, so the lock holder has a row to lock.
    await batchSave(db, sealer, ds, [payload(0, 'seed')])
    // On Postgres, two of the writers start their transactions early and commit late.
    const slowRnd = prng(SEED + 300)
    const slowDb =
      testDatabaseKind === 'postgres' && database.target.kind === 'postgres'
        ? new Kysely<Database>({
            dialect: slowStart(
              new PostgresDialect({
                pool: new pg.Pool({
                  connectionString: database.target.url,
                  max: 2,
                  options: '-c TimeZone=UTC -c DateStyle=ISO,MDY',
                }),
              }),
              () => slowRnd.int(0, 30),
            ),
          })
        : undefined
    const writers = Promise.all(
      Array.from({ length: WRITERS }, (_, w) => writer(w + 1, slowDb && w < 2 ? slowDb : db)),
    ).finally(() => slowDb?.destroy())
    const holder = testDatabaseKind === 'postgres' ? lockHolder() : Promise.resolve()
    const reading = reader()
    try {
      await writers
    } finally {
      writing = false
    }
    await Promise.all([holder, reading])

    // The writers have stopped: the reader continues to the end.
    const { rows: countRow } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM records
      WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}`.execute(
      db,
    )
    const total = countRow[0]!.n
    let reachedEnd = false
    for (let pages = 0; pages <= total + 1 && !reachedEnd; pages++) reachedEnd = await readOnePage()
    expect(reachedEnd, 'paging terminates').toBe(true)

    // The table, as it stands.
    const { rows } = await sql<{
      external_id: string
      payload: string | null
      last_modified_at: string
      deleted_at: string | null
      pruned_at: string | null
    }>`SELECT external_id, payload, last_modified_at::text, deleted_at::text, pruned_at::text FROM records
       WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}`.execute(
      db,
    )
    expect(rows.length).toBe(total)

    const missed: string[] = []
    for (const row of rows) {
      const seen = view.get(row.external_id)
      const modified = pgTimestampToRfc3339(row.last_modified_at)
      if (seen?._nango_metadata.last_modified_at !== modified) {
        missed.push(
          `${row.external_id}: table ${modified}, reader ${seen?._nango_metadata.last_modified_at ?? 'never'}`,
        )
        continue
      }
      expect(seen._nango_metadata.deleted_at, row.external_id).toBe(
        row.deleted_at === null ? null : pgTimestampToRfc3339(row.deleted_at),
      )
      expect(row.pruned_at).toBeNull()
      const { _nango_metadata: _meta, ...body } = seen
      expect(body, row.external_id).toEqual(JSON.parse(sealer.open(row.payload!)))
    }
    expect(missed, `changes the reader missed (seed ${SEED})`).toEqual([])
    expect(view.size, 'the reader saw nothing the table does not hold').toBe(rows.length)

    const live = rows.filter((r) => r.deleted_at === null).length
    expect(await recordCount(db, ds)).toBe(live)

    // The run really overlapped reading and writing.
    expect(stats.batches).toBeGreaterThanOrEqual(WRITERS * MIN_BATCHES_PER_WRITER)
    expect(stats.pagesWhileWriting).toBeGreaterThan(5)
    expect(stats.reappeared, 'records changed after the reader passed them came back').toBeGreaterThan(0)
    if (testDatabaseKind === 'postgres') expect(stats.holds).toBeGreaterThan(0)
  }, 60_000)
})
