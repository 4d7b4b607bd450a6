import { randomUUID } from 'node:crypto'

import { sha256Hex } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'

export interface ApiKeyInfo {
  id: string
  environment: string
  keyPrefix: string
  scopes: string[]
  createdAt: Date
  lastUsedAt: Date | null
  revokedAt: Date | null
}

/** The identity behind a request: the key's environment and what it may do. */
export interface Principal {
  environmentId: number
  environment: string
  scopes: readonly string[]
  /** null for bootstrap keys that come from NANGO_SECRET_KEY_<ENV> */
  keyId: string | null
}

/** Creates a key and returns its secret, which is never stored and cannot be shown again. */
export async function createKey(
  db: Queryable,
  environmentId: number,
  scopes: readonly string[],
): Promise<{ id: string; secret: string }> {
  // A UUID v4, like Nango's keys: 122 random bits, so a fast hash (SHA-256) is enough at rest.
  const secret = randomUUID()
  const row = await db
    .insertInto('api_keys')
    .values({
      environment_id: environmentId,
      key_hash: sha256Hex(secret),
      key_prefix: secret.slice(0, 8),
      scopes: [...scopes],
    })
    .returning('id')
    .executeTakeFirstOrThrow()
  return { id: row.id, secret }
}

export async function listKeys(db: Queryable, environmentId: number): Promise<ApiKeyInfo[]> {
  const rows = await db
    .selectFrom('api_keys')
    .innerJoin('environments', 'environments.id', 'api_keys.environment_id')
    .select([
      'api_keys.id',
      'environments.name as environment',
      'api_keys.key_prefix',
      'api_keys.scopes',
      'api_keys.created_at',
      'api_keys.last_used_at',
      'api_keys.revoked_at',
    ])
    .where('api_keys.environment_id', '=', environmentId)
    .orderBy('api_keys.created_at')
    .execute()
  return rows.map((r) => ({
    id: r.id,
    environment: r.environment,
    keyPrefix: r.key_prefix,
    scopes: r.scopes,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    revokedAt: r.revoked_at,
  }))
}

/** Revokes a key by id; returns false when no active key has that id. */
export async function revokeKey(db: Queryable, id: string): Promise<boolean> {
  const result = await db
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

export async function findActiveKey(db: Queryable, keyHash: string): Promise<Principal | undefined> {
  const row = await db
    .selectFrom('api_keys')
    .innerJoin('environments', 'environments.id', 'api_keys.environment_id')
    .select(['api_keys.id', 'api_keys.environment_id', 'environments.name', 'api_keys.scopes'])
    .where('api_keys.key_hash', '=', keyHash)
    .where('api_keys.revoked_at', 'is', null)
    .executeTakeFirst()
  return (
    row && { environmentId: row.environment_id, environment: row.name, scopes: row.scopes, keyId: row.id }
  )
}

export async function touchKey(db: Queryable, id: string): Promise<void> {
  await db.updateTable('api_keys').set({ last_used_at: new Date() }).where('id', '=', id).execute()
}
