import { sql } from 'kysely'

import { type Sealer, openJson, sealJson } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'

export type JsonObject = Record<string, unknown>

export interface Connection {
  id: number
  environmentId: number
  providerConfigKey: string
  connectionId: string
  metadata: JsonObject | null
  credentials: JsonObject | null
  connectionConfig: JsonObject
  tags: Record<string, string>
  endUser: JsonObject | null
  createdAt: Date
  updatedAt: Date
  refresh: RefreshState
}

/** What the connection records about its token's refreshes (migration 0008). */
export interface RefreshState {
  /** When the stored access token expires; null when it never does or is not known */
  expiresAt: Date | null
  lastSuccess: Date | null
  /** The last failed refresh, until one succeeds or the connection is imported again */
  lastFailure: Date | null
  error: string | null
  /** Failed refreshes in a row */
  attempts: number
}

/** What lists return: never credentials (they are not even decrypted). */
export interface ConnectionSummary {
  id: number
  providerConfigKey: string
  connectionId: string
  metadata: JsonObject | null
  tags: Record<string, string>
  endUser: JsonObject | null
  /** Postgres JSON text of created_at: microseconds, `+00:00` */
  created: string
  refresh: Pick<RefreshState, 'lastFailure' | 'error' | 'attempts'>
}

/** The internal key of a connection; what records, syncs and schedules hang off. */
export interface ConnectionRef {
  id: number
  environmentId: number
  providerConfigKey: string
  connectionId: string
}

export interface ConnectionInput {
  providerConfigKey: string
  connectionId: string
  metadata?: JsonObject | undefined
  credentials?: JsonObject | undefined
  connectionConfig?: JsonObject | undefined
  tags?: Record<string, string> | undefined
  endUser?: JsonObject | undefined
}

/** Every column a Connection is read from (credentials/store.ts locks and reads the same). */
export const connectionColumns = [
  'id',
  'environment_id',
  'provider_config_key',
  'connection_id',
  'metadata',
  'credentials',
  'connection_config',
  'tags',
  'end_user',
  'created_at',
  'updated_at',
  'credentials_expires_at',
  'last_refresh_success',
  'last_refresh_failure',
  'refresh_error',
  'refresh_attempts',
] as const

export type ConnectionRow = {
  id: number
  environment_id: number
  provider_config_key: string
  connection_id: string
  metadata: string | null
  credentials: string | null
  connection_config: JsonObject
  tags: Record<string, string>
  end_user: JsonObject | null
  created_at: Date
  updated_at: Date
  credentials_expires_at: Date | null
  last_refresh_success: Date | null
  last_refresh_failure: Date | null
  refresh_error: string | null
  refresh_attempts: number
}

export function toConnection(sealer: Sealer, row: ConnectionRow): Connection {
  return {
    id: row.id,
    environmentId: row.environment_id,
    providerConfigKey: row.provider_config_key,
    connectionId: row.connection_id,
    metadata: row.metadata === null ? null : openJson<JsonObject>(sealer, row.metadata),
    credentials: row.credentials === null ? null : openJson<JsonObject>(sealer, row.credentials),
    connectionConfig: row.connection_config,
    tags: row.tags,
    endUser: row.end_user,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    refresh: {
      expiresAt: row.credentials_expires_at,
      lastSuccess: row.last_refresh_success,
      lastFailure: row.last_refresh_failure,
      error: row.refresh_error,
      attempts: row.refresh_attempts,
    },
  }
}

/** The expiry that credentials state (`expires_at`, ISO text or a Date), or null. */
export function expiryOf(credentials: JsonObject | null | undefined): Date | null {
  const at = credentials?.expires_at
  if (typeof at !== 'string' && !(at instanceof Date)) return null
  const date = new Date(at)
  return Number.isNaN(date.getTime()) ? null : date
}

/**
 * Imports a connection. Like Nango, importing an existing (environment, integration, connection id)
 * overwrites it: credentials are replaced and metadata, config and tags reset to what was sent.
 */
export async function upsertConnection(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  input: ConnectionInput,
): Promise<{ connection: Connection; created: boolean }> {
  const values = {
    metadata: sealJson(sealer, input.metadata ?? {}),
    credentials: input.credentials ? sealJson(sealer, input.credentials) : null,
    connection_config: JSON.stringify(input.connectionConfig ?? {}),
    tags: JSON.stringify(input.tags ?? {}),
    end_user: JSON.stringify(input.endUser ?? null),
    // New credentials: a new expiry, and no refresh failure of the old ones.
    credentials_expires_at: expiryOf(input.credentials),
    last_refresh_failure: null,
    refresh_error: null,
    refresh_attempts: 0,
  }
  const row = await db
    .insertInto('connections')
    .values({
      environment_id: environmentId,
      provider_config_key: input.providerConfigKey,
      connection_id: input.connectionId,
      ...values,
    })
    .onConflict((oc) =>
      oc
        .columns(['environment_id', 'provider_config_key', 'connection_id'])
        .doUpdateSet({ ...values, updated_at: new Date() }),
    )
    // xmax = 0 only for a freshly inserted row version: tells an insert from an overwrite.
    .returning([...connectionColumns, sql<boolean>`(xmax = 0)`.as('inserted')])
    .executeTakeFirstOrThrow()
  return { connection: toConnection(sealer, row), created: row.inserted }
}

export async function findConnection(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  providerConfigKey: string,
  connectionId: string,
): Promise<Connection | undefined> {
  const row = await db
    .selectFrom('connections')
    .select(connectionColumns)
    .where('environment_id', '=', environmentId)
    .where('provider_config_key', '=', providerConfigKey)
    .where('connection_id', '=', connectionId)
    .executeTakeFirst()
  return row && toConnection(sealer, row)
}

export async function findConnectionRef(
  db: Queryable,
  environmentId: number,
  providerConfigKey: string,
  connectionId: string,
): Promise<ConnectionRef | undefined> {
  const row = await db
    .selectFrom('connections')
    .select(['id', 'environment_id', 'provider_config_key', 'connection_id'])
    .where('environment_id', '=', environmentId)
    .where('provider_config_key', '=', providerConfigKey)
    .where('connection_id', '=', connectionId)
    .executeTakeFirst()
  return (
    row && {
      id: row.id,
      environmentId: row.environment_id,
      providerConfigKey: row.provider_config_key,
      connectionId: row.connection_id,
    }
  )
}

export interface ListFilter {
  connectionId?: string | undefined
  /** case-insensitive substring of the connection id or the end user's display name / email */
  search?: string | undefined
  integrationIds?: string[] | undefined
  endUserId?: string | undefined
  tags?: Record<string, string> | undefined
  limit: number
  offset: number
}

/** Newest first, like Nango. */
export async function listConnections(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  filter: ListFilter,
): Promise<ConnectionSummary[]> {
  let query = db
    .selectFrom('connections')
    .select([
      'id',
      'provider_config_key',
      'connection_id',
      'metadata',
      'tags',
      'end_user',
      sql<string>`to_json(created_at) #>> '{}'`.as('created'),
      'last_refresh_failure',
      'refresh_error',
      'refresh_attempts',
    ])
    .where('environment_id', '=', environmentId)
    // A connection deleted in its paired Nango is gone from the list; its records stay readable
    // until retention removes them.
    .where('deleted_upstream_at', 'is', null)
  if (filter.connectionId !== undefined) query = query.where('connection_id', '=', filter.connectionId)
  if (filter.integrationIds?.length) query = query.where('provider_config_key', 'in', filter.integrationIds)
  if (filter.endUserId !== undefined) query = query.where(sql`end_user ->> 'id'`, '=', filter.endUserId)
  if (filter.tags && Object.keys(filter.tags).length > 0) {
    query = query.where(sql<boolean>`tags @> ${JSON.stringify(filter.tags)}::jsonb`)
  }
  if (filter.search !== undefined) {
    const pattern = `%${filter.search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
    query = query.where((eb) =>
      eb.or([
        eb('connection_id', 'ilike', pattern),
        eb(sql`end_user ->> 'display_name'`, 'ilike', pattern),
        eb(sql`end_user ->> 'email'`, 'ilike', pattern),
      ]),
    )
  }
  const rows = await query
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(filter.limit)
    .offset(filter.offset)
    .execute()
  return rows.map((row) => ({
    id: row.id,
    providerConfigKey: row.provider_config_key,
    connectionId: row.connection_id,
    metadata: row.metadata === null ? null : openJson<JsonObject>(sealer, row.metadata),
    tags: row.tags,
    endUser: row.end_user,
    created: row.created,
    refresh: {
      lastFailure: row.last_refresh_failure,
      error: row.refresh_error,
      attempts: row.refresh_attempts,
    },
  }))
}

export async function deleteConnection(
  db: Queryable,
  environmentId: number,
  providerConfigKey: string,
  connectionId: string,
): Promise<boolean> {
  const result = await db
    .deleteFrom('connections')
    .where('environment_id', '=', environmentId)
    .where('provider_config_key', '=', providerConfigKey)
    .where('connection_id', '=', connectionId)
    .executeTakeFirst()
  return result.numDeletedRows > 0n
}

/**
 * Locks the named connections for a metadata change, in id order (so two writers never deadlock).
 * Returns the connection ids that do not exist, in the order given.
 */
export async function lockConnections(
  db: Queryable,
  environmentId: number,
  providerConfigKey: string,
  connectionIds: readonly string[],
): Promise<{ found: Map<string, { id: number; metadata: string | null }>; missing: string[] }> {
  const rows =
    connectionIds.length === 0
      ? []
      : await db
          .selectFrom('connections')
          .select(['id', 'connection_id', 'metadata'])
          .where('environment_id', '=', environmentId)
          .where('provider_config_key', '=', providerConfigKey)
          .where('connection_id', 'in', [...connectionIds])
          .orderBy('id')
          .forUpdate()
          .execute()
  const found = new Map(rows.map((r) => [r.connection_id, { id: r.id, metadata: r.metadata }]))
  return { found, missing: connectionIds.filter((id) => !found.has(id)) }
}

export async function writeMetadata(
  db: Queryable,
  sealer: Sealer,
  id: number,
  metadata: JsonObject,
): Promise<void> {
  await db
    .updateTable('connections')
    .set({ metadata: sealJson(sealer, metadata), updated_at: new Date() })
    .where('id', '=', id)
    .execute()
}

export function readMetadata(sealer: Sealer, stored: string | null): JsonObject {
  return stored === null ? {} : openJson<JsonObject>(sealer, stored)
}
