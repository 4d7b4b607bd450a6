import type { Transaction } from 'kysely'

import type { Database } from '../db/database.ts'
import { notifyRunsReady } from '../scheduler/wakeups.ts'
import { provisionSyncs } from '../syncs/provision.ts'
import type { DeploymentSummary } from './store.ts'

/**
 * The write side of every deployment (a folder, `nango deploy`, a function deleted through the
 * API): inside the caller's transaction, which holds the environment's deployment lock. The
 * deployment row is inserted the first time something changes, so a deployment that changes
 * nothing records nothing; `finish` stores its summary and provisions what it implies (new syncs
 * for existing connections, removed ones stopped with their records kept).
 */
export interface DeploymentWriter {
  readonly summary: DeploymentSummary
  /** The deployment's id, recording it now if nothing has yet. */
  record(): Promise<string | number>
  /** Stores a sync's new version (its bundle once per hash), listed as added or changed. */
  writeSync(integration: string, name: string, definition: DefinitionValues, isNew: boolean): Promise<void>
  /** Removes a deployed sync; false when there was none. */
  removeSync(integration: string, name: string): Promise<boolean>
  /** Stores the summary and provisions; the deployment's id, null when nothing changed. */
  finish(): Promise<number | null>
}

/** A definition's columns but its keys and deployment. */
export interface DefinitionValues {
  bundle: { hash: string; code: string }
  file: string
  /** the file's source, before bundling (what Nango's functions API returns as its code) */
  source: string
  description: string
  frequency: string
  frequencyMs: number
  autoStart: boolean
  syncType: 'full' | 'incremental'
  trackDeletes: boolean
  models: Record<string, object>
  extra: Record<string, unknown>
}

export function startDeployment(
  trx: Transaction<Database>,
  environmentId: number,
  by: { deployedBy: string; source: string },
  refused: DeploymentSummary['refused'] = [],
): DeploymentWriter {
  const summary: DeploymentSummary = { integrations: [], added: [], changed: [], removed: [], refused }
  let id: string | number | undefined

  const record = async () =>
    (id ??= (
      await trx
        .insertInto('deployments')
        .values({
          environment_id: environmentId,
          deployed_by: by.deployedBy,
          source: by.source,
          summary: JSON.stringify({}),
        })
        .returning('id')
        .executeTakeFirstOrThrow()
    ).id)

  return {
    summary,
    record,

    async writeSync(integration, name, d, isNew) {
      ;(isNew ? summary.added : summary.changed).push(`${integration}/${name}`)
      await trx
        .insertInto('bundles')
        .values({ hash: d.bundle.hash, code: d.bundle.code })
        .onConflict((oc) => oc.column('hash').doNothing())
        .execute()
      const values = {
        bundle_hash: d.bundle.hash,
        file: d.file,
        source: d.source,
        description: d.description,
        frequency: d.frequency,
        frequency_ms: d.frequencyMs,
        auto_start: d.autoStart,
        sync_type: d.syncType,
        track_deletes: d.trackDeletes,
        models: JSON.stringify(d.models),
        extra: JSON.stringify(d.extra),
        deployment_id: await record(),
        deployed_at: new Date(),
      }
      await trx
        .insertInto('sync_definitions')
        .values({ environment_id: environmentId, integration, name, ...values })
        .onConflict((oc) => oc.columns(['environment_id', 'integration', 'name']).doUpdateSet(values))
        .execute()
    },

    async removeSync(integration, name) {
      const removed = await trx
        .deleteFrom('sync_definitions')
        .where('environment_id', '=', environmentId)
        .where('integration', '=', integration)
        .where('name', '=', name)
        .returning('id')
        .executeTakeFirst()
      if (!removed) return false
      summary.removed.push(`${integration}/${name}`)
      await record()
      return true
    },

    async finish() {
      // Provisioning also runs when nothing changed: it is idempotent, and repairs what an older
      // version left unprovisioned.
      await provisionSyncs(trx, environmentId)
      if (id === undefined) return null
      await trx
        .updateTable('deployments')
        .set({ summary: JSON.stringify(summary) })
        .where('id', '=', id)
        .execute()
      // New schedules are due at once.
      await notifyRunsReady(trx)
      return Number(id)
    },
  }
}
