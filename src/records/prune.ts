import { type RawBuilder, sql, type Transaction } from 'kysely'

import type { Database } from '../db/database.ts'
import type { CursorPosition } from './cursor.ts'
import { type Dataset, lockExistingDataset, inDataset } from './datasets.ts'
import { METADATA_BYTES } from './payload.ts'
import { inRange, walkKeys } from './walk.ts'

export interface PruneResult {
  count: number
  /** Unpruned records at or before the cursor remain (exact, not optimistic). */
  hasMore: boolean
}

/**
 * Empties the payloads of up to `limit` records at or before `until` (inclusive), oldest first.
 * Metadata and cursors stay; deleted records are pruned too; already-pruned ones are skipped and
 * not counted. Saving the record again restores its payload. Runs in the caller's transaction.
 */
export async function pruneRecords(
  trx: Transaction<Database>,
  ds: Dataset,
  until: CursorPosition,
  limit: number,
): Promise<PruneResult> {
  // Takes its turn with writers, but never creates the dataset: a prune of a model the
  // connection has no records for has nothing to do and must leave no row behind.
  if (!(await lockExistingDataset(trx, ds))) return { count: 0, hasMore: false }
  await prefetchHeapPages(trx)
  return pruneLocked(
    trx,
    ds,
    sql`(r.last_modified_at, r.id) <= (${until.modifiedAt}::timestamptz, ${until.id}::bigint)`,
    limit,
  )
}

/**
 * Lets this transaction's bitmap heap scans ask the kernel for the pages they will read next
 * (posix_fadvise), 64 at a time, where Postgres' default asks for one. Prune and retention read
 * records that nobody has read for a while, so from disk rather than from memory once the table
 * outgrows it. On the 5,000,000-record database of bench:scale with 128 MB of shared_buffers, a
 * prune of 1,000 records on 1,000 heap pages that nothing had read since the table was written took
 * 31-43 ms with the walk of 56be6e6 (an index scan, one page at a time), 29-37 ms as a bitmap heap
 * scan with Postgres' default, and 23-26 ms as one with this (10-16 ms either way for pages in
 * shared_buffers; measured by hand with EXPLAIN ANALYZE, a dataset each).
 */
export async function prefetchHeapPages(trx: Transaction<Database>): Promise<void> {
  await sql`SET LOCAL effective_io_concurrency = 64`.execute(trx)
}

/**
 * Prunes (the caller holds the dataset lock) up to `limit` unpruned records matching `bound`, a
 * condition that holds for a prefix of the dataset in cursor order.
 *
 * Each step walks the keys of the `limit + 1` records after the dataset's prune mark
 * (migrations/0012: everything up to it is pruned), then empties every unpruned record from the
 * first to the `limit`-th of them as one key range (walk.ts): Postgres reads those heap pages in a
 * bitmap heap scan where the dataset's records are spread over the table, in physical order,
 * asking for them ahead (prefetchHeapPages). The mark moves to the end of the range, or to the
 * last record within `bound` when only pruned records follow the range. The walk cannot see which
 * records are pruned already (pruned_at is in the table only); where the range held some, the step
 * prunes fewer than `limit`, and another step goes on from the new mark while any remain, so the
 * count is exact. has_more is exact too: an unpruned record within `bound` past
 * the range (the lock keeps every writer out, so what a step saw is what remains).
 *
 * Before, the walk found the next `limit + 1` unpruned records by index scan, reading one heap page
 * at a time, and the update reached them by ctid; against a mark joined as a row (not two scalar
 * subqueries) the planner had read every record of the dataset past it and sorted them.
 */
export async function pruneLocked(
  trx: Transaction<Database>,
  ds: Dataset,
  bound: RawBuilder<unknown>,
  limit: number,
): Promise<PruneResult> {
  let count = 0
  for (;;) {
    const step = await pruneStep(trx, ds, bound, limit - count)
    count += step.count
    if (!step.hasMore || count === limit) return { count, hasMore: step.hasMore }
  }
}

async function pruneStep(
  trx: Transaction<Database>,
  ds: Dataset,
  bound: RawBuilder<unknown>,
  limit: number,
): Promise<PruneResult> {
  const mark = sql`(
    (SELECT coalesce(d.pruned_through_at, '-infinity') FROM datasets d WHERE ${inDataset(ds, 'd')}),
    (SELECT coalesce(d.pruned_through_id, 0) FROM datasets d WHERE ${inDataset(ds, 'd')}))`
  const range = await walkKeys(trx, ds, mark, bound, limit)
  if (!range) return { count: 0, hasMore: false }
  const { last } = range
  const more = sql`EXISTS (
    SELECT 1 FROM records r
    WHERE ${inDataset(ds, 'r')} AND ${bound} AND r.pruned_at IS NULL
      AND (r.last_modified_at, r.id) > (${last.at}::timestamptz, ${last.id}::bigint))`
  const { rows } = await sql<{ count: number; has_more: boolean }>`
    WITH pruned AS (
      UPDATE records r SET payload = NULL, pruned_at = now(),
             size_bytes = octet_length(to_json(r.external_id)::text) + ${7 + METADATA_BYTES}
      WHERE ${inDataset(ds, 'r')} AND r.pruned_at IS NULL AND ${inRange(range)}
      RETURNING 1
    ), moved AS (
      UPDATE datasets d SET pruned_through_at = ${last.at}::timestamptz, pruned_through_id = ${last.id}::bigint
      WHERE ${inDataset(ds, 'd')}
    )
    SELECT (SELECT count(*) FROM pruned)::int AS count, ${range.beyond ? more : sql`false`} AS has_more`.execute(
    trx,
  )
  const row = rows[0]!
  if (range.beyond && !row.has_more) {
    // Only pruned records follow within the bound: the mark goes past them to the last, so that
    // the next prune (or retention pass) with nothing to do does not walk them again.
    await sql`
      UPDATE datasets d SET pruned_through_at = t.last_modified_at, pruned_through_id = t.id
      FROM (SELECT r.last_modified_at, r.id FROM records r WHERE ${inDataset(ds, 'r')} AND ${bound}
            ORDER BY r.last_modified_at DESC, r.id DESC LIMIT 1) t
      WHERE ${inDataset(ds, 'd')}`.execute(trx)
  }
  return { count: Number(row.count), hasMore: row.has_more }
}
