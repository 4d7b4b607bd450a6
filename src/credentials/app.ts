import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { readIntegrationCredentials } from '../integrations/store.ts'
import type { Providers } from '../providers/types.ts'
import type { IntegrationConfig } from '../syncs/definitions.ts'
import type { OAuthAppOf } from './refresh.ts'
import type { OAuthClient } from './token-request.ts'

/** The OAuth client id and secret of an integration (created with them through /integrations). */
export async function integrationClient(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  uniqueKey: string,
): Promise<OAuthClient | undefined> {
  const credentials = await readIntegrationCredentials(db, sealer, environmentId, uniqueKey)
  if (!credentials || !('client_id' in credentials) || !credentials.client_id) return undefined
  return { clientId: credentials.client_id, clientSecret: credentials.client_secret }
}

/**
 * What a refresh of a connection of the integration needs, read from the database: its provider
 * (the catalogue's entry, integration.json over it) and its OAuth client.
 */
export function oauthApps(db: Kysely<Database>, sealer: Sealer, providers: Providers): OAuthAppOf {
  return async (environmentId, uniqueKey) => {
    const row = await db
      .selectFrom('integrations')
      .select(['provider', 'config'])
      .where('environment_id', '=', environmentId)
      .where('unique_key', '=', uniqueKey)
      .executeTakeFirst()
    return {
      provider: providers.resolve(row?.provider ?? uniqueKey, row?.config as IntegrationConfig | undefined),
      client: await integrationClient(db, sealer, environmentId, uniqueKey),
    }
  }
}
