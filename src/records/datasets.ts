import { type RawBuilder, sql, type Transaction } from 'kysely'

import type { Database, Queryable } from '../db/database.ts'

/**
 * Runs first in a write's transaction; throws to refuse the write. A sync run passes one that
 * checks it still holds its lease (assertHoldsRun in src/runs/lease.ts).
 */
export type WriteGuard = (trx: Transaction<Database>) => Promise<void>

/** The variant every sync has; `variant=base` and no variant mean the same dataset. */
export const BASE_VARIANT = 'base'

/** A (connection, model, variant): the unit records are stored, locked and counted in. */
export interface Dataset {
  connectionPk: number
  model: string
  variant: string
}

/** The dataset's key as a query-builder condition: `.where((eb) => eb.and(datasetKey(ds)))`. */
export const datasetKey = (ds: Dataset) =>
  ({ connection_pk: ds.connectionPk, model: ds.model, variant: ds.variant }) as const

/** The same condition in SQL, on the columns of `alias` (records are `r` in most statements). */
export function inDataset(ds: Dataset, alias?: string): RawBuilder<boolean> {
  const column = (name: string) => sql.ref(alias ? `${alias}.${name}` : name)
  return sql<boolean>`${column('connection_pk')} = ${ds.connectionPk} AND ${column('model')} = ${ds.model} AND ${column('variant')} = ${ds.variant}`
}

export interface DatasetLock {
  /** The timestamp every record written under this lock gets, as Postgres text (microseconds). */
  stamp: string
  /** The open delete-tracking window, if any. */
  trackDeletesGeneration: number | null
}

/**
 * Locks the dataset row until the transaction ends (creating it on first use), so writers to one
 * dataset take turns. The stamp is read after the lock is granted and is strictly later than every
 * earlier write, so records written later always sort after records written earlier: a reader that
 * pages with a cursor cannot be overtaken by a commit it has not seen yet.
 */
export async function lockDataset(
  trx: Transaction<Database>,
  ds: Dataset,
  maxSize = 0,
): Promise<DatasetLock> {
  const { rows } = await sql<{ stamp: string; generation: number | null }>`
    INSERT INTO datasets AS d (connection_pk, model, variant, max_size_bytes)
    VALUES (${ds.connectionPk}, ${ds.model}, ${ds.variant}, ${maxSize})
    ON CONFLICT (connection_pk, model, variant) DO UPDATE
      SET max_size_bytes = greatest(d.max_size_bytes, ${maxSize})
    RETURNING greatest(clock_timestamp(), d.last_write_at + interval '1 microsecond')::text AS stamp,
              d.track_deletes_generation AS generation`.execute(trx)
  const row = rows[0]!
  return { stamp: row.stamp, trackDeletesGeneration: row.generation }
}

/** Like lockDataset, but only for a dataset that exists (returns false for one never written). */
export async function lockExistingDataset(trx: Transaction<Database>, ds: Dataset): Promise<boolean> {
  const row = await trx
    .selectFrom('datasets')
    .select('connection_pk')
    .where((eb) => eb.and(datasetKey(ds)))
    .forUpdate()
    .executeTakeFirst()
  return row !== undefined
}

/**
 * Records that the batch was written: moves the dataset's clock, adjusts its live count and (for
 * batchUpdate, which learns record sizes only after merging) raises its largest record size.
 */
export async function recordWrite(
  trx: Queryable,
  ds: Dataset,
  stamp: string,
  liveDelta: number,
  maxSize = 0,
): Promise<void> {
  await trx
    .updateTable('datasets')
    .set({
      last_write_at: sql`${stamp}::timestamptz`,
      record_count: sql`record_count + ${liveDelta}`,
      max_size_bytes: sql`greatest(max_size_bytes, ${maxSize})`,
    })
    .where((eb) => eb.and(datasetKey(ds)))
    .execute()
}

export async function setTrackDeletesGeneration(
  trx: Queryable,
  ds: Dataset,
  generation: number | null,
): Promise<void> {
  await trx
    .updateTable('datasets')
    .set({ track_deletes_generation: generation })
    .where((eb) => eb.and(datasetKey(ds)))
    .execute()
}

export async function recordCount(db: Queryable, ds: Dataset): Promise<number> {
  const row = await db
    .selectFrom('datasets')
    .select('record_count')
    .where((eb) => eb.and(datasetKey(ds)))
    .executeTakeFirst()
  return row?.record_count ?? 0
}

/** Locks up to `limit` datasets matching `where`, skipping any another transaction holds. */
export async function lockDatasetRows(
  trx: Queryable,
  where: RawBuilder<unknown>,
  orderBy: RawBuilder<unknown>,
  limit: number,
): Promise<Dataset[]> {
  const { rows } = await sql<{ connection_pk: number; model: string; variant: string }>`
    SELECT connection_pk, model, variant FROM datasets WHERE ${where}
    ORDER BY ${orderBy} LIMIT ${limit} FOR UPDATE SKIP LOCKED`.execute(trx)
  return rows.map((r) => ({ connectionPk: r.connection_pk, model: r.model, variant: r.variant }))
}

/** Notes that a sync run for these datasets completed (retention keeps datasets whose sync runs). */
export async function markSynced(
  db: Queryable,
  connectionPk: number,
  models: readonly string[],
  variant: string,
): Promise<void> {
  if (models.length === 0) return
  await db
    .updateTable('datasets')
    .set({ last_sync_at: sql`now()` })
    .where('connection_pk', '=', connectionPk)
    .where('variant', '=', variant)
    .where('model', 'in', [...models])
    .execute()
}

/**
 * What a reset does to a sync's datasets: closes their delete-tracking windows and, with
 * `emptyCache`, removes their records altogether.
 */
export async function resetDatasets(
  db: Queryable,
  connectionPk: number,
  models: readonly string[],
  variant: string,
  emptyCache: boolean,
): Promise<void> {
  if (models.length === 0) return
  const scope = (table: 'datasets' | 'records_seen') =>
    db
      .deleteFrom(table)
      .where('connection_pk', '=', connectionPk)
      .where('variant', '=', variant)
      .where('model', 'in', [...models])
  if (emptyCache) {
    await scope('datasets').execute()
    return
  }
  await scope('records_seen').execute()
  await db
    .updateTable('datasets')
    .set({ track_deletes_generation: null })
    .where('connection_pk', '=', connectionPk)
    .where('variant', '=', variant)
    .where('model', 'in', [...models])
    .execute()
}
