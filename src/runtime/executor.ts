import type { ValidateFunction } from 'ajv'
import type { Kysely, Transaction } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import type { Logger } from '../logger.ts'
import { markSynced, resetDatasets } from '../records/datasets.ts'
import type { ExecutionResult, RunExecutor } from '../scheduler/dispatcher.ts'
import { changesSince, type ClaimedRun, setRunType } from '../scheduler/runs.ts'
import type { Definitions, SyncDefinition } from '../syncs/definitions.ts'
import { clearCheckpoint, findSyncById, setLastSyncDate, type SyncRow } from '../syncs/store.ts'
import type { WorkerPool } from './pool.ts'
import { compileModels, type ModelCounts, RunSession } from './session.ts'

/** What happened in a successful run, for whoever reacts to it (webhooks). */
export interface RunSummary {
  run: ClaimedRun
  sync: SyncRow & { environmentId: number }
  definition: SyncDefinition
  type: 'full' | 'incremental'
  counts: ModelCounts
  /** Start of the earliest run since the previous success (Nango: this run's start) */
  modifiedAfter: Date
}

export interface ExecutorDeps {
  db: Kysely<Database>
  sealer: Sealer
  logger: Logger
  pool: WorkerPool
  definitions: () => Definitions
  /** Runs in the transaction that records a success (e.g. queue webhooks). */
  onSuccess?: (trx: Transaction<Database>, summary: RunSummary) => Promise<void>
}

/**
 * Executes a claimed run: prepares it (reset, empty cache), runs the sync function in a worker
 * thread, and reports the outcome. A failed run keeps every batch it committed.
 */
export class SyncExecutor implements RunExecutor {
  private readonly validators = new WeakMap<SyncDefinition, Map<string, ValidateFunction>>()

  constructor(private readonly d: ExecutorDeps) {}

  private validatorsOf(definition: SyncDefinition): Map<string, ValidateFunction> {
    let compiled = this.validators.get(definition)
    if (!compiled) this.validators.set(definition, (compiled = compileModels(definition)))
    return compiled
  }

  async execute(run: ClaimedRun, signal: AbortSignal): Promise<ExecutionResult> {
    const { db } = this.d
    const sync = await findSyncById(db, run.syncId)
    if (!sync) return { state: 'CANCELLED', error: 'The sync no longer exists' }
    const definitions = this.d.definitions()
    const definition = definitions.find(sync.providerConfigKey, sync.name)
    if (!definition) {
      return { state: 'FAILED', error: `No definition for sync ${sync.name} of ${sync.providerConfigKey}` }
    }
    const models = Object.keys(definition.models)
    const session = new RunSession({
      validators: this.validatorsOf(definition),
      db,
      sealer: this.d.sealer,
      logger: this.d.logger,
      run,
      sync,
      definition,
      integration: definitions.integrations.get(sync.providerConfigKey)?.config ?? {},
    })

    // opts.reset: no checkpoint, no lastSyncDate, no open delete-tracking window; emptyCache drops the records.
    if (run.reset) {
      await db.transaction().execute(async (trx) => {
        await clearCheckpoint(trx, sync.id)
        await setLastSyncDate(trx, sync.id, null)
        await resetDatasets(trx, sync.connectionId, models, sync.variant, run.emptyCache)
      })
    }
    const lastSyncDate = run.reset ? null : sync.lastSyncDate
    const type = definition.syncType === 'incremental' && lastSyncDate ? 'incremental' : 'full'
    await setRunType(db, run.id, type)

    try {
      // The deprecated trackDeletes flag: every model's records not saved by this run are deleted at its end.
      if (definition.trackDeletes) {
        for (const model of models) await session.handle('trackDeletesStart', [model])
      }
      await this.d.pool.run(
        definition.file,
        {
          runId: run.id,
          syncName: sync.name,
          connectionId: sync.connection,
          providerConfigKey: sync.providerConfigKey,
          variant: sync.variant,
          lastSyncDate: lastSyncDate?.toISOString() ?? null,
        },
        (method, args) => session.handle(method, args),
        signal,
      )
      if (definition.trackDeletes) {
        for (const model of models) await session.handle('trackDeletesEnd', [model])
      }
    } catch (err) {
      const message = (err as Error).message
      await session.log('error', message).catch(() => undefined)
      return { state: 'FAILED', error: message, result: session.counts }
    }

    return {
      state: 'SUCCEEDED',
      result: session.counts,
      commit: async (trx) => {
        await setLastSyncDate(trx, sync.id, run.startedAt)
        await markSynced(trx, sync.connectionId, models, sync.variant)
        const modifiedAfter = await changesSince(trx, sync.id, run.id)
        await this.d.onSuccess?.(trx, { run, sync, definition, type, counts: session.counts, modifiedAfter })
      },
    }
  }
}
