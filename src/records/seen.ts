import type { Queryable } from '../db/database.ts'
import type { Dataset } from './datasets.ts'

/** Notes ids as seen in the dataset's open delete-tracking window (see trackDeletesStart in delete.ts). */
export async function markSeen(
  trx: Queryable,
  ds: Dataset,
  generation: number,
  externalIds: string[],
): Promise<void> {
  if (externalIds.length === 0) return
  await trx
    .insertInto('records_seen')
    .values({
      connection_pk: ds.connectionPk,
      model: ds.model,
      variant: ds.variant,
      generation,
      external_ids: externalIds,
    })
    .execute()
}
