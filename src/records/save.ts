import { type Kysely, sql } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { withRetries } from '../db/errors.ts'
import { type Dataset, lockDataset, recordWrite, type WriteGuard } from './datasets.ts'
import { prepareRecord } from './payload.ts'
import { markSeen } from './seen.ts'
import { emptyResult, firstOfEach, type WriteResult } from './write-result.ts'

/**
 * batchSave: upserts full records. A record is added when new (or re-saved after deletion,
 * which undeletes it as ADDED), updated when its payload changed, and otherwise left untouched:
 * an unchanged re-save writes nothing, so its cursor does not move. Saving a pruned record
 * restores its payload in place. All or nothing: any invalid record fails the whole batch before
 * anything is written (RecordError).
 */
export async function batchSave(
  db: Kysely<Database>,
  sealer: Sealer,
  ds: Dataset,
  records: readonly unknown[],
  guard?: WriteGuard,
): Promise<WriteResult> {
  const prepared = records.map((record, index) => prepareRecord(record, index, sealer))
  const { unique, duplicates } = firstOfEach(prepared)
  const result = { ...emptyResult(), duplicates }
  if (unique.length === 0) return result

  const ids = unique.map((r) => r.externalId)
  const payloads = unique.map((r) => sealer.seal(r.json))
  const fingerprints = unique.map((r) => r.fingerprint)
  const sizes = unique.map((r) => r.size)

  const rows = await withRetries(() =>
    db.transaction().execute(async (trx) => {
      await guard?.(trx)
      const lock = await lockDataset(trx, ds, Math.max(...sizes))
      const { rows } = await sql<{
        external_id: string
        status: 'added' | 'undeleted' | 'updated' | 'unchanged'
      }>`
        WITH input AS (
          SELECT * FROM unnest(${ids}::text[], ${payloads}::text[], ${fingerprints}::text[], ${sizes}::int[])
            AS i (external_id, payload, fingerprint, size)
        ), changes AS (
          -- LATERAL: one primary-key lookup per incoming record, whatever the statistics say. A plain
          -- join planned on stale statistics (a dataset growing faster than autovacuum analyzes it)
          -- hashes the whole dataset instead: 150 ms a batch at 100,000 records.
          SELECT i.*, r.external_id IS NULL AS is_new, r.deleted_at IS NOT NULL AS was_deleted,
                 r.pruned_at IS NOT NULL AS was_pruned, r.payload_hash IS DISTINCT FROM i.fingerprint AS differs
          FROM input i
          LEFT JOIN LATERAL (
            SELECT r.external_id, r.deleted_at, r.pruned_at, r.payload_hash FROM records r
            WHERE r.connection_id = ${ds.connectionId} AND r.model = ${ds.model} AND r.variant = ${ds.variant}
              AND r.external_id = i.external_id
            -- (LIMIT keeps Postgres from flattening this back into the join it would misplan)
            LIMIT 1
          ) r ON true
        ), written AS (
          INSERT INTO records AS r (connection_id, model, variant, external_id, payload, payload_hash, size_bytes,
                                    first_seen_at, last_modified_at)
          SELECT ${ds.connectionId}, ${ds.model}, ${ds.variant}, external_id, payload, fingerprint, size,
                 ${lock.stamp}::timestamptz, ${lock.stamp}::timestamptz
          FROM changes WHERE is_new OR was_deleted OR differs OR was_pruned
          ON CONFLICT (connection_id, model, variant, external_id) DO UPDATE SET
            payload = excluded.payload,
            payload_hash = excluded.payload_hash,
            size_bytes = excluded.size_bytes,
            first_seen_at = CASE WHEN r.deleted_at IS NOT NULL THEN excluded.first_seen_at ELSE r.first_seen_at END,
            last_modified_at = CASE WHEN r.deleted_at IS NOT NULL OR r.payload_hash <> excluded.payload_hash
                                    THEN excluded.last_modified_at ELSE r.last_modified_at END,
            deleted_at = NULL,
            pruned_at = NULL
        )
        SELECT external_id,
               CASE WHEN is_new THEN 'added' WHEN was_deleted THEN 'undeleted'
                    WHEN differs THEN 'updated' ELSE 'unchanged' END AS status
        FROM changes`.execute(trx)
      if (lock.trackDeletesGeneration !== null) await markSeen(trx, ds, lock.trackDeletesGeneration, ids)
      const liveDelta = rows.filter((r) => r.status === 'added' || r.status === 'undeleted').length
      if (rows.some((r) => r.status !== 'unchanged')) await recordWrite(trx, ds, lock.stamp, liveDelta)
      return rows
    }),
  )
  for (const { external_id: id, status } of rows) {
    if (status === 'added' || status === 'undeleted') result.added.push(id)
    else if (status === 'updated') result.updated.push(id)
    else result.unchanged.push(id)
  }
  return result
}
