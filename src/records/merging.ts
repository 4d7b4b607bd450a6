import { sql, type Transaction } from 'kysely'

import type { Database, Queryable } from '../db/database.ts'
import { type Dataset, inDataset } from './datasets.ts'

/**
 * Nango's merging strategy `ignore_if_modified_after`: a sync's write leaves alone the records
 * something else (another sync of the same model, a user's batchUpdate) modified after the point
 * the sync set the strategy, or after its own previous write. `override` (the default) writes all.
 */

/** The dataset's newest modification, as Postgres text; null when it has no records. */
export async function lastModifiedAt(db: Queryable, ds: Dataset): Promise<string | null> {
  const { rows } = await sql<{ at: string | null }>`
    SELECT max(last_modified_at)::text AS at FROM records WHERE ${inDataset(ds)}`.execute(db)
  return rows[0]?.at ?? null
}

/** Which of `ids` were modified after `since`. */
export async function modifiedAfter(
  trx: Transaction<Database>,
  ds: Dataset,
  ids: readonly string[],
  since: string,
): Promise<Set<string>> {
  if (ids.length === 0) return new Set()
  const { rows } = await sql<{ external_id: string }>`
    SELECT external_id FROM records
    WHERE ${inDataset(ds)} AND external_id = any(${[...ids]}::text[])
      AND last_modified_at > ${since}::timestamptz`.execute(trx)
  return new Set(rows.map((r) => r.external_id))
}
