import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import type { ClaimedRun, RunReason } from '../runs/lease.ts'
import type { RunStateLeadingTo } from '../runs/states.ts'
import { DUE_SYNC_IDLE, takeDueSchedules } from './schedules.ts'

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

/** What a claim returns of each run it started (the runs row is `r`). */
const CLAIMED = sql`r.id, r.sync_id, r.connection_pk, r.lease, r.reason, r.reset, r.empty_cache, r.started_at`

/**
 * `candidates` (up to `limit` waiting runs that are due, oldest first, skipping syncs that already
 * have a run executing) and the UPDATE that starts them. FOR UPDATE SKIP LOCKED lets every instance
 * claim at once without blocking, and the partial unique index on STARTED runs makes a second
 * execution of one sync impossible.
 * Runs due at the same moment come in no particular order: ordered by due_at alone, the claim
 * walks runs_claim_idx and stops at the limit, skipping (and marking) the entries of runs claimed
 * before. With id as a tie-break it read and sorted every entry of that index instead, dead ones
 * included: 3,232 of them to claim 32 runs, 20 ms, after 100 claims of 32.
 */
const waitingCandidates = (limit: number) => sql`
    candidates AS (
      SELECT r.id FROM runs r
      WHERE r.state = ${sql.lit(CLAIMABLE)} AND r.due_at <= now()
        AND NOT EXISTS (SELECT 1 FROM runs s WHERE s.sync_id = r.sync_id AND s.state = 'STARTED')
      ORDER BY r.due_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    )`
const startCandidates = (owner: string) => sql`
    UPDATE runs r SET state = 'STARTED', started_at = now(), heartbeat_at = now(), owner = ${owner},
                      lease = gen_random_uuid()
    FROM candidates c
    WHERE r.id = c.id AND r.state = ${sql.lit(CLAIMABLE)}
    RETURNING ${CLAIMED}`

interface ClaimedRow {
  id: number
  sync_id: string
  connection_pk: number
  lease: string
  reason: RunReason
  reset: boolean
  empty_cache: boolean
  started_at: Date
}

const toClaimedRun = (r: ClaimedRow): ClaimedRun => ({
  id: r.id,
  syncId: r.sync_id,
  connectionPk: r.connection_pk,
  lease: r.lease,
  reason: r.reason,
  reset: r.reset,
  emptyCache: r.empty_cache,
  startedAt: r.started_at,
})

/**
 * What the dispatcher claims, in one statement: up to `limit` waiting runs (waitingCandidates),
 * then, with the room left, due schedules, each started as a run of its slot (due at the slot's
 * time, so start delay stays measurable) and moved to its next slot (takeDueSchedules). A schedule
 * whose sync has a run waiting or executing skips the slot. Started directly, a scheduled run is written twice
 * (inserted, ended) instead of three times, with no entry in runs_claim_idx, and the claim is one
 * statement and one commit instead of four round trips: with 100,000 schedules due, the dispatcher
 * started 1.31-1.90x the runs a second it did materializing then claiming in a transaction (three
 * interleaved pairs of 10 s on a loaded machine). Waiting runs go first: they were asked for, or
 * are a sync's follow-up.
 *
 * Another instance may start a sync from its schedule while this one starts the same sync's
 * waiting run (a trigger that committed in between): then this statement fails with 23505 on
 * runs_one_started_idx and changes nothing, and claiming again skips that sync.
 *
 * Planned on every call, not a prepared statement: a connection keeps a prepared statement's
 * generic plan until runs' statistics change, and one made while runs was empty (a new database,
 * until autovacuum next analyzes it) scans all of runs for every candidate. At 100,000 due
 * schedules, 20,000 runs in, claiming waiting runs then took 30 ms and making due schedules into
 * runs 48-66 ms, where planned each time they took 4-5 ms (0.5 ms of it planning): dispatch fell
 * from 700 runs/s to 255 within 20 s.
 */
export async function claimDueRuns(db: Queryable, owner: string, limit: number): Promise<ClaimedRun[]> {
  const { rows } = await sql<ClaimedRow>`
    WITH ${waitingCandidates(limit)},
    claimed AS (${startCandidates(owner)}),
    ${takeDueSchedules(sql<number>`(SELECT ${limit} - count(*) FROM claimed)`)},
    started AS (
      INSERT INTO runs AS r (sync_id, connection_pk, state, reason, due_at, started_at, heartbeat_at, owner, lease)
      SELECT due.sync_id, due.connection_pk, 'STARTED', 'schedule', due.next_due_at, now(), now(),
             ${owner}, gen_random_uuid()
      FROM due
      WHERE ${DUE_SYNC_IDLE}
      ON CONFLICT DO NOTHING
      RETURNING ${CLAIMED}
    )
    SELECT * FROM claimed UNION ALL SELECT * FROM started`.execute(db)
  return rows.map(toClaimedRun)
}
