import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import type { ClaimedRun, RunReason } from '../runs/lease.ts'
import type { RunStateLeadingTo } from '../runs/states.ts'

/** The waiting runs: asking for one, and claiming the due ones. What a run does once claimed is runs/. */

export interface RunRequest {
  syncId: string
  connectionPk: number
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
    INSERT INTO runs (sync_id, connection_pk, state, reason, reset, empty_cache)
    VALUES (${request.syncId}, ${request.connectionPk}, 'CREATED', ${request.reason},
            ${request.reset ?? false}, ${request.emptyCache ?? false})
    ON CONFLICT (sync_id) WHERE state = 'CREATED' DO UPDATE SET
      reset = runs.reset OR excluded.reset,
      empty_cache = runs.empty_cache OR excluded.empty_cache,
      due_at = least(runs.due_at, excluded.due_at)
    RETURNING id`.execute(db)
  return rows[0]!.id
}

const CLAIMABLE: RunStateLeadingTo<'STARTED'> = 'CREATED'

/**
 * Claims up to `limit` waiting runs that are due, oldest first, skipping syncs that already have a
 * run executing. FOR UPDATE SKIP LOCKED lets every instance claim at once without blocking, and
 * the partial unique index on STARTED runs makes a second execution of one sync impossible.
 * Runs due at the same moment come in no particular order: ordered by due_at alone, the claim
 * walks runs_claim_idx and stops at the limit, skipping (and marking) the entries of runs claimed
 * before. With id as a tie-break it read and sorted every entry of that index instead, dead ones
 * included: 3,232 of them to claim 32 runs, 20 ms, after 100 claims of 32.
 *
 * Planned on every call, not a prepared statement: a connection keeps a prepared statement's
 * generic plan until runs' statistics change, and one made while runs was empty (a new database,
 * until autovacuum next analyzes it) scans all of runs for every candidate. At 100,000 due schedules, 20,000 runs in, this claim then took 30 ms
 * and materializing 48-66 ms, where planned each time they take 4-5 ms (0.5 ms of it planning):
 * dispatch fell from 700 runs/s to 255 within 20 s.
 */
export async function claimRuns(db: Queryable, owner: string, limit: number): Promise<ClaimedRun[]> {
  const { rows } = await sql<{
    id: number
    sync_id: string
    connection_pk: number
    lease: string
    reason: RunReason
    reset: boolean
    empty_cache: boolean
    started_at: Date
  }>`
    WITH candidates AS (
      SELECT r.id FROM runs r
      WHERE r.state = ${sql.lit(CLAIMABLE)} AND r.due_at <= now()
        AND NOT EXISTS (SELECT 1 FROM runs s WHERE s.sync_id = r.sync_id AND s.state = 'STARTED')
      ORDER BY r.due_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    )
    UPDATE runs r SET state = 'STARTED', started_at = now(), heartbeat_at = now(), owner = ${owner},
                      lease = gen_random_uuid()
    FROM candidates c
    WHERE r.id = c.id AND r.state = ${sql.lit(CLAIMABLE)}
    RETURNING r.id, r.sync_id, r.connection_pk, r.lease, r.reason, r.reset, r.empty_cache, r.started_at`.execute(
    db,
  )
  return rows.map((r) => ({
    id: r.id,
    syncId: r.sync_id,
    connectionPk: r.connection_pk,
    lease: r.lease,
    reason: r.reason,
    reset: r.reset,
    emptyCache: r.empty_cache,
    startedAt: r.started_at,
  }))
}
