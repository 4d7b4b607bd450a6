import { type Kysely, sql } from 'kysely'

import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { lockDatasetRows, type Dataset, datasetKey, inDataset } from './datasets.ts'
import { prefetchHeapPages, pruneLocked } from './prune.ts'
import { inRange, walkKeys } from './walk.ts'

export interface RetentionSettings {
  /** Prune payloads of records not modified for this many days; 0 turns it off. */
  pruneAfterDays: number
  /** Delete every record of a dataset whose sync has not run (nor been written) for this many days; 0 turns it off. */
  deleteAfterDays: number
}

export interface RetentionLimits {
  /** Datasets examined per transaction */
  datasets: number
  /** Records pruned or deleted per dataset per pass */
  records: number
}

// 50 datasets × 1,000 records keeps each transaction to well under a second, so writers that
// queue behind a locked dataset wait briefly; a busy dataset is simply skipped (SKIP LOCKED).
const DEFAULT_LIMITS: RetentionLimits = { datasets: 50, records: 1000 }

const DAY_MS = 86_400_000

/**
 * One pass of retention, safe to run on every instance at once: each pass locks the datasets it
 * works on with SKIP LOCKED. `now` is passed in so tests control the clock. A dataset with more
 * work than one pass allows is left first in line for the next pass.
 */
export async function runRetention(
  db: Kysely<Database>,
  settings: RetentionSettings,
  now: Date,
  limits: RetentionLimits = DEFAULT_LIMITS,
): Promise<{ pruned: number; deleted: number }> {
  let pruned = 0
  let deleted = 0
  if (settings.pruneAfterDays > 0) {
    const cutoff = new Date(now.getTime() - settings.pruneAfterDays * DAY_MS).toISOString()
    pruned = await inTransaction(db, async (trx) => {
      await prefetchHeapPages(trx)
      const datasets = await lockDatasetRows(
        trx,
        sql`true`,
        sql`retention_checked_at NULLS FIRST`,
        limits.datasets,
      )
      let total = 0
      for (const ds of datasets) {
        const { count, hasMore } = await pruneLocked(
          trx,
          ds,
          sql`r.last_modified_at < ${cutoff}::timestamptz`,
          limits.records,
        )
        total += count
        if (!hasMore) await markChecked(trx, ds, now)
      }
      return total
    })
  }
  if (settings.deleteAfterDays > 0) {
    const cutoff = new Date(now.getTime() - settings.deleteAfterDays * DAY_MS).toISOString()
    deleted = await inTransaction(db, async (trx) => {
      const stale = sql`greatest(created_at, last_write_at, last_sync_at) < ${cutoff}::timestamptz`
      await prefetchHeapPages(trx)
      const datasets = await lockDatasetRows(trx, stale, sql`created_at`, limits.datasets)
      let total = 0
      for (const ds of datasets) total += await deleteSome(trx, ds, limits.records)
      return total
    })
  }
  return { pruned, deleted }
}

async function markChecked(trx: Kysely<Database>, ds: Dataset, now: Date): Promise<void> {
  await trx
    .updateTable('datasets')
    .set({ retention_checked_at: now })
    .where((eb) => eb.and(datasetKey(ds)))
    .execute()
}

/**
 * Hard-deletes up to `limit` records of a dataset, oldest first; removes the dataset when none
 * remain. The walk reads `limit + 1` keys, so the pass that deletes the last records also removes
 * the dataset rather than leaving it for a pass that finds nothing; the delete takes the records
 * from the first to the `limit`-th key as one range (walk.ts), in a bitmap heap scan that asks for
 * its pages ahead (prefetchHeapPages) where the records are spread over the table, while joining
 * each key to its record read the pages one at a time.
 */
async function deleteSome(trx: Kysely<Database>, ds: Dataset, limit: number): Promise<number> {
  const range = await walkKeys(trx, ds, undefined, sql`true`, limit)
  let deleted = 0
  let live = 0
  if (range) {
    const { rows } = await sql<{ deleted: number; live: number }>`
      WITH gone AS (
        DELETE FROM records r WHERE ${inDataset(ds, 'r')} AND ${inRange(range)}
        RETURNING r.deleted_at IS NULL AS live
      )
      SELECT count(*)::int AS deleted, count(*) FILTER (WHERE live)::int AS live FROM gone`.execute(trx)
    ;({ deleted, live } = rows[0]!)
  }
  if (!range?.beyond) {
    await trx
      .deleteFrom('datasets')
      .where((eb) => eb.and(datasetKey(ds)))
      .execute()
  } else {
    await sql`UPDATE datasets SET record_count = record_count - ${live}
              WHERE ${inDataset(ds)}`.execute(trx)
  }
  return deleted
}
