import type { Kysely } from 'kysely'

import { deleteConnection } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { lockForDeployment, readDefinitions } from '../deployments/store.ts'
import { startDeployment } from '../deployments/writer.ts'
import { HttpError, notFound } from '../errors.ts'
import {
  connectionIdsOf,
  deleteIntegrationRow,
  findIntegration,
  type Integration,
  type IntegrationChange,
  insertIntegration,
  type NewIntegration,
  updateIntegration,
} from './store.ts'

/**
 * Creating, changing and deleting integrations, for the routes and `syncstore integrations` alike,
 * with Nango's checks and messages (packages/server/lib/services/integration.service.ts and the
 * controllers' error mapping). Provider names are taken as given: any name in Nango's pattern.
 */

const invalidBody = (message: string, issue?: { code: string; path: string[] }) =>
  new HttpError(400, 'invalid_body', message, issue && [{ ...issue, message }])

/** Nango's 404 message for GET and PATCH. */
export const noSuchIntegration = (uniqueKey: string) =>
  notFound('not_found', `Integration "${uniqueKey}" does not exist`)

export async function createIntegration(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  input: NewIntegration,
): Promise<Integration> {
  const created = await insertIntegration(db, sealer, environmentId, input)
  if (!created) {
    throw invalidBody('Unique key already exists', { code: 'invalid_string', path: ['uniqueKey'] })
  }
  return created
}

/**
 * Applies a change. Renaming is refused, as by Nango, while connections use the key, and (ours)
 * while syncs are deployed under it: a deployed folder names its integration by that key. Under the
 * deployment lock, so no connection or deployment arrives between the check and the rename.
 */
export async function changeIntegration(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  uniqueKey: string,
  change: IntegrationChange,
): Promise<Integration> {
  return inTransaction(db, async (trx) => {
    await lockForDeployment(trx, environmentId)
    if (!(await findIntegration(trx, environmentId, uniqueKey))) throw noSuchIntegration(uniqueKey)
    const renamed = change.uniqueKey !== undefined && change.uniqueKey !== uniqueKey
    if (renamed) {
      if (await findIntegration(trx, environmentId, change.uniqueKey!)) {
        throw invalidBody('uniqueKey is already used by another integration')
      }
      if ((await connectionIdsOf(trx, environmentId, uniqueKey, 1)).length > 0) {
        throw invalidBody("Can't rename an integration with active connections")
      }
      const { integrations } = await readDefinitions(trx, environmentId)
      if (integrations.get(uniqueKey)?.syncs.length) {
        throw invalidBody("Can't rename an integration with deployed functions")
      }
    }
    const updated = await updateIntegration(trx, sealer, environmentId, uniqueKey, change)
    return updated!
  })
}

/**
 * Deletes an integration in one transaction, as Nango does (its syncs, deployed functions and
 * connections go with it): each connection is deleted as DELETE /connections/{id} deletes one (its
 * syncs, schedules, runs and records go with it), its deployed syncs are removed as DELETE
 * /integrations/{key}/functions/{name} removes one (a deployment is recorded), then the row.
 * A deployed folder that still has the integration brings it back on its next deployment.
 */
export async function deleteIntegration(
  db: Kysely<Database>,
  environmentId: number,
  uniqueKey: string,
  by: { deployedBy: string; source: string },
): Promise<{ connections: number; syncs: string[] }> {
  return inTransaction(db, async (trx) => {
    await lockForDeployment(trx, environmentId)
    if (!(await findIntegration(trx, environmentId, uniqueKey))) {
      throw notFound('not_found', 'Integration does not exist')
    }
    const connectionIds = await connectionIdsOf(trx, environmentId, uniqueKey)
    for (const id of connectionIds) await deleteConnection(trx, environmentId, uniqueKey, id)
    const deployment = startDeployment(trx, environmentId, by)
    const { integrations } = await readDefinitions(trx, environmentId)
    for (const sync of integrations.get(uniqueKey)?.syncs ?? []) {
      await deployment.removeSync(uniqueKey, sync.name)
    }
    if (deployment.summary.removed.length > 0) deployment.summary.integrations.push(uniqueKey)
    await deleteIntegrationRow(trx, environmentId, uniqueKey)
    await deployment.finish()
    return { connections: connectionIds.length, syncs: deployment.summary.removed }
  })
}
