import type { ValidateFunction } from 'ajv'
import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { resetDatasets } from '../records/datasets.ts'
import { readBundle, readDefinition } from '../deployments/store.ts'
import { nangoPagination } from '../nango/proxy.ts'
import { pairingOf } from '../nango/store.ts'
import type { Providers } from '../providers/types.ts'
import type { WorkerPool } from '../runtime/pool.ts'
import type { SyncDefinition } from '../syncs/definitions.ts'
import { findSyncById, setLastSyncDate } from '../syncs/store.ts'
import { clearCheckpoint } from './checkpoints.ts'
import { compileModels, type RecordValidation, runHandlers } from './handlers.ts'
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
  /** What a record that fails its model's schema does (default `warn`) */
  recordValidation?: RecordValidation
  /** The providers integrations name (built-in catalogue and SYNCSTORE_PROVIDERS_FILE) */
  providers: Providers
  /** A run's time limit (the pool stops it then): rate-limit waits end before it */
  runTimeoutMs: number
}

/** Compiled model validators are kept for this many bundles (a bundle's models never change). */
const VALIDATOR_CACHE = 256

/**
 * Executes a claimed run: reads the sync's newest deployed definition, prepares the run (reset,
 * empty cache), runs the deployed bundle in a worker process with this run's handlers answering its
 * `nango` calls, and reports the outcome. The run finishes on the bundle it started with, whatever
 * is deployed meanwhile. A failed run keeps every batch it committed.
 */
export class SyncExecutor implements RunExecutor {
  private readonly validators = new Map<string, Map<string, ValidateFunction>>()

  constructor(private readonly d: ExecutorDeps) {}

  private validatorsOf(definition: SyncDefinition): Map<string, ValidateFunction> {
    let compiled = this.validators.get(definition.bundleHash)
    if (!compiled) {
      if (this.validators.size >= VALIDATOR_CACHE) this.validators.clear()
      this.validators.set(definition.bundleHash, (compiled = compileModels(definition)))
    }
    return compiled
  }

  async execute(run: ClaimedRun, signal: AbortSignal): Promise<RunOutcome> {
    const { db } = this.d
    const sync = await findSyncById(db, run.syncId)
    if (!sync) return { state: 'CANCELLED', error: 'The sync no longer exists' }
    const deployed = await readDefinition(db, sync.environmentId, sync.providerConfigKey, sync.name)
    if (!deployed) {
      return {
        state: 'FAILED',
        error: `No deployed definition for sync ${sync.name} of ${sync.providerConfigKey}`,
      }
    }
    const { definition } = deployed
    const models = Object.keys(definition.models)
    // Every model is in the result, changed or not: completeRun marks each one's dataset synced.
    const counts: ModelCounts = Object.fromEntries(
      models.map((m) => [m, { added: 0, updated: 0, deleted: 0 }]),
    )
    const providerName = deployed.integration.provider ?? sync.providerConfigKey
    const provider = this.d.providers.resolve(providerName, deployed.integration)
    // Paired with Nango (SPEC 6.5): credentials, requests and pagination defaults come from there.
    const pairing = await pairingOf(db, this.d.sealer, sync.environmentId)
    const handlers = runHandlers({
      db,
      sealer: this.d.sealer,
      run,
      sync,
      definition,
      integration: deployed.integration,
      provider,
      pairing,
      deadline: Date.now() + this.d.runTimeoutMs,
      validators: this.validatorsOf(definition),
      counts,
      guard: (trx) => assertHoldsRun(trx, run),
      validation: this.d.recordValidation ?? 'warn',
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
    await setRunType(db, run.id, type, definition.bundleHash)

    try {
      // The deprecated trackDeletes flag: every model's records not saved by this run are deleted at its end.
      if (definition.trackDeletes) {
        for (const model of models) await handlers.trackDeletesStart(model)
      }
      const hash = definition.bundleHash
      // Nango's description of the provider its connection names, read once per run (with the
      // connection the run keeps; a call's own paginate still wins).
      const pagination = pairing
        ? await nangoPagination(pairing, String((await handlers.getConnection()).provider))
        : (provider?.proxy?.paginate ?? null)
      await this.d.pool.run(
        {
          hash,
          code: async () => {
            const code = await readBundle(db, hash)
            if (code === undefined) throw new Error(`The bundle ${hash} of sync ${sync.name} is missing`)
            return code
          },
        },
        {
          runId: run.id,
          syncName: sync.name,
          connectionId: sync.connectionId,
          providerConfigKey: sync.providerConfigKey,
          variant: sync.variant,
          lastSyncDate: lastSyncDate?.toISOString() ?? null,
          provider: providerName,
          pagination,
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
