import { sql, type Transaction } from 'kysely'

import type { Database, Queryable } from '../db/database.ts'
import { markSynced } from '../records/datasets.ts'
import { queueSyncWebhooks } from '../webhooks/deliver.ts'
import { endRunsStatement, type RunEnding } from './states.ts'

/** A run completeRuns ended: whether a follow-up of its sync is waiting to start. */
export interface RunEnded {
  followUp: boolean
}

/**
 * The one way runs end. In the caller's transaction: moves each run to its final state (only if
 * its lease still holds it), and for a success stamps the sync's last sync date, marks its datasets
 * synced and queues the webhooks, so a success is never recorded without them, nor they without it.
 * Runs end in one statement however many there are (the dispatcher records the runs that ended
 * while it recorded the previous ones together). Returns the runs it ended, by id; a late report
 * (the run expired or was cancelled meanwhile) is not among them and changed nothing. The statement
 * is planned on every call, not prepared: a generic plan made while runs was empty would scan all
 * of runs to find the ones ending (see claimDueRuns in scheduler/run-queue.ts).
 */
export async function completeRuns(
  trx: Transaction<Database>,
  ends: readonly (RunEnding & { run: { syncId: string } })[],
): Promise<Map<number, RunEnded>> {
  if (ends.length === 0) return new Map()
  // The next incremental run asks for changes since this run's start, not its end: what changed
  // at the source while it ran is fetched again rather than missed. Deleting a sync cancels its
  // runs first, so a run that just succeeded still has its sync (the outer joins are for safety).
  const { rows } = await sql<{
    id: number
    state: string
    follow_up: boolean
    connection_pk: number | null
    variant: string
    name: string
    environment_id: number
    connection_id: string
    provider_config_key: string
  }>`
    WITH ended AS (${endRunsStatement(ends)}),
    stamped AS (
      UPDATE syncs s SET last_sync_date = ended.started_at FROM ended
      WHERE s.id = ended.sync_id AND ended.state = 'SUCCEEDED'
    )
    SELECT ended.id, ended.state,
           EXISTS (SELECT 1 FROM runs w WHERE w.sync_id = ended.sync_id AND w.state = 'CREATED') AS follow_up,
           s.connection_pk, s.variant, s.name, c.environment_id, c.connection_id, c.provider_config_key
    FROM ended
    LEFT JOIN syncs s ON s.id = ended.sync_id
    LEFT JOIN connections c ON c.id = s.connection_pk`.execute(trx)

  const byId = new Map(ends.map((e) => [e.run.id, e]))
  const ended = new Map<number, RunEnded>()
  for (const row of rows) {
    ended.set(row.id, { followUp: row.follow_up })
    if (row.state !== 'SUCCEEDED' || row.connection_pk === null) continue
    const { run, outcome } = byId.get(row.id)!
    const counts = outcome.result ?? {}
    await markSynced(trx, row.connection_pk, Object.keys(counts), row.variant)

    // Nothing changed, nothing to announce: no webhook, and no need to work out since when.
    if (!Object.values(counts).some((c) => c.added + c.updated + c.deleted > 0)) continue
    const { type, since } = await successFacts(trx, run)
    await queueSyncWebhooks(trx, {
      runId: run.id,
      environmentId: row.environment_id,
      connectionId: row.connection_id,
      providerConfigKey: row.provider_config_key,
      syncName: row.name,
      variant: row.variant,
      type,
      counts,
      modifiedAfter: since,
    })
  }
  return ended
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
