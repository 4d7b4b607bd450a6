import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import type { StateLeadingTo } from '../state-machine.ts'

/**
 * A run's states, as data. Every state change is an UPDATE whose WHERE clause requires one of the
 * states allowed to lead to the new one (compare-and-set), so a late writer (a run that expired
 * while its worker was away) can never overwrite a final state.
 */
export const RUN_TRANSITIONS = {
  CREATED: ['STARTED', 'CANCELLED', 'EXPIRED'],
  STARTED: ['SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED'],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
  EXPIRED: [],
} as const

export type RunState = keyof typeof RUN_TRANSITIONS
type FinalRunState = 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'EXPIRED'

export type RunStateLeadingTo<To extends RunState> = StateLeadingTo<typeof RUN_TRANSITIONS, To>

/** Records added, updated and deleted per model: a run's `result`, and what its webhooks announce. */
export type ModelCounts = Record<string, { added: number; updated: number; deleted: number }>

/** How a run ended, as its executor reports it. */
export interface RunOutcome {
  state: FinalRunState
  /** Every model of the sync's definition, changed or not (the datasets the run synced) */
  result?: ModelCounts
  error?: string
}

/** A claimed run and how it ended: what completeRuns (complete.ts) records. */
export interface RunEnding {
  run: { id: number; lease: string }
  outcome: RunOutcome
}

/** Every move RUN_TRANSITIONS allows, as two aligned columns for the compare-and-set to look up. */
const MOVES = Object.entries(RUN_TRANSITIONS).flatMap(([from, to]) => to.map((state) => ({ from, state })))
const MOVE_FROM = MOVES.map((m) => m.from)
const MOVE_TO = MOVES.map((m) => m.state)

/**
 * The statement that ends runs, for completeRuns (complete.ts) to wrap with a success's effects:
 * moves each run to its final state only if its lease still holds it and the transition table
 * allows the move from the state it is in. A late report (the run expired or was cancelled
 * meanwhile) matches no row and changes nothing. Returns id, sync_id, state and started_at of each
 * run it ended. Its text is the same for any number of runs.
 */
export function endRunsStatement(ends: readonly RunEnding[]) {
  return sql`
    UPDATE runs r SET state = e.state, ended_at = now(), result = e.result, error = e.error
    FROM unnest(${ends.map((e) => e.run.id)}::bigint[], ${ends.map((e) => e.run.lease)}::uuid[],
                ${ends.map((e) => e.outcome.state)}::text[],
                ${ends.map((e) => (e.outcome.result ? JSON.stringify(e.outcome.result) : null))}::jsonb[],
                ${ends.map((e) => e.outcome.error ?? null)}::text[]) AS e (id, lease, state, result, error)
    WHERE r.id = e.id AND r.lease = e.lease
      AND (r.state, e.state) IN (SELECT * FROM unnest(${MOVE_FROM}::text[], ${MOVE_TO}::text[]))
    RETURNING r.id, r.sync_id, r.state, r.started_at`
}

/** Cancels runs of these syncs in the given states (waiting ones on pause; all on variant deletion). */
export async function cancelRuns(
  db: Queryable,
  syncIds: readonly string[],
  states: readonly RunStateLeadingTo<'CANCELLED'>[],
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

/** Records, once a run starts, its type (full / incremental; webhooks report it) and the bundle it runs. */
export async function setRunType(
  db: Queryable,
  id: number,
  type: 'full' | 'incremental',
  bundleHash: string,
): Promise<void> {
  await db.updateTable('runs').set({ type, bundle_hash: bundleHash }).where('id', '=', id).execute()
}
