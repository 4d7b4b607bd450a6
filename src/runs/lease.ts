import { sql, type Transaction } from 'kysely'

import type { Database, Queryable } from '../db/database.ts'
import type { RunStateLeadingTo } from './states.ts'

export type RunReason = 'schedule' | 'trigger' | 'start'

/**
 * A run this instance claimed: it alone may report on it, by presenting the lease (a uuid the
 * claim wrote). Every write of the run, its heartbeat and its end compare the lease in SQL.
 */
export interface ClaimedRun {
  id: number
  syncId: string
  connectionPk: number
  lease: string
  reason: RunReason
  reset: boolean
  emptyCache: boolean
  startedAt: Date
}

class RunLostError extends Error {
  override name = 'RunLostError'
}

/**
 * The lease check: refuses a write unless the run still holds its lease. FOR SHARE keeps the run
 * row from being cancelled or expired until the write commits, so a variant deletion or an expiry
 * is either seen here (and the write refused) or waits for the write and then removes it with
 * everything else.
 */
export async function assertHoldsRun(
  trx: Transaction<Database>,
  run: { id: number; lease: string },
): Promise<void> {
  const { rows } =
    await sql`SELECT 1 FROM runs WHERE id = ${run.id} AND lease = ${run.lease} AND state = 'STARTED'
                             FOR SHARE`.execute(trx)
  if (rows.length === 0) throw new RunLostError('This run was cancelled or expired; it can no longer write')
}

/** Renews the heartbeat of runs still held; returns the ids that are (the others were lost). */
export async function heartbeat(
  db: Queryable,
  runs: readonly { id: number; lease: string }[],
): Promise<Set<number>> {
  if (runs.length === 0) return new Set()
  const { rows } = await sql<{ id: number }>`
    UPDATE runs r SET heartbeat_at = now()
    FROM unnest(${runs.map((r) => r.id)}::bigint[], ${runs.map((r) => r.lease)}::uuid[]) AS h (id, lease)
    WHERE r.id = h.id AND r.lease = h.lease AND r.state = 'STARTED'
    RETURNING r.id`.execute(db)
  return new Set(rows.map((r) => r.id))
}

// Only a run that holds a lease expires: one still waiting has no worker to lose.
const EXPIRES: RunStateLeadingTo<'EXPIRED'> = 'STARTED'

/**
 * Expires runs whose worker stopped reporting (heartbeat older than the timeout) or that ran past
 * the limit. A run whose worker died is asked for again at once (same reason and options), so the
 * work it did not finish is redone soon rather than at the next slot; one that merely overran is
 * not (its function would overrun again). Returns the expired runs.
 */
export async function expireRuns(
  db: Queryable,
  limits: { heartbeatTimeoutMs: number; maxRunMs: number },
  batch = 1000,
): Promise<{ id: number; syncId: string }[]> {
  const { rows } = await sql<{ id: number; sync_id: string }>`
    WITH expired AS (
      UPDATE runs r SET state = 'EXPIRED', ended_at = now(),
        error = CASE WHEN r.heartbeat_at < now() - ${limits.heartbeatTimeoutMs} * interval '1 millisecond'
                     THEN 'Run expired: no heartbeat for ' || ${limits.heartbeatTimeoutMs} || ' ms (its worker stopped)'
                     ELSE 'Run expired: ran longer than ' || ${limits.maxRunMs} || ' ms' END
      WHERE r.id IN (
        SELECT id FROM runs
        WHERE state = ${sql.lit(EXPIRES)}
          AND (heartbeat_at < now() - ${limits.heartbeatTimeoutMs} * interval '1 millisecond'
               OR started_at < now() - ${limits.maxRunMs} * interval '1 millisecond')
        LIMIT ${batch}
        FOR UPDATE SKIP LOCKED)
      AND r.state = ${sql.lit(EXPIRES)}
      RETURNING r.id, r.sync_id, r.connection_pk, r.reason, r.reset, r.empty_cache,
                r.heartbeat_at < now() - ${limits.heartbeatTimeoutMs} * interval '1 millisecond' AS worker_died
    ), retried AS (
      INSERT INTO runs (sync_id, connection_pk, state, reason, reset, empty_cache)
      SELECT sync_id, connection_pk, 'CREATED', reason, reset, empty_cache FROM expired WHERE worker_died
      ON CONFLICT DO NOTHING
    )
    SELECT id, sync_id FROM expired`.execute(db)
  return rows.map((r) => ({ id: r.id, syncId: r.sync_id }))
}
