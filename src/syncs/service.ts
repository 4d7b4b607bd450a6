import type { Kysely } from 'kysely'

import { requireConnection } from '../connections/service.ts'
import { readDefinitions } from '../deployments/store.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { HttpError } from '../errors.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import { cancelRuns } from '../runs/states.ts'
import { requestRun } from '../scheduler/run-queue.ts'
import { setScheduleState } from '../scheduler/schedules.ts'
import type { Wakeups } from '../scheduler/wakeups.ts'
import { findSyncs, type SyncRow, type SyncSelector } from './store.ts'

export interface SyncServices {
  db: Kysely<Database>
  wakeups: Wakeups
}

/** `"name"`, `"name::variant"` or `{name, variant}`, as Nango accepts them. */
export function toSelector(item: string | { name: string; variant: string }): SyncSelector {
  if (typeof item !== 'string') return { name: item.name, variant: item.variant }
  const [name, variant] = item.split('::')
  return { name: name!, variant: variant || BASE_VARIANT }
}

export interface CommandTarget {
  environmentId: number
  providerConfigKey: string
  connectionId?: string | undefined
  /** empty = every sync */
  selectors: readonly SyncSelector[]
}

const noSyncs = () => new HttpError(400, 'no_syncs_found', 'No syncs found given the inputs.')

/**
 * The syncs a trigger, pause or start applies to, with Nango's errors. Unlike Nango, every named
 * sync is checked before anything changes, so a bad name never leaves a command half applied.
 */
export async function resolveCommandTargets(s: SyncServices, t: CommandTarget): Promise<SyncRow[]> {
  const definitions = await readDefinitions(s.db, t.environmentId)
  if (!definitions.integrations.has(t.providerConfigKey)) {
    throw new HttpError(
      400,
      'unknown_provider_config',
      'There is no Provider Configuration matching this key. Please make sure this value exists in the Nango dashboard',
    )
  }
  const selectors = t.selectors.length === 0 ? 'all' : t.selectors
  // A sync whose definition left the deployment is stopped (its rows and records stay): it is not
  // one to trigger, pause or start, as in Nango once a sync is removed from the deployment.
  const findDeployed = async (scope: Parameters<typeof findSyncs>[1]) =>
    (await findSyncs(s.db, scope, selectors)).filter((r) => definitions.find(r.providerConfigKey, r.name))
  if (t.connectionId !== undefined) {
    // Nango's POST /sync/trigger answers an unknown connection with a 404 of its own wording.
    const connection = await requireConnection(
      s.db,
      t.environmentId,
      t.providerConfigKey,
      t.connectionId,
      () =>
        new HttpError(
          404,
          'unknown_connection',
          "No connection matching the provided params of 'connection_id' and 'provider_config_key'. " +
            'Please make sure these values exist in the Nango dashboard',
        ),
    )
    const rows = await findDeployed({
      environmentId: t.environmentId,
      providerConfigKey: t.providerConfigKey,
      connectionPk: connection.id,
    })
    const missing = t.selectors.some(
      (sel) => !rows.some((r) => r.name === sel.name && r.variant === sel.variant),
    )
    if (missing) throw noSyncs()
    return rows
  }
  const rows = await findDeployed({ environmentId: t.environmentId, providerConfigKey: t.providerConfigKey })
  if (rows.length === 0) throw noSyncs()
  return rows
}

/**
 * Runs the syncs now, also when paused (they stay paused). A sync that is running gets exactly
 * one follow-up run, which starts when the current one ends.
 */
export async function triggerSyncs(
  s: SyncServices,
  rows: readonly SyncRow[],
  options: { reset: boolean; emptyCache: boolean },
): Promise<void> {
  await inTransaction(s.db, async (trx) => {
    for (const row of rows) {
      await requestRun(trx, {
        syncId: row.id,
        connectionPk: row.connectionPk,
        reason: 'trigger',
        ...options,
      })
    }
  })
  await s.wakeups.notify()
}

/** Pauses: a run in progress finishes, waiting ones are cancelled, no new one starts. */
export async function pauseSyncs(s: SyncServices, rows: readonly SyncRow[]): Promise<void> {
  const ids = rows.map((r) => r.id)
  await inTransaction(s.db, async (trx) => {
    await setScheduleState(trx, ids, 'PAUSED', ['STARTED'])
    await cancelRuns(trx, ids, ['CREATED'], 'The sync was paused')
  })
}

/** Resumes paused schedules: each runs at once, then on its frequency. Others are left alone. */
export async function startSyncs(s: SyncServices, rows: readonly SyncRow[]): Promise<void> {
  const resumed = await inTransaction(s.db, async (trx) => {
    const ids = await setScheduleState(
      trx,
      rows.map((r) => r.id),
      'STARTED',
      ['PAUSED'],
    )
    for (const row of rows.filter((r) => ids.includes(r.id))) {
      await requestRun(trx, { syncId: row.id, connectionPk: row.connectionPk, reason: 'start' })
    }
    return ids
  })
  if (resumed.length > 0) await s.wakeups.notify()
}
