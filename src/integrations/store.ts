import { sql } from 'kysely'

import { type Sealer, openJson, sealJson } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'

/**
 * An environment's integrations as data: the row a deployment writes (provider, display name, the
 * folder's integration.json as `config`) plus what Nango's integrations API sets: the
 * integration's own app credentials (sealed, src/crypto.ts) and forward_webhooks.
 */

/**
 * An integration's own app, in the shape of Nango's integration credentials (its public API's
 * `credentials` object): `scopes` is Nango's comma-separated list ("read,write").
 */
export type IntegrationCredentials =
  | {
      type: 'OAUTH1' | 'OAUTH2' | 'TBA'
      client_id: string
      client_secret: string
      scopes?: string | undefined
      webhook_secret?: string | undefined
    }
  | { type: 'APP'; app_id: string; app_link: string; private_key: string }
  | {
      type: 'CUSTOM'
      client_id: string
      client_secret: string
      app_id: string
      app_link: string
      private_key: string
    }

export interface Integration {
  uniqueKey: string
  provider: string
  displayName: string
  forwardWebhooks: boolean
  createdBy: 'deploy' | 'api'
  /** whether credentials are stored (they are only read by readIntegrationCredentials) */
  hasCredentials: boolean
  createdAt: Date
  updatedAt: Date
}

// `credentials IS NOT NULL` is read instead of the column, so listing never moves a secret.
const columns = [
  'unique_key',
  'provider',
  'display_name',
  'forward_webhooks',
  'created_by',
  'created_at',
  'updated_at',
  sql<boolean>`credentials IS NOT NULL`.as('has_credentials'),
] as const

interface Row {
  unique_key: string
  provider: string
  display_name: string
  forward_webhooks: boolean
  created_by: 'deploy' | 'api'
  has_credentials: boolean
  created_at: Date
  updated_at: Date
}

function toIntegration(row: Row): Integration {
  return {
    uniqueKey: row.unique_key,
    provider: row.provider,
    displayName: row.display_name,
    forwardWebhooks: row.forward_webhooks,
    createdBy: row.created_by,
    hasCredentials: row.has_credentials,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

const selectRow = (db: Queryable, environmentId: number) =>
  db.selectFrom('integrations').select(columns).where('environment_id', '=', environmentId)

/** The environment's integrations, by unique key. */
export async function listIntegrations(db: Queryable, environmentId: number): Promise<Integration[]> {
  const rows = await selectRow(db, environmentId).orderBy('unique_key').execute()
  return rows.map(toIntegration)
}

export async function findIntegration(
  db: Queryable,
  environmentId: number,
  uniqueKey: string,
  options?: { forUpdate?: boolean },
): Promise<Integration | undefined> {
  let query = selectRow(db, environmentId).where('unique_key', '=', uniqueKey)
  if (options?.forUpdate) query = query.forUpdate()
  const row = await query.executeTakeFirst()
  return row && toIntegration(row)
}

/**
 * The integration's own app credentials, decrypted; null when the integration has none or does not
 * exist. What OAuth flows and token refreshes use (client id, secret and scopes).
 */
export async function readIntegrationCredentials(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  uniqueKey: string,
): Promise<IntegrationCredentials | null> {
  const row = await db
    .selectFrom('integrations')
    .select('credentials')
    .where('environment_id', '=', environmentId)
    .where('unique_key', '=', uniqueKey)
    .executeTakeFirst()
  return row?.credentials ? openJson<IntegrationCredentials>(sealer, row.credentials) : null
}

export interface NewIntegration {
  uniqueKey: string
  provider: string
  displayName: string
  forwardWebhooks?: boolean | undefined
  credentials?: IntegrationCredentials | undefined
}

/**
 * Creates an integration made through the API or the CLI; undefined when the unique key is taken in
 * the environment (nothing is written then).
 */
export async function insertIntegration(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  input: NewIntegration,
): Promise<Integration | undefined> {
  const row = await db
    .insertInto('integrations')
    .values({
      environment_id: environmentId,
      unique_key: input.uniqueKey,
      provider: input.provider,
      display_name: input.displayName,
      config: JSON.stringify({}),
      credentials: input.credentials ? sealJson(sealer, input.credentials) : null,
      forward_webhooks: input.forwardWebhooks ?? true,
      created_by: 'api',
    })
    .onConflict((oc) => oc.columns(['environment_id', 'unique_key']).doNothing())
    .returning(columns)
    .executeTakeFirst()
  return row && toIntegration(row)
}

export interface IntegrationChange {
  uniqueKey?: string | undefined
  displayName?: string | undefined
  forwardWebhooks?: boolean | undefined
  /** replaces the stored credentials; null removes them */
  credentials?: IntegrationCredentials | null | undefined
}

/**
 * Changes what is given and leaves the rest (config, the folder's integration.json, is never
 * touched here). undefined when there is no such integration. A new unique key must be free: the
 * caller checks it (the primary key refuses it otherwise).
 */
export async function updateIntegration(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  uniqueKey: string,
  change: IntegrationChange,
): Promise<Integration | undefined> {
  const row = await db
    .updateTable('integrations')
    .set({
      ...(change.uniqueKey !== undefined ? { unique_key: change.uniqueKey } : {}),
      ...(change.displayName !== undefined ? { display_name: change.displayName } : {}),
      ...(change.forwardWebhooks !== undefined ? { forward_webhooks: change.forwardWebhooks } : {}),
      ...(change.credentials !== undefined
        ? { credentials: change.credentials && sealJson(sealer, change.credentials) }
        : {}),
      updated_at: new Date(),
    })
    .where('environment_id', '=', environmentId)
    .where('unique_key', '=', uniqueKey)
    .returning(columns)
    .executeTakeFirst()
  return row && toIntegration(row)
}

/** Deletes the row (its sync definitions go with it, ON DELETE CASCADE); false when there was none. */
export async function deleteIntegrationRow(
  db: Queryable,
  environmentId: number,
  uniqueKey: string,
): Promise<boolean> {
  const result = await db
    .deleteFrom('integrations')
    .where('environment_id', '=', environmentId)
    .where('unique_key', '=', uniqueKey)
    .executeTakeFirst()
  return result.numDeletedRows > 0n
}

/** The connection ids of the integration's connections (at most `limit`). */
export async function connectionIdsOf(
  db: Queryable,
  environmentId: number,
  uniqueKey: string,
  limit?: number,
): Promise<string[]> {
  let query = db
    .selectFrom('connections')
    .select('connection_id')
    .where('environment_id', '=', environmentId)
    .where('provider_config_key', '=', uniqueKey)
    .orderBy('id')
  if (limit !== undefined) query = query.limit(limit)
  return (await query.execute()).map((r) => r.connection_id)
}
