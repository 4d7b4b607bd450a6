import { sql, type Transaction } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { type Dataset, lockDataset, recordWrite, datasetKey, inDataset } from './datasets.ts'
import { deepMerge } from './merge.ts'
import { type PreparedRecord, prepareRecord, recordFields } from './payload.ts'
import { markSeen } from './seen.ts'
import { emptyResult, firstOfEach, type WriteResult } from './write-result.ts'

/**
 * batchUpdate: deep-merges partial records into existing live records (arrays are replaced).
 * Unknown, deleted and pruned records are not touched and are reported as `ignored` (a pruned one
 * has no payload to merge into; it still counts as seen by delete tracking, being live); a merge
 * that changes nothing is `unchanged` and does not move the record's cursor. Runs in the caller's
 * transaction, which holds the dataset's lock from here until it ends.
 */
export async function batchUpdate(
  trx: Transaction<Database>,
  sealer: Sealer,
  ds: Dataset,
  partials: readonly unknown[],
): Promise<WriteResult> {
  const { unique, duplicates } = firstOfEach(partials.map((p, index) => recordFields(p, index)))
  const result = { ...emptyResult(), duplicates }
  if (unique.length === 0) return result

  const lock = await lockDataset(trx, ds)
  const stored = await trx
    .selectFrom('records')
    .select(['external_id', 'payload', 'payload_hash'])
    .where((eb) => eb.and(datasetKey(ds)))
    .where('external_id', '=', sql<string>`any(${unique.map((u) => u.externalId)}::text[])`)
    .where('deleted_at', 'is', null)
    .execute()
  const current = new Map(stored.map((row) => [row.external_id, row]))
  const changed: PreparedRecord[] = []
  unique.forEach((partial, index) => {
    const row = current.get(partial.externalId)
    if (!row?.payload) return result.ignored.push(partial.externalId)
    const base = JSON.parse(sealer.open(row.payload)) as Record<string, unknown>
    const merged = prepareRecord(deepMerge(base, partial.fields), index, sealer)
    if (merged.fingerprint === row.payload_hash) return result.unchanged.push(partial.externalId)
    changed.push(merged)
    result.updated.push(partial.externalId)
  })
  if (changed.length > 0) {
    await sql`
      UPDATE records AS r SET payload = u.payload, payload_hash = u.fingerprint, size_bytes = u.size,
                              last_modified_at = ${lock.stamp}::timestamptz
      FROM unnest(${changed.map((c) => c.externalId)}::text[], ${changed.map((c) => sealer.seal(c.json))}::text[],
                  ${changed.map((c) => c.fingerprint)}::text[], ${changed.map((c) => c.size)}::int[])
        AS u (external_id, payload, fingerprint, size)
      WHERE ${inDataset(ds, 'r')}
        AND r.external_id = u.external_id`.execute(trx)
    await recordWrite(trx, ds, lock.stamp, 0, Math.max(...changed.map((c) => c.size)))
  }
  if (lock.trackDeletesGeneration !== null) {
    await markSeen(trx, ds, lock.trackDeletesGeneration, [...current.keys()])
  }
  return result
}
