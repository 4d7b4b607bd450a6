import { sql, type Transaction } from 'kysely'

import type { Database, Queryable } from '../db/database.ts'
import { markSynced } from '../records/datasets.ts'
import { findSyncById, setLastSyncDate } from '../syncs/store.ts'
import { queueSyncWebhooks } from '../webhooks/deliver.ts'
import type { ClaimedRun } from './lease.ts'
import { finishRun, type RunOutcome } from './states.ts'

/**
 * The one way a run ends. In the caller's transaction: moves the run to its final state (only if
 * its lease still holds it), and for a success stamps the sync's last sync date, marks its datasets
 * synced and queues the webhooks, so a success is never recorded without them, nor they without it.
 * Returns false for a late report (the run expired or was cancelled meanwhile): nothing changes.
 */
export async function completeRun(
  trx: Transaction<Database>,
  run: ClaimedRun,
  outcome: RunOutcome,
): Promise<boolean> {
  if (!(await finishRun(trx, run, outcome))) return false
  if (outcome.state !== 'SUCCEEDED') return true
  // Deleting a sync cancels its runs first, so a run that just succeeded still has its sync.
  const sync = await findSyncById(trx, run.syncId)
  if (!sync) return true

  // The next incremental run asks for changes since this run's start, not its end: what changed
  // at the source while it ran is fetched again rather than missed.
  await setLastSyncDate(trx, sync.id, run.startedAt)
  const counts = outcome.result ?? {}
  await markSynced(trx, sync.connectionPk, Object.keys(counts), sync.variant)

  // Nothing changed, nothing to announce: no webhook, and no need to work out since when.
  if (!Object.values(counts).some((c) => c.added + c.updated + c.deleted > 0)) return true
  const { type, since } = await successFacts(trx, run)
  await queueSyncWebhooks(trx, {
    runId: run.id,
    environmentId: sync.environmentId,
    connectionId: sync.connectionId,
    providerConfigKey: sync.providerConfigKey,
    syncName: sync.name,
    variant: sync.variant,
    type,
    counts,
    modifiedAfter: since,
  })
  return true
}

/**
 * What the webhooks of a success announce: the run's type (set when it started), and since when
 * changes are reported: the start of the earliest run since the previous success, so a consumer
 * reading GET /records?modified_after= also gets what runs that failed in between wrote.
 */
async function successFacts(
  db: Queryable,
  run: { id: number; syncId: string },
): Promise<{ type: 'full' | 'incremental'; since: Date }> {
  const { rows } = await sql<{ type: 'full' | 'incremental' | null; since: Date }>`
    SELECT (SELECT type FROM runs WHERE id = ${run.id}) AS type, min(started_at) AS since FROM runs
    WHERE sync_id = ${run.syncId} AND started_at IS NOT NULL
      AND id > coalesce((SELECT max(id) FROM runs WHERE sync_id = ${run.syncId} AND state = 'SUCCEEDED' AND id <> ${run.id}), 0)`.execute(
    db,
  )
  return { type: rows[0]!.type ?? 'full', since: rows[0]!.since }
}
