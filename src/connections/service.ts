import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { withRetries } from '../db/errors.ts'
import { notFound } from '../errors.ts'
import { type JsonObject, lockConnections, readMetadata, writeMetadata } from './store.ts'

export type MetadataMode = 'replace' | 'merge'

/**
 * Replaces (POST) or shallow-merges (PATCH) the metadata of one or more connections of an
 * integration. All or nothing: if any connection is unknown, none is changed (Nango's 404).
 */
export async function changeMetadata(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  providerConfigKey: string,
  connectionIds: readonly string[],
  metadata: JsonObject,
  mode: MetadataMode,
): Promise<void> {
  await withRetries(() =>
    db.transaction().execute(async (trx) => {
      const { found, missing } = await lockConnections(trx, environmentId, providerConfigKey, connectionIds)
      const first = missing[0]
      if (first !== undefined) {
        const several = connectionIds.length > 1
        throw notFound(
          'unknown_connection',
          `Connection with connection id ${first} and provider config key ${providerConfigKey} not found.` +
            ' Please make sure the connection exists in the Nango dashboard' +
            (several ? '. No actions were taken on any of the connections as a result of this failure.' : ''),
        )
      }
      for (const { id, metadata: stored } of found.values()) {
        const next = mode === 'replace' ? metadata : { ...readMetadata(sealer, stored), ...metadata }
        await writeMetadata(trx, sealer, id, next)
      }
    }),
  )
}
