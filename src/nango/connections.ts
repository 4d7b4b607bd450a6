import type { Kysely } from 'kysely'
import type { Static } from 'typebox'

import { PostConnectionBody } from '../connections/schemas.ts'
import { saveConnection } from '../connections/service.ts'
import type { Connection } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { lockForProvisioning } from '../deployments/store.ts'
import { insertIntegration } from '../integrations/store.ts'
import { cancelRuns } from '../runs/states.ts'
import { validateJson } from '../validation.ts'
import type { NangoConnection } from './client.ts'

/** Nango's connection as POST /connections would import it: no credentials (they stay in Nango). */
function importBody(connection: NangoConnection): Static<typeof PostConnectionBody> {
  const body: Record<string, unknown> = {
    provider_config_key: connection.provider_config_key,
    connection_id: connection.connection_id,
    metadata: connection.metadata ?? {},
    connection_config: connection.connection_config ?? {},
  }
  const endUser = connection.end_user
  const optional: Record<string, unknown> = {
    ...(connection.tags && { tags: connection.tags }),
    ...(endUser && {
      end_user: {
        id: endUser.id,
        ...(endUser.email && { email: endUser.email }),
        ...(endUser.display_name && { display_name: endUser.display_name }),
        ...(endUser.tags && { tags: endUser.tags }),
      },
    }),
  }
  // Tags and the end user are kept when they fit our rules (Nango's differ slightly); a connection
  // is never refused for them.
  for (const [key, value] of Object.entries(optional)) {
    if (validateJson(PostConnectionBody, { ...body, [key]: value }).length === 0) body[key] = value
  }
  const issues = validateJson(PostConnectionBody, body)
  if (issues[0]) {
    throw new Error(
      `Nango's connection ${connection.connection_id} cannot be stored: ${issues[0].path.join('.')} ${issues[0].message}`,
    )
  }
  return body as Static<typeof PostConnectionBody>
}

/**
 * Creates or updates a connection taken from the paired Nango, in one transaction: its integration
 * (made if missing, from Nango's provider, so it exists before any sync is deployed for it), the
 * connection with its metadata and config, and the syncs and schedules of its integration's deployed
 * definitions. A connection that had been deleted upstream comes back with its syncs.
 */
export async function takeConnection(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  connection: NangoConnection,
): Promise<{ connection: Connection; created: boolean }> {
  const body = importBody(connection)
  return inTransaction(db, async (trx) => {
    // An integration Nango has is kept like one made through the API: a folder deployment that
    // does not name it never prunes it.
    await insertIntegration(trx, sealer, environmentId, {
      uniqueKey: body.provider_config_key,
      provider: connection.provider,
      displayName: body.provider_config_key,
    })
    await trx
      .updateTable('connections')
      .set({ deleted_upstream_at: null })
      .where('environment_id', '=', environmentId)
      .where('provider_config_key', '=', body.provider_config_key)
      .where('connection_id', '=', body.connection_id!)
      .where('deleted_upstream_at', 'is not', null)
      .execute()
    return saveConnection(trx, sealer, environmentId, body)
  })
}

/**
 * A connection Nango deleted: marked, its syncs stopped (schedules DELETED, waiting runs cancelled;
 * a running one finishes), its records kept until retention removes them. Provisioning leaves it
 * stopped through later deployments.
 */
export async function stopDeletedUpstream(
  db: Kysely<Database>,
  environmentId: number,
  connectionPk: number,
): Promise<void> {
  await inTransaction(db, async (trx) => {
    await lockForProvisioning(trx, environmentId)
    await trx
      .updateTable('connections')
      .set({ deleted_upstream_at: new Date() })
      .where('id', '=', connectionPk)
      .execute()
    const stopped = await trx
      .updateTable('schedules')
      .set({ state: 'DELETED', updated_at: new Date() })
      .where('connection_pk', '=', connectionPk)
      .where('state', '<>', 'DELETED')
      .returning('sync_id')
      .execute()
    await cancelRuns(
      trx,
      stopped.map((s) => s.sync_id),
      ['CREATED'],
      'The connection was deleted in Nango',
    )
  })
}
