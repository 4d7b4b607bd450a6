import { sql, type Transaction } from 'kysely'

import type { Database } from '../db/database.ts'
import type { CursorPosition } from './cursor.ts'
import { type Dataset, lockExistingDataset, inDataset } from './datasets.ts'
import { METADATA_BYTES } from './payload.ts'

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
  return pruneLocked(
    trx,
    ds,
    sql`(r.last_modified_at, r.id) <= (${until.modifiedAt}::timestamptz, ${until.id}::bigint)`,
    limit,
  )
}

/** Prunes (the caller holds the dataset lock) up to `limit` unpruned records matching `bound`. */
export async function pruneLocked(
  trx: Transaction<Database>,
  ds: Dataset,
  bound: ReturnType<typeof sql>,
  limit: number,
): Promise<PruneResult> {
  const where = sql`${inDataset(ds, 'r')}
                    AND r.pruned_at IS NULL AND ${bound}`
  const { rows } = await sql<{ count: number; has_more: boolean }>`
    WITH target AS (
      SELECT r.last_modified_at, r.id FROM records r WHERE ${where}
      ORDER BY r.last_modified_at, r.id LIMIT ${limit}
    ), pruned AS (
      UPDATE records r SET payload = NULL, pruned_at = now(),
             size_bytes = octet_length(to_json(r.external_id)::text) + ${7 + METADATA_BYTES}
      FROM target t
      WHERE ${inDataset(ds, 'r')}
        AND r.last_modified_at = t.last_modified_at AND r.id = t.id
      RETURNING r.last_modified_at, r.id
    )
    SELECT (SELECT count(*) FROM pruned)::int AS count,
           EXISTS (SELECT 1 FROM records r WHERE ${where}
                   AND (r.last_modified_at, r.id) NOT IN (SELECT last_modified_at, id FROM pruned)) AS has_more`.execute(
    trx,
  )
  const row = rows[0]!
  return { count: Number(row.count), hasMore: row.has_more }
}
