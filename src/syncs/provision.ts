import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import { cancelRuns } from '../runs/states.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import type { Definitions } from './definitions.ts'

/**
 * Makes sync rows and schedules match the definitions on disk:
 * - every connection gets a `base` sync per sync of its integration, with a schedule (started and
 *   due at once, or paused when the definition says autoStart: false);
 * - schedules follow the definition's frequency unless the connection overrides it;
 * - a sync whose definition disappeared stops (schedule DELETED, waiting runs cancelled) and comes
 *   back when it reappears.
 * Idempotent and safe to run from several instances (inserts are ON CONFLICT DO NOTHING).
 * `connectionPks` limits the work to some connections (a new connection).
 */
export async function provisionSyncs(
  db: Queryable,
  definitions: Definitions,
  connectionPks?: readonly number[],
): Promise<{ created: number; stopped: number }> {
  const defs = [...definitions.integrations.values()].flatMap((i) => i.syncs)
  const only = connectionPks ? sql`AND c.id = any(${[...connectionPks]}::int[])` : sql``
  const d = {
    pcks: defs.map((s) => s.integration),
    names: defs.map((s) => s.name),
    ms: defs.map((s) => s.frequencyMs),
    autoStart: defs.map((s) => s.autoStart),
  }
  const defined = sql`unnest(${d.pcks}::text[], ${d.names}::text[], ${d.ms}::bigint[], ${d.autoStart}::boolean[])
    AS d (pck, name, frequency_ms, auto_start)`

  const created = await sql<{ id: string }>`
    INSERT INTO syncs (connection_pk, name, variant)
    SELECT c.id, d.name, ${BASE_VARIANT} FROM connections c JOIN ${defined} ON c.provider_config_key = d.pck
    WHERE true ${only}
    ON CONFLICT (connection_pk, name, variant) DO NOTHING
    RETURNING id`.execute(db)

  // Schedules for syncs that have none (new base syncs; variants get theirs when created).
  await sql`
    INSERT INTO schedules (sync_id, connection_pk, state, frequency_ms, starts_at, next_due_at)
    SELECT s.id, s.connection_pk, CASE WHEN d.auto_start THEN 'STARTED' ELSE 'PAUSED' END, d.frequency_ms, now(), now()
    FROM syncs s JOIN connections c ON c.id = s.connection_pk
    JOIN ${defined} ON c.provider_config_key = d.pck AND s.name = d.name
    WHERE NOT EXISTS (SELECT 1 FROM schedules x WHERE x.sync_id = s.id) ${only}
    ON CONFLICT (sync_id) DO NOTHING`.execute(db)

  // The definition's frequency, unless the connection overrides it (the override is applied when set).
  await sql`
    UPDATE schedules x SET frequency_ms = d.frequency_ms, updated_at = now()
    FROM syncs s JOIN connections c ON c.id = s.connection_pk
    JOIN ${defined} ON c.provider_config_key = d.pck AND s.name = d.name
    WHERE x.sync_id = s.id AND s.frequency IS NULL AND x.frequency_ms <> d.frequency_ms ${only}`.execute(db)

  // Stop syncs without a definition; restart deleted ones whose definition is back.
  const orphaned = await sql<{ sync_id: string }>`
    UPDATE schedules x SET state = 'DELETED', updated_at = now()
    FROM syncs s JOIN connections c ON c.id = s.connection_pk
    WHERE x.sync_id = s.id AND x.state <> 'DELETED' ${only}
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
    FROM syncs s JOIN connections c ON c.id = s.connection_pk
    JOIN ${defined} ON c.provider_config_key = d.pck AND s.name = d.name
    WHERE x.sync_id = s.id AND x.state = 'DELETED' ${only}`.execute(db)

  return { created: created.rows.length, stopped: orphaned.rows.length }
}
