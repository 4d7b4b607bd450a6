import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import { type StateLeadingTo, statesLeadingTo } from '../state-machine.ts'

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

export const runStatesLeadingTo = (target: RunState) => statesLeadingTo(RUN_TRANSITIONS, target)

/** Records added, updated and deleted per model: a run's `result`, and what its webhooks announce. */
export type ModelCounts = Record<string, { added: number; updated: number; deleted: number }>

/** How a run ended, as its executor reports it. */
export interface RunOutcome {
  state: FinalRunState
  /** Every model of the sync's definition, changed or not (the datasets the run synced) */
  result?: ModelCounts
  error?: string
}

/**
 * Moves the run to its final state, only if this lease still holds it and the transition table
 * allows it. Returns false for a late report (the run expired or was cancelled meanwhile): nothing
 * changes. Only completeRun (complete.ts) calls it, so a success is never recorded without its effects.
 */
export async function finishRun(
  db: Queryable,
  run: { id: number; lease: string },
  outcome: RunOutcome,
): Promise<boolean> {
  const from = runStatesLeadingTo(outcome.state)
  const { rows } = await sql<{ id: number }>`
    UPDATE runs SET state = ${outcome.state}, ended_at = now(),
                    result = ${outcome.result ? JSON.stringify(outcome.result) : null}::jsonb,
                    error = ${outcome.error ?? null}
    WHERE id = ${run.id} AND lease = ${run.lease} AND state = any(${from}::text[])
    RETURNING id`.execute(db)
  return rows.length > 0
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
