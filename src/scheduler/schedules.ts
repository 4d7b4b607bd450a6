import { type RawBuilder, sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import { type ScheduleState, scheduleStatesLeadingTo } from './states.ts'

/**
 * The first grid point strictly after now: starts_at + k * frequency. Slots that passed while a run
 * was going (or no instance was up) are skipped, never queued.
 */
const NEXT_SLOT = sql`s.starts_at + (floor(extract(epoch FROM (now() - s.starts_at)) * 1000 / s.frequency_ms) + 1)
  * s.frequency_ms * interval '1 millisecond'`

export async function createSchedule(
  db: Queryable,
  schedule: { syncId: string; connectionPk: number; frequencyMs: number; state: 'STARTED' | 'PAUSED' },
): Promise<void> {
  // Due at once: a new sync runs right away (when started), then on its grid.
  await db
    .insertInto('schedules')
    .values({
      sync_id: schedule.syncId,
      connection_pk: schedule.connectionPk,
      state: schedule.state,
      frequency_ms: schedule.frequencyMs,
      starts_at: sql<Date>`now()`,
      next_due_at: sql<Date>`now()`,
    })
    .onConflict((oc) => oc.column('sync_id').doNothing())
    .execute()
}

/**
 * Moves schedules to `state` where the transition table allows it (compare-and-set), optionally
 * only from some states; returns the sync ids that changed. A resumed schedule is next due at its
 * next grid point.
 */
export async function setScheduleState(
  db: Queryable,
  syncIds: readonly string[],
  state: ScheduleState,
  onlyFrom?: readonly ScheduleState[],
): Promise<string[]> {
  const from = scheduleStatesLeadingTo(state).filter((s) => !onlyFrom || onlyFrom.includes(s))
  if (syncIds.length === 0 || from.length === 0) return []
  const { rows } = await sql<{ sync_id: string }>`
    UPDATE schedules s SET state = ${state}, updated_at = now(),
      next_due_at = CASE WHEN ${state} = 'STARTED' THEN ${NEXT_SLOT} ELSE s.next_due_at END
    WHERE s.sync_id = any(${[...syncIds]}::uuid[]) AND s.state = any(${from}::text[])
    RETURNING s.sync_id`.execute(db)
  return rows.map((r) => r.sync_id)
}

/** Changes the frequency; the next run is at the new grid's next point (Nango's setScheduleFrequency). */
export async function setScheduleFrequency(
  db: Queryable,
  syncId: string,
  frequencyMs: number,
): Promise<void> {
  await sql`
    UPDATE schedules s SET frequency_ms = ${frequencyMs}, updated_at = now(),
      next_due_at = s.starts_at + ceil(extract(epoch FROM (now() - s.starts_at)) * 1000 / ${frequencyMs})
                                  * ${frequencyMs} * interval '1 millisecond'
    WHERE s.sync_id = ${syncId} AND s.frequency_ms <> ${frequencyMs}`.execute(db)
}

/**
 * The head of the statement that makes due schedules into runs (claimDueRuns in run-queue.ts):
 * `due`, up to `limit` started schedules past their due time, oldest first, taken with FOR UPDATE
 * SKIP LOCKED (so every instance can take them at once), and `advanced`, which moves each to its
 * next slot. The statement inserts the runs from `due` where DUE_SYNC_IDLE holds; a schedule whose
 * sync already has a run waiting or executing skips the slot.
 */
export const takeDueSchedules = (limit: number | RawBuilder<number>) => sql`
    due AS (
      SELECT s.sync_id, s.connection_pk, s.next_due_at FROM schedules s
      WHERE s.state = 'STARTED' AND s.next_due_at <= now()
      ORDER BY s.next_due_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    ), advanced AS (
      UPDATE schedules s SET next_due_at = ${NEXT_SLOT} FROM due WHERE s.sync_id = due.sync_id
    )`

export const DUE_SYNC_IDLE = sql`NOT EXISTS (
  SELECT 1 FROM runs r WHERE r.sync_id = due.sync_id AND r.state IN ('CREATED', 'STARTED'))`

/**
 * Syncs whose run is due and not started (GET /metrics): a started schedule past its due time
 * (no instance had room to take it yet) or a waiting run past its due time, with no run of the
 * sync executing. Both sides read the partial indexes the claim uses, so this costs what the
 * backlog is, not what the tables hold. `oldestSeconds`: how long the longest-waiting of them has
 * been due, by the database's clock (0 when none is).
 */
export async function dueUnstarted(db: Queryable): Promise<{ count: number; oldestSeconds: number }> {
  const { rows } = await sql<{ count: number; oldestSeconds: number }>`
    SELECT count(*)::int AS count,
           coalesce(extract(epoch FROM now() - min(d.due_at)), 0)::float8 AS "oldestSeconds" FROM (
      SELECT sync_id, min(due_at) AS due_at FROM (
        SELECT s.sync_id, s.next_due_at AS due_at FROM schedules s
        WHERE s.state = 'STARTED' AND s.next_due_at <= now()
        UNION ALL
        SELECT r.sync_id, r.due_at FROM runs r WHERE r.state = 'CREATED' AND r.due_at <= now()
      ) waiting GROUP BY sync_id
    ) d
    WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.sync_id = d.sync_id AND r.state = 'STARTED')`.execute(db)
  return rows[0]!
}
