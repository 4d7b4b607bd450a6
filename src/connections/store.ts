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

const columns = [
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
] as const

type Row = {
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
}

function toConnection(sealer: Sealer, row: Row): Connection {
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
  }
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
    .returning([...columns, sql<boolean>`(xmax = 0)`.as('inserted')])
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
    .select(columns)
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
    ])
    .where('environment_id', '=', environmentId)
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
