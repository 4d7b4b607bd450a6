import { sql, type Transaction } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { type Dataset, inDataset, lockDataset, recordWrite } from './datasets.ts'
import { type PreparedRecord, prepareRecord } from './payload.ts'
import { markSeen } from './seen.ts'
import { emptyResult, firstOfEach, type WriteResult } from './write-result.ts'

/**
 * batchSave: upserts full records. A record is added when new (or re-saved after deletion,
 * which undeletes it as ADDED), updated when its payload changed, and otherwise left untouched:
 * an unchanged re-save writes nothing, so its cursor does not move. Saving a pruned record
 * restores its payload in place. All or nothing: any invalid record fails the whole batch before
 * anything is written (RecordError). Runs in the caller's transaction, which holds the dataset's
 * lock from here until it ends.
 */
export async function batchSave(
  trx: Transaction<Database>,
  sealer: Sealer,
  ds: Dataset,
  records: readonly unknown[],
): Promise<WriteResult> {
  return savePrepared(trx, sealer, ds, prepareRecords(records, sealer))
}

/** Validates a batch and prepares what is stored, outside any transaction; throws RecordError. */
function prepareRecords(records: readonly unknown[], sealer: Sealer): PreparedRecord[] {
  return records.map((record, index) => prepareRecord(record, index, sealer))
}

/** batchSave of records prepareRecord has checked (the import checks its own, see import.ts). */
export async function savePrepared(
  trx: Transaction<Database>,
  sealer: Sealer,
  ds: Dataset,
  prepared: readonly PreparedRecord[],
): Promise<WriteResult> {
  const { unique, duplicates } = firstOfEach(prepared)
  const result = { ...emptyResult(), duplicates }
  if (unique.length === 0) return result

  const ids = unique.map((r) => r.externalId)
  const payloads = unique.map((r) => sealer.seal(r.json))
  const fingerprints = unique.map((r) => r.fingerprint)
  const sizes = unique.map((r) => r.size)

  const lock = await lockDataset(trx, ds, Math.max(...sizes))
  // One upsert, no lookup first: the conflict check always goes through the primary key, whatever
  // the statistics say, and a row whose payload is the same is locked but not rewritten (its
  // cursor does not move). RETURNING lists only the rows written; a row's status follows from
  // its timestamps, because the stamp is later than anything already in the dataset:
  // first_seen_at = stamp: added (new, or undeleted); last_modified_at = stamp: updated;
  // otherwise a pruned payload restored unchanged.
  const { rows } = await sql<{ external_id: string; added: boolean; modified: boolean }>`
    INSERT INTO records AS r (connection_pk, model, variant, external_id, payload, payload_hash, size_bytes,
                              first_seen_at, last_modified_at)
    SELECT ${ds.connectionPk}, ${ds.model}, ${ds.variant}, i.external_id, i.payload, i.fingerprint, i.size,
           ${lock.stamp}::timestamptz, ${lock.stamp}::timestamptz
    FROM unnest(${ids}::text[], ${payloads}::text[], ${fingerprints}::text[], ${sizes}::int[])
      AS i (external_id, payload, fingerprint, size)
    ON CONFLICT (connection_pk, model, variant, external_id) DO UPDATE SET
      payload = excluded.payload,
      payload_hash = excluded.payload_hash,
      size_bytes = excluded.size_bytes,
      first_seen_at = CASE WHEN r.deleted_at IS NOT NULL THEN excluded.first_seen_at ELSE r.first_seen_at END,
      last_modified_at = CASE WHEN r.deleted_at IS NOT NULL OR r.payload_hash <> excluded.payload_hash
                              THEN excluded.last_modified_at ELSE r.last_modified_at END,
      deleted_at = NULL,
      pruned_at = NULL
    WHERE r.deleted_at IS NOT NULL OR r.pruned_at IS NOT NULL OR r.payload_hash <> excluded.payload_hash
    RETURNING r.external_id, r.first_seen_at = ${lock.stamp}::timestamptz AS added,
              r.last_modified_at = ${lock.stamp}::timestamptz AS modified`.execute(trx)
  if (lock.trackDeletesGeneration !== null) await markSeen(trx, ds, lock.trackDeletesGeneration, ids)
  const liveDelta = rows.filter((r) => r.added).length
  if (rows.length > 0) await recordWrite(trx, ds, lock.stamp, liveDelta)
  const restored = rows.filter((r) => !r.added && !r.modified).map((r) => r.external_id)
  if (restored.length > 0) await unmarkPruned(trx, ds, restored)

  const written = new Map(
    rows.map((r) => [r.external_id, r.added ? 'added' : r.modified ? 'updated' : 'unchanged']),
  )
  for (const id of ids) {
    const status = written.get(id) ?? 'unchanged'
    if (status === 'added') result.added.push(id)
    else if (status === 'updated') result.updated.push(id)
    else result.unchanged.push(id)
  }
  return result
}

/**
 * Records restored in place keep their cursor, so the dataset's prune mark (migrations/0012) moves
 * back to just before the first of them: every record before that one is still pruned.
 */
async function unmarkPruned(trx: Transaction<Database>, ds: Dataset, externalIds: string[]): Promise<void> {
  await sql`
    UPDATE datasets d SET pruned_through_at = r.last_modified_at, pruned_through_id = r.id - 1
    FROM (SELECT last_modified_at, id FROM records
          WHERE ${inDataset(ds)} AND external_id = any(${externalIds}::text[])
          ORDER BY last_modified_at, id LIMIT 1) r
    WHERE ${inDataset(ds, 'd')}
      AND (d.pruned_through_at, d.pruned_through_id) >= (r.last_modified_at, r.id)`.execute(trx)
}
