import type { Kysely } from 'kysely'
import { type Static, Type } from 'typebox'

import { findConnectionRef } from '../connections/store.ts'
import { recordRefreshFailure } from '../credentials/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import type { NangoClient } from './client.ts'
import { takeConnection } from './connections.ts'

/**
 * What a paired Nango sends (Nango's NangoAuthWebhookBody and the other webhook types): only `type`
 * is required of every webhook; an auth webhook's fields are checked when it is handled.
 */
export const WebhookBody = Type.Object({
  type: Type.String(),
  operation: Type.Optional(Type.String()),
  connectionId: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  providerConfigKey: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  provider: Type.Optional(Type.String()),
  success: Type.Optional(Type.Boolean()),
  error: Type.Optional(
    Type.Object({ type: Type.Optional(Type.String()), description: Type.Optional(Type.String()) }),
  ),
})
export type WebhookBody = Static<typeof WebhookBody>

/**
 * Handles one verified webhook and says what it did (recorded on the pairing). A successful
 * creation or override reads the connection from Nango and stores it with its syncs, committed
 * before this returns; a failed refresh is recorded on the connection. Everything else is ignored.
 */
export async function handleAuthWebhook(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  nango: NangoClient,
  body: WebhookBody,
): Promise<string> {
  const { type, operation, connectionId, providerConfigKey, success } = body
  const what = `${type}${operation ? ` ${operation}` : ''}`
  if (type !== 'auth' || !connectionId || !providerConfigKey) return `ignored ${what}`
  const name = `${providerConfigKey}/${connectionId}`

  if ((operation === 'creation' || operation === 'override') && success === true) {
    const connection = await nango.getConnection(providerConfigKey, connectionId)
    // Deleted again before we asked: nothing to create; the reconcile agrees.
    if (!connection) return `ignored ${what}: ${name} no longer exists in Nango`
    const saved = await takeConnection(db, sealer, environmentId, connection)
    return `${what}: ${saved.created ? 'created' : 'updated'} ${name}`
  }
  if (operation === 'refresh' && success === false) {
    const ref = await findConnectionRef(db, environmentId, providerConfigKey, connectionId)
    if (!ref) return `ignored ${what}: unknown connection ${name}`
    const reason = body.error?.description ?? body.error?.type ?? 'refresh failed in Nango'
    await recordRefreshFailure(db, sealer, ref.id, reason)
    return `${what}: refresh failure recorded on ${name}`
  }
  return `ignored ${what}${success === false ? ' (success: false)' : ''}`
}
