import { sql, type Transaction } from 'kysely'

import type { Database } from '../db/database.ts'
import { isPlainObject } from '../json.ts'
import {
  type Dataset,
  lockDataset,
  recordWrite,
  setTrackDeletesGeneration,
  datasetKey,
  inDataset,
} from './datasets.ts'
import { externalIdOf, RecordError } from './payload.ts'
import { emptyResult, firstOfEach, type WriteResult } from './write-result.ts'

/**
 * batchDelete: soft-deletes records by id, keeping their last known payload. Deleting a record
 * that is already deleted changes nothing (`unchanged`, its cursor stays put); ids never stored
 * are `ignored` rather than turned into tombstones. Runs in the caller's transaction, which holds
 * the dataset's lock from here until it ends (so do trackDeletesStart and trackDeletesEnd).
 */
export async function batchDelete(
  trx: Transaction<Database>,
  ds: Dataset,
  records: readonly unknown[],
): Promise<WriteResult> {
  const items = records.map((value, index) => {
    const externalId = isPlainObject(value) ? externalIdOf(value.id) : undefined
    if (externalId === undefined) {
      throw new RecordError(index, undefined, 'needs an "id": a string of 1 to 255 characters, or a number')
    }
    return { externalId }
  })
  const { unique, duplicates } = firstOfEach(items)
  const result = { ...emptyResult(), duplicates }
  if (unique.length === 0) return result
  const ids = unique.map((u) => u.externalId)

  const lock = await lockDataset(trx, ds)
  const { rows } = await sql<{ external_id: string; was_live: boolean }>`
    WITH target AS (
      SELECT external_id, deleted_at IS NULL AS was_live FROM records
      WHERE ${inDataset(ds)}
        AND external_id = any(${ids}::text[])
    ), deleted AS (
      UPDATE records r SET deleted_at = ${lock.stamp}::timestamptz, last_modified_at = ${lock.stamp}::timestamptz
      FROM target t
      WHERE ${inDataset(ds, 'r')}
        AND r.external_id = t.external_id AND t.was_live
    )
    SELECT external_id, was_live FROM target`.execute(trx)
  const deleted = new Set(rows.filter((r) => r.was_live).map((r) => r.external_id))
  if (deleted.size > 0) await recordWrite(trx, ds, lock.stamp, -deleted.size)

  const existing = new Set(rows.map((r) => r.external_id))
  for (const id of ids) {
    if (deleted.has(id)) result.deleted.push(id)
    else if (existing.has(id)) result.unchanged.push(id)
    else result.ignored.push(id)
  }
  return result
}

export class TrackDeletesError extends Error {
  override name = 'TrackDeletesError'
}

/**
 * Opens a delete-tracking window for the dataset, unless one is already open (a run that failed
 * before trackDeletesEnd keeps its window, so the next run still catches what vanished).
 */
export async function trackDeletesStart(trx: Transaction<Database>, ds: Dataset): Promise<void> {
  const lock = await lockDataset(trx, ds)
  if (lock.trackDeletesGeneration !== null) return
  const { rows } = await sql<{
    generation: number
  }>`SELECT nextval('records_generation_seq') AS generation`.execute(trx)
  await setTrackDeletesGeneration(trx, ds, Number(rows[0]!.generation))
}

/**
 * Closes the window: soft-deletes every live record that no batchSave or batchUpdate touched
 * since trackDeletesStart, and returns their ids.
 */
export async function trackDeletesEnd(trx: Transaction<Database>, ds: Dataset): Promise<string[]> {
  const lock = await lockDataset(trx, ds)
  const generation = lock.trackDeletesGeneration
  if (generation === null) {
    throw new TrackDeletesError(`No track deletes starting point found for model '${ds.model}'.`)
  }
  const { rows } = await sql<{ external_id: string }>`
    UPDATE records SET deleted_at = ${lock.stamp}::timestamptz, last_modified_at = ${lock.stamp}::timestamptz
    WHERE ${inDataset(ds)}
      AND deleted_at IS NULL
      AND external_id NOT IN (
        SELECT unnest(external_ids) FROM records_seen
        WHERE ${inDataset(ds)}
          AND generation = ${generation})
    RETURNING external_id`.execute(trx)
  await trx
    .deleteFrom('records_seen')
    .where((eb) => eb.and(datasetKey(ds)))
    .execute()
  await setTrackDeletesGeneration(trx, ds, null)
  if (rows.length > 0) await recordWrite(trx, ds, lock.stamp, -rows.length)
  return rows.map((r) => r.external_id)
}
