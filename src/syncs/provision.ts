import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import { cancelRuns } from '../runs/states.ts'

/**
 * Makes an environment's sync rows and schedules match its deployed definitions
 * (`sync_definitions`), in the caller's transaction: a deployment calls it for every connection,
 * whatever creates a connection calls it for that one, so provisioning is decided by the database
 * in the transaction that changes it, never by a process.
 * - every connection gets a `base` sync per sync of its integration, with a schedule (started and
 *   due at once, or paused when the definition says autoStart: false);
 * - schedules follow the definition's frequency unless the connection overrides it;
 * - a sync whose definition left the deployment stops (schedule DELETED, waiting runs cancelled,
 *   records kept) and comes back when it is deployed again;
 * - a connection deleted in a paired Nango gets no new syncs and its stopped ones stay stopped.
 * Idempotent (inserts are ON CONFLICT DO NOTHING). `connectionPks` limits the work to some
 * connections (a new connection).
 */
export async function provisionSyncs(
  db: Queryable,
  environmentId: number,
  connectionPks?: readonly number[],
): Promise<{ created: number; stopped: number }> {
  const only = connectionPks ? sql`AND c.id = any(${[...connectionPks]}::int[])` : sql``
  const connections = sql`connections c`
  const inEnvironment = sql`c.environment_id = ${environmentId} ${only}`
  // A connection deleted in a paired Nango keeps its syncs stopped (src/nango/connections.ts).
  const live = sql`c.deleted_upstream_at IS NULL`
  const defined = sql`(SELECT integration AS pck, name, frequency_ms, auto_start FROM sync_definitions
    WHERE environment_id = ${environmentId}) d`

  const created = await sql<{ id: string }>`
    INSERT INTO syncs (connection_pk, name, variant)
    SELECT c.id, d.name, ${BASE_VARIANT} FROM ${connections} JOIN ${defined} ON c.provider_config_key = d.pck
    WHERE ${inEnvironment} AND ${live}
    ON CONFLICT (connection_pk, name, variant) DO NOTHING
    RETURNING id`.execute(db)

  // Schedules for syncs that have none (new base syncs; variants get theirs when created).
  await sql`
    INSERT INTO schedules (sync_id, connection_pk, state, frequency_ms, starts_at, next_due_at)
    SELECT s.id, s.connection_pk, CASE WHEN d.auto_start THEN 'STARTED' ELSE 'PAUSED' END, d.frequency_ms, now(), now()
    FROM syncs s JOIN ${connections} ON c.id = s.connection_pk
    JOIN ${defined} ON c.provider_config_key = d.pck AND s.name = d.name
    WHERE NOT EXISTS (SELECT 1 FROM schedules x WHERE x.sync_id = s.id) AND ${inEnvironment} AND ${live}
    ON CONFLICT (sync_id) DO NOTHING`.execute(db)

  // The definition's frequency, unless the connection overrides it (the override is applied when set).
  await sql`
    UPDATE schedules x SET frequency_ms = d.frequency_ms, updated_at = now()
    FROM syncs s JOIN ${connections} ON c.id = s.connection_pk
    JOIN ${defined} ON c.provider_config_key = d.pck AND s.name = d.name
    WHERE x.sync_id = s.id AND s.frequency IS NULL AND x.frequency_ms <> d.frequency_ms
      AND ${inEnvironment}`.execute(db)

  // Stop syncs without a definition; restart deleted ones whose definition is back.
  const orphaned = await sql<{ sync_id: string }>`
    UPDATE schedules x SET state = 'DELETED', updated_at = now()
    FROM syncs s JOIN ${connections} ON c.id = s.connection_pk
    WHERE x.sync_id = s.id AND x.state <> 'DELETED' AND ${inEnvironment}
      AND NOT EXISTS (SELECT 1 FROM ${defined} WHERE d.pck = c.provider_config_key AND d.name = s.name)
    RETURNING x.sync_id`.execute(db)
  await cancelRuns(
    db,
    orphaned.rows.map((r) => r.sync_id),
    ['CREATED'],
    'The sync definition was removed',
  )
  await sql`
    UPDATE schedules x SET state = CASE WHEN d.auto_start THEN 'STARTED' ELSE 'PAUSED' END,
                           next_due_at = now(), updated_at = now()
    FROM syncs s JOIN ${connections} ON c.id = s.connection_pk
    JOIN ${defined} ON c.provider_config_key = d.pck AND s.name = d.name
    WHERE x.sync_id = s.id AND x.state = 'DELETED' AND ${inEnvironment} AND ${live}`.execute(db)

  return { created: created.rows.length, stopped: orphaned.rows.length }
}
