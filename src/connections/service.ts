import { randomUUID } from 'node:crypto'

import type { Kysely, Transaction } from 'kysely'
import type { Static } from 'typebox'

import type { Sealer } from '../crypto.ts'
import type { Database, Queryable } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { lockForProvisioning } from '../deployments/store.ts'
import { HttpError, notFound } from '../errors.ts'
import { notifyRunsReady } from '../scheduler/wakeups.ts'
import { provisionSyncs } from '../syncs/provision.ts'
import { tagsFor } from './format.ts'
import type { PostConnectionBody } from './schemas.ts'
import {
  type Connection,
  type ConnectionRef,
  findConnectionRef,
  type JsonObject,
  lockConnections,
  readMetadata,
  upsertConnection,
  writeMetadata,
} from './store.ts'

/**
 * Imports a connection as POST /connections does, for the route, `syncstore connections create`
 * and the example alike: a generated id when none is given, OAuth credentials kept with their
 * `raw` copy (Nango's shape), tags derived from the end user. In the same transaction the
 * connection gets the syncs and schedules of its integration's deployed definitions, and the
 * dispatchers of every instance are woken at commit: whichever process creates a connection, its
 * syncs exist as soon as it does.
 */
export async function importConnection(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  body: Static<typeof PostConnectionBody>,
): Promise<{ connection: Connection; created: boolean }> {
  return inTransaction(db, (trx) => saveConnection(trx, sealer, environmentId, body))
}

/**
 * importConnection's work in the caller's transaction, for callers that change more in the same
 * one (a connection taken from a paired Nango, src/nango/).
 */
export async function saveConnection(
  trx: Transaction<Database>,
  sealer: Sealer,
  environmentId: number,
  body: Static<typeof PostConnectionBody>,
): Promise<{ connection: Connection; created: boolean }> {
  await lockForProvisioning(trx, environmentId)
  const saved = await upsertConnection(trx, sealer, environmentId, {
    providerConfigKey: body.provider_config_key,
    connectionId: body.connection_id ?? randomUUID(),
    metadata: body.metadata,
    credentials: body.credentials && withRaw(body.credentials),
    connectionConfig: body.connection_config,
    tags: tagsFor(body.tags, body.end_user),
    endUser: body.end_user,
  })
  const { created } = await provisionSyncs(trx, environmentId, [saved.connection.id])
  if (created > 0) await notifyRunsReady(trx)
  return saved
}

/** Nango keeps what the provider sent for OAuth credentials beside the fields it reads. */
function withRaw(credentials: Record<string, unknown>): Record<string, unknown> {
  const type = credentials.type
  return type === 'OAUTH2' || type === 'OAUTH1' || type === 'OAUTH2_CC'
    ? { ...credentials, raw: { ...credentials } }
    : credentials
}

/**
 * The one error for a request that names no connection of the key's environment: Nango's 400 and
 * message (records, prune, variants, frequency, DELETE /connection).
 */
export const unknownConnection = () =>
  new HttpError(
    400,
    'unknown_connection',
    'Provided ConnectionId and ProviderConfigKey does not match a valid connection',
  )

/**
 * The connection that (environment, integration, connection id) names, or `missing()` thrown. The
 * few places where Nango answers differently (a 404 on POST /sync/trigger, "Connection not found"
 * on GET /sync/status, a command's own error) pass their own.
 */
export async function requireConnection(
  db: Queryable,
  environmentId: number,
  providerConfigKey: string,
  connectionId: string,
  missing: () => Error = unknownConnection,
): Promise<ConnectionRef> {
  const connection = await findConnectionRef(db, environmentId, providerConfigKey, connectionId)
  if (!connection) throw missing()
  return connection
}

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
  await inTransaction(db, async (trx) => {
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
  })
}
