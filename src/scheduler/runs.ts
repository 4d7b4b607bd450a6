import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import { type FinalRunState, type RunState, runStatesLeadingTo } from './states.ts'

export type RunReason = 'schedule' | 'trigger' | 'start'

/** A run this instance claimed: it alone may report on it, by presenting the lease. */
export interface ClaimedRun {
  id: number
  syncId: string
  connectionId: number
  lease: string
  reason: RunReason
  reset: boolean
  emptyCache: boolean
  startedAt: Date
}

export interface RunRequest {
  syncId: string
  connectionId: number
  reason: RunReason
  reset?: boolean
  emptyCache?: boolean
}

/**
 * Asks for a run now. If one is already waiting, the request merges into it (its reset and
 * emptyCache options are OR-ed), so a trigger during a run queues exactly one follow-up.
 */
export async function requestRun(db: Queryable, request: RunRequest): Promise<number> {
  const { rows } = await sql<{ id: number }>`
    INSERT INTO runs (sync_id, connection_id, state, reason, reset, empty_cache)
    VALUES (${request.syncId}, ${request.connectionId}, 'CREATED', ${request.reason},
            ${request.reset ?? false}, ${request.emptyCache ?? false})
    ON CONFLICT (sync_id) WHERE state = 'CREATED' DO UPDATE SET
      reset = runs.reset OR excluded.reset,
      empty_cache = runs.empty_cache OR excluded.empty_cache,
      due_at = least(runs.due_at, excluded.due_at)
    RETURNING id`.execute(db)
  return rows[0]!.id
}

/**
 * Claims up to `limit` waiting runs that are due, oldest first, skipping syncs that already have a
 * run executing. FOR UPDATE SKIP LOCKED lets every instance claim at once without blocking, and
 * the partial unique index on STARTED runs makes a second execution of one sync impossible.
 */
export async function claimRuns(db: Queryable, owner: string, limit: number): Promise<ClaimedRun[]> {
  const { rows } = await sql<{
    id: number
    sync_id: string
    connection_id: number
    lease: string
    reason: RunReason
    reset: boolean
    empty_cache: boolean
    started_at: Date
  }>`
    WITH candidates AS (
      SELECT r.id FROM runs r
      WHERE r.state = 'CREATED' AND r.due_at <= now()
        AND NOT EXISTS (SELECT 1 FROM runs s WHERE s.sync_id = r.sync_id AND s.state = 'STARTED')
      ORDER BY r.due_at, r.id
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    )
    UPDATE runs r SET state = 'STARTED', started_at = now(), heartbeat_at = now(), owner = ${owner},
                      lease = gen_random_uuid()
    FROM candidates c
    WHERE r.id = c.id AND r.state = 'CREATED'
    RETURNING r.id, r.sync_id, r.connection_id, r.lease, r.reason, r.reset, r.empty_cache, r.started_at`.execute(
    db,
  )
  return rows.map((r) => ({
    id: r.id,
    syncId: r.sync_id,
    connectionId: r.connection_id,
    lease: r.lease,
    reason: r.reason,
    reset: r.reset,
    emptyCache: r.empty_cache,
    startedAt: r.started_at,
  }))
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

/** Whether the run is still held by this lease (a sync function's writes check it). */
export async function holdsRun(db: Queryable, id: number, lease: string): Promise<boolean> {
  const row = await db
    .selectFrom('runs')
    .select('id')
    .where('id', '=', id)
    .where('lease', '=', lease)
    .where('state', '=', 'STARTED')
    .executeTakeFirst()
  return row !== undefined
}

export interface RunOutcome {
  state: FinalRunState
  result?: Record<string, { added: number; updated: number; deleted: number }>
  error?: string
}

/**
 * Records how a run ended, only if this lease still holds it and the transition table allows it.
 * Returns false for a late report (the run expired or was cancelled meanwhile): nothing changes.
 */
export async function finishRun(
  db: Queryable,
  run: { id: number; lease: string },
  outcome: RunOutcome,
): Promise<boolean> {
  const from: RunState[] = runStatesLeadingTo(outcome.state)
  const { rows } = await sql<{ id: number }>`
    UPDATE runs SET state = ${outcome.state}, ended_at = now(),
                    result = ${outcome.result ? JSON.stringify(outcome.result) : null}::jsonb,
                    error = ${outcome.error ?? null}
    WHERE id = ${run.id} AND lease = ${run.lease} AND state = any(${from}::text[])
    RETURNING id`.execute(db)
  return rows.length > 0
}

export async function hasWaitingRun(db: Queryable, syncId: string): Promise<boolean> {
  const row = await db
    .selectFrom('runs')
    .select('id')
    .where('sync_id', '=', syncId)
    .where('state', '=', 'CREATED')
    .executeTakeFirst()
  return row !== undefined
}

/**
 * When the changes a successful run should announce began: the start of the earliest run since
 * the previous success, so writes of runs that failed in between are covered too.
 */
export async function changesSince(db: Queryable, syncId: string, runId: number): Promise<Date> {
  const { rows } = await sql<{ since: Date }>`
    SELECT min(started_at) AS since FROM runs
    WHERE sync_id = ${syncId} AND started_at IS NOT NULL
      AND id > coalesce((SELECT max(id) FROM runs WHERE sync_id = ${syncId} AND state = 'SUCCEEDED' AND id <> ${runId}), 0)`.execute(
    db,
  )
  return rows[0]!.since
}

/** Records the type a run was decided to be (full / incremental) once it starts. */
export async function setRunType(db: Queryable, id: number, type: 'full' | 'incremental'): Promise<void> {
  await db.updateTable('runs').set({ type }).where('id', '=', id).execute()
}

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
        WHERE state = 'STARTED'
          AND (heartbeat_at < now() - ${limits.heartbeatTimeoutMs} * interval '1 millisecond'
               OR started_at < now() - ${limits.maxRunMs} * interval '1 millisecond')
        LIMIT ${batch}
        FOR UPDATE SKIP LOCKED)
      AND r.state = 'STARTED'
      RETURNING r.id, r.sync_id, r.connection_id, r.reason, r.reset, r.empty_cache,
                r.heartbeat_at < now() - ${limits.heartbeatTimeoutMs} * interval '1 millisecond' AS worker_died
    ), retried AS (
      INSERT INTO runs (sync_id, connection_id, state, reason, reset, empty_cache)
      SELECT sync_id, connection_id, 'CREATED', reason, reset, empty_cache FROM expired WHERE worker_died
      ON CONFLICT DO NOTHING
    )
    SELECT id, sync_id FROM expired`.execute(db)
  return rows.map((r) => ({ id: r.id, syncId: r.sync_id }))
}

/** Cancels runs of these syncs in the given states (waiting ones on pause; all on variant deletion). */
export async function cancelRuns(
  db: Queryable,
  syncIds: readonly string[],
  states: readonly ('CREATED' | 'STARTED')[],
  reason: string,
): Promise<number> {
  if (syncIds.length === 0) return 0
  const result = await db
    .updateTable('runs')
    .set({ state: 'CANCELLED', ended_at: new Date(), error: reason })
    .where('sync_id', 'in', [...syncIds])
    .where('state', 'in', [...states])
    .executeTakeFirst()
  return Number(result.numUpdatedRows)
}
