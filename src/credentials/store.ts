import {
  type Connection,
  connectionColumns,
  expiryOf,
  type JsonObject,
  toConnection,
} from '../connections/store.ts'
import { type Sealer, sealJson } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'

/**
 * The connection row a refresh works on, locked (FOR UPDATE) until the caller's transaction ends:
 * a second refresh of the same connection, from this process or another, waits here and then reads
 * what the first one stored.
 */
export async function lockConnection(
  db: Queryable,
  sealer: Sealer,
  id: number,
): Promise<Connection | undefined> {
  const row = await db
    .selectFrom('connections')
    .select(connectionColumns)
    .where('id', '=', id)
    .forUpdate()
    .executeTakeFirst()
  return row && toConnection(sealer, row)
}

/** Stores refreshed credentials (sealed) and clears the failure of earlier attempts. */
export async function saveRefreshed(
  db: Queryable,
  sealer: Sealer,
  id: number,
  credentials: JsonObject,
): Promise<Connection> {
  const now = new Date()
  const row = await db
    .updateTable('connections')
    .set({
      credentials: sealJson(sealer, credentials),
      credentials_expires_at: expiryOf(credentials),
      last_refresh_success: now,
      last_refresh_failure: null,
      refresh_error: null,
      refresh_attempts: 0,
      updated_at: now,
    })
    .where('id', '=', id)
    .returning(connectionColumns)
    .executeTakeFirstOrThrow()
  return toConnection(sealer, row)
}

/** Records a failed refresh: when, why, and one more attempt in a row. */
export async function recordRefreshFailure(
  db: Queryable,
  sealer: Sealer,
  id: number,
  message: string,
): Promise<Connection> {
  const row = await db
    .updateTable('connections')
    .set((eb) => ({
      last_refresh_failure: new Date(),
      refresh_error: message,
      refresh_attempts: eb('refresh_attempts', '+', 1),
    }))
    .where('id', '=', id)
    .returning(connectionColumns)
    .executeTakeFirstOrThrow()
  return toConnection(sealer, row)
}
