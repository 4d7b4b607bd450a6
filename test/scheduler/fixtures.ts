import { randomUUID } from 'node:crypto'

import { type Kysely, sql } from 'kysely'

import type { Database, Queryable } from '../../src/db/database.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { completeRuns } from '../../src/runs/complete.ts'
import type { RunOutcome } from '../../src/runs/states.ts'
import { createSchedule } from '../../src/scheduler/schedules.ts'
import { insertSync } from '../../src/syncs/store.ts'

/** A connection with one sync and its schedule, made with the stores (no HTTP, no definitions). */
export interface SyncFixture {
  syncId: string
  connectionPk: number
}

let connectionPk: number | undefined

export async function createSyncFixture(
  db: Queryable,
  options: { state?: 'STARTED' | 'PAUSED'; frequencyMs?: number } = {},
): Promise<SyncFixture> {
  if (connectionPk === undefined) {
    const env = await ensureEnvironment(db, 'dev')
    const row = await db
      .insertInto('connections')
      .values({
        environment_id: env.id,
        provider_config_key: 'sched',
        connection_id: `conn-${randomUUID()}`,
        metadata: null,
        credentials: null,
        connection_config: '{}',
        tags: '{}',
        end_user: 'null',
      })
      .returning('id')
      .executeTakeFirstOrThrow()
    connectionPk = row.id
  }
  const syncId = await insertSync(db, connectionPk, `sync-${randomUUID().slice(0, 8)}`, 'base')
  await createSchedule(db, {
    syncId,
    connectionPk,
    frequencyMs: options.frequencyMs ?? 60_000,
    state: options.state ?? 'STARTED',
  })
  return { syncId, connectionPk }
}

/** Ends one run as the dispatcher does (completeRuns); whether its lease still held it. */
export async function endRun(
  db: Kysely<Database>,
  run: { id: number; lease: string },
  outcome: RunOutcome,
): Promise<boolean> {
  const { sync_id: syncId } = await db
    .selectFrom('runs')
    .select('sync_id')
    .where('id', '=', run.id)
    .executeTakeFirstOrThrow()
  const ended = await db
    .transaction()
    .execute((trx) => completeRuns(trx, [{ run: { ...run, syncId }, outcome }]))
  return ended.has(run.id)
}

export async function runRows(db: Queryable, syncId: string) {
  return db.selectFrom('runs').selectAll().where('sync_id', '=', syncId).orderBy('id').execute()
}

export async function scheduleRow(db: Queryable, syncId: string) {
  return db.selectFrom('schedules').selectAll().where('sync_id', '=', syncId).executeTakeFirstOrThrow()
}

/**
 * Where the schedule's next due time lies on its grid, computed in the database (microsecond
 * timestamps): `k` in starts_at + k * frequency, whether it is a whole number, and whether it is
 * strictly after now and at most one period away.
 */
export async function gridPosition(db: Queryable, syncId: string) {
  const { rows } = await sql<{ k: string; on_grid: boolean; after_now: boolean; within_period: boolean }>`
    SELECT (extract(epoch FROM next_due_at - starts_at) * 1000 / frequency_ms)::text AS k,
           mod((extract(epoch FROM next_due_at - starts_at) * 1000000)::numeric, frequency_ms * 1000) = 0 AS on_grid,
           next_due_at > now() AS after_now,
           next_due_at <= now() + frequency_ms * interval '1 millisecond' AS within_period
    FROM schedules WHERE sync_id = ${syncId}`.execute(db)
  const row = rows[0]!
  return { k: Number(row.k), onGrid: row.on_grid, afterNow: row.after_now, withinPeriod: row.within_period }
}

/** Moves a schedule's grid into the past: created `agoMs` ago, and due since then. */
export async function backdateSchedule(db: Queryable, syncId: string, agoMs: number): Promise<void> {
  await sql`UPDATE schedules SET starts_at = now() - ${agoMs} * interval '1 millisecond',
                                 next_due_at = now() - ${agoMs} * interval '1 millisecond'
            WHERE sync_id = ${syncId}`.execute(db)
}
