import type { ValidateFunction } from 'ajv'
import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { resetDatasets } from '../records/datasets.ts'
import type { WorkerPool } from '../runtime/pool.ts'
import type { Definitions, SyncDefinition } from '../syncs/definitions.ts'
import { findSyncById, setLastSyncDate } from '../syncs/store.ts'
import { clearCheckpoint } from './checkpoints.ts'
import { compileModels, runHandlers } from './handlers.ts'
import { assertHoldsRun, type ClaimedRun } from './lease.ts'
import { type ModelCounts, type RunOutcome, setRunType } from './states.ts'

/**
 * Executes claimed runs. `signal` aborts one (its lease was lost, or the server is stopping). The
 * dispatcher records the outcome with completeRun; tests and benchmarks put a stub in its place.
 */
export interface RunExecutor {
  execute(run: ClaimedRun, signal: AbortSignal): Promise<RunOutcome>
}

export interface ExecutorDeps {
  db: Kysely<Database>
  sealer: Sealer
  pool: WorkerPool
  definitions: () => Definitions
}

/**
 * Executes a claimed run: prepares it (reset, empty cache), runs the sync function in a worker
 * thread with this run's handlers answering its `nango` calls, and reports the outcome. A failed
 * run keeps every batch it committed.
 */
export class SyncExecutor implements RunExecutor {
  private readonly validators = new WeakMap<SyncDefinition, Map<string, ValidateFunction>>()

  constructor(private readonly d: ExecutorDeps) {}

  private validatorsOf(definition: SyncDefinition): Map<string, ValidateFunction> {
    let compiled = this.validators.get(definition)
    if (!compiled) this.validators.set(definition, (compiled = compileModels(definition)))
    return compiled
  }

  async execute(run: ClaimedRun, signal: AbortSignal): Promise<RunOutcome> {
    const { db } = this.d
    const sync = await findSyncById(db, run.syncId)
    if (!sync) return { state: 'CANCELLED', error: 'The sync no longer exists' }
    const definitions = this.d.definitions()
    const definition = definitions.find(sync.providerConfigKey, sync.name)
    if (!definition) {
      return { state: 'FAILED', error: `No definition for sync ${sync.name} of ${sync.providerConfigKey}` }
    }
    const models = Object.keys(definition.models)
    // Every model is in the result, changed or not: completeRun marks each one's dataset synced.
    const counts: ModelCounts = Object.fromEntries(
      models.map((m) => [m, { added: 0, updated: 0, deleted: 0 }]),
    )
    const handlers = runHandlers({
      db,
      sealer: this.d.sealer,
      run,
      sync,
      definition,
      integration: definitions.integrations.get(sync.providerConfigKey)?.config ?? {},
      validators: this.validatorsOf(definition),
      counts,
      guard: (trx) => assertHoldsRun(trx, run),
    })

    // opts.reset: no checkpoint, no lastSyncDate, no open delete-tracking window; emptyCache drops the records.
    if (run.reset) {
      await db.transaction().execute(async (trx) => {
        await clearCheckpoint(trx, sync.id)
        await setLastSyncDate(trx, sync.id, null)
        await resetDatasets(trx, sync.connectionPk, models, sync.variant, run.emptyCache)
      })
    }
    const lastSyncDate = run.reset ? null : sync.lastSyncDate
    const type = definition.syncType === 'incremental' && lastSyncDate ? 'incremental' : 'full'
    await setRunType(db, run.id, type)

    try {
      // The deprecated trackDeletes flag: every model's records not saved by this run are deleted at its end.
      if (definition.trackDeletes) {
        for (const model of models) await handlers.trackDeletesStart(model)
      }
      await this.d.pool.run(
        definition.file,
        {
          runId: run.id,
          syncName: sync.name,
          connectionId: sync.connectionId,
          providerConfigKey: sync.providerConfigKey,
          variant: sync.variant,
          lastSyncDate: lastSyncDate?.toISOString() ?? null,
        },
        handlers,
        signal,
      )
      if (definition.trackDeletes) {
        for (const model of models) await handlers.trackDeletesEnd(model)
      }
    } catch (err) {
      const message = (err as Error).message
      await handlers.log(message, null, 'error').catch(() => undefined)
      return { state: 'FAILED', error: message, result: counts }
    }
    return { state: 'SUCCEEDED', result: counts }
  }
}
