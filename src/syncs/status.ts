import { sql } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'
import { readCheckpoints } from '../runs/checkpoints.ts'
import type { Definitions } from './definitions.ts'
import type { SyncRow } from './store.ts'

type Counts = Record<string, { added: number; updated: number; deleted: number }>

interface StatusFacts {
  state: 'STARTED' | 'PAUSED' | 'DELETED' | null
  nextDueAt: Date | null
  /** the latest run that started (waiting and cancelled runs say nothing about the sync's health) */
  latest: { state: string; type: string | null; endedAt: Date | null; result: Counts | null } | null
  counts: Map<string, number>
}

async function facts(db: Queryable, rows: readonly SyncRow[]): Promise<Map<string, StatusFacts>> {
  const ids = rows.map((r) => r.id)
  const out = new Map<string, StatusFacts>(
    ids.map((id) => [id, { state: null, nextDueAt: null, latest: null, counts: new Map() }]),
  )
  if (ids.length === 0) return out
  const schedules = await db
    .selectFrom('schedules')
    .select(['sync_id', 'state', 'next_due_at'])
    .where('sync_id', 'in', ids)
    .execute()
  for (const s of schedules) Object.assign(out.get(s.sync_id)!, { state: s.state, nextDueAt: s.next_due_at })
  const latest = await sql<{
    sync_id: string
    state: string
    type: string | null
    ended_at: Date | null
    result: Counts | null
  }>`
    SELECT DISTINCT ON (sync_id) sync_id, state, type, ended_at, result FROM runs
    WHERE sync_id = any(${ids}::uuid[]) AND state IN ('STARTED', 'SUCCEEDED', 'FAILED', 'EXPIRED')
    ORDER BY sync_id, id DESC`.execute(db)
  for (const r of latest.rows) {
    out.get(r.sync_id)!.latest = { state: r.state, type: r.type, endedAt: r.ended_at, result: r.result }
  }
  const counts = await sql<{ connection_pk: number; model: string; variant: string; record_count: number }>`
    SELECT d.connection_pk, d.model, d.variant, d.record_count FROM datasets d
    WHERE (d.connection_pk, d.variant) IN (SELECT * FROM unnest(${rows.map((r) => r.connectionPk)}::int[],
                                                               ${rows.map((r) => r.variant)}::text[]))`.execute(
    db,
  )
  for (const row of rows) {
    for (const c of counts.rows) {
      if (c.connection_pk === row.connectionPk && c.variant === row.variant) {
        out.get(row.id)!.counts.set(c.model, Number(c.record_count))
      }
    }
  }
  return out
}

const EXECUTION_STATUS: Record<string, 'RUNNING' | 'SUCCESS' | 'STOPPED'> = {
  STARTED: 'RUNNING',
  SUCCEEDED: 'SUCCESS',
  FAILED: 'STOPPED',
  EXPIRED: 'STOPPED',
}

/**
 * GET /sync/status items, in Nango's shape and key order. `recordCount` counts the variant's own
 * records (Nango counts only base-model records).
 */
export async function syncStatuses(
  db: Queryable,
  sealer: Sealer,
  definitions: Definitions,
  rows: readonly SyncRow[],
) {
  const known = await facts(db, rows)
  const checkpoints = await readCheckpoints(
    db,
    sealer,
    rows.map((r) => r.id),
  )
  const out = []
  for (const row of rows) {
    const f = known.get(row.id)!
    const definition = definitions.find(row.providerConfigKey, row.name)
    const latest = f.latest
    const running = latest?.state === 'STARTED'
    const status = running
      ? 'RUNNING'
      : f.state === 'PAUSED'
        ? 'PAUSED'
        : f.state === 'DELETED' || f.state === null
          ? 'STOPPED'
          : latest && latest.state !== 'SUCCEEDED'
            ? 'ERROR'
            : 'SUCCESS'
    const recordCount: Record<string, number> = {}
    // The sync's own models only: other syncs of the connection write datasets of the same variant.
    // Without a definition (it was removed) the stored datasets are all there is to go by.
    if (definition) {
      for (const model of Object.keys(definition.models)) recordCount[model] = f.counts.get(model) ?? 0
    } else {
      for (const [model, n] of f.counts) recordCount[model] = n
    }
    out.push({
      id: row.id,
      connection_id: row.connectionId,
      type: latest?.type === 'incremental' ? ('INCREMENTAL' as const) : ('INITIAL' as const),
      ...(latest && !running && latest.endedAt ? { finishedAt: latest.endedAt.toISOString() } : {}),
      nextScheduledSyncAt: f.state === 'STARTED' && f.nextDueAt ? f.nextDueAt.toISOString() : null,
      name: row.name,
      variant: row.variant,
      status: status as 'RUNNING' | 'PAUSED' | 'STOPPED' | 'SUCCESS' | 'ERROR',
      frequency: row.frequency ?? definition?.frequency ?? null,
      ...(latest
        ? { latestResult: latest.result ?? {}, latestExecutionStatus: EXECUTION_STATUS[latest.state]! }
        : {}),
      recordCount,
      checkpoint: checkpoints.get(row.id)?.value ?? null,
    })
  }
  return out
}
