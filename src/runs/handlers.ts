import { Ajv, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { Kysely, Transaction } from 'kysely'

import { connectionFull } from '../connections/format.ts'
import { type Connection, findConnection } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { listVariables } from '../environments/variables-store.ts'
import { proxyRequest } from '../providers/proxy.ts'
import type { Dataset, WriteGuard } from '../records/datasets.ts'
import { batchDelete, trackDeletesEnd, trackDeletesStart } from '../records/delete.ts'
import { externalIdOf } from '../records/payload.ts'
import { batchSave } from '../records/save.ts'
import { batchUpdate } from '../records/update.ts'
import type { WriteResult } from '../records/write-result.ts'
import type { NangoHandlers } from '../runtime/protocol.ts'
import type { IntegrationConfig, SyncDefinition } from '../syncs/definitions.ts'
import type { SyncRow } from '../syncs/store.ts'
import { checkpointHandlers } from './checkpoints.ts'
import type { ClaimedRun } from './lease.ts'
import { runLogger } from './logs.ts'
import type { ModelCounts } from './states.ts'

/** What the handlers of one run know: the run, its sync and definition, and where they write. */
export interface RunContext {
  db: Kysely<Database>
  sealer: Sealer
  run: ClaimedRun
  sync: SyncRow & { environmentId: number }
  definition: SyncDefinition
  integration: IntegrationConfig
  /** The definition's models, compiled (compileModels) */
  validators: Map<string, ValidateFunction>
  /** What the run wrote, per model of the definition; the handlers add to it */
  counts: ModelCounts
  /** The lease check (lease.ts), first in every transaction that writes */
  guard: WriteGuard
}

/** Compiles a definition's model schemas, once per definition (the executor keeps them). */
export function compileModels(definition: SyncDefinition): Map<string, ValidateFunction> {
  const ajv = new Ajv({ strict: false, allErrors: false })
  addFormats.default(ajv)
  return new Map(Object.entries(definition.models).map(([model, schema]) => [model, ajv.compile(schema)]))
}

// Nango persists records in chunks of 1,000 per call; larger arrays are split the same way.
const CHUNK = 1000

/**
 * The server side of one run's `nango` object: every call its function makes lands in one of these.
 * Writes go through the records store inside a transaction that first checks the run still holds
 * its lease, so a cancelled or expired run can never write again.
 */
export function runHandlers(c: RunContext): NangoHandlers {
  const { db, sealer, guard } = c
  const log = runLogger(db, c.run.id)
  let connection: Connection | undefined

  const dataset = (model: string): Dataset => {
    if (!c.validators.has(model)) {
      throw new Error(
        `The model '${model}' is not included in the declared sync models: ${Object.keys(c.definition.models).join(', ')}`,
      )
    }
    return { connectionPk: c.sync.connectionPk, model, variant: c.sync.variant }
  }

  /** Validates every record against the model's schema before anything of the batch is written. */
  const validate = (model: string, records: unknown[]): void => {
    const check = c.validators.get(model)!
    records.forEach((record, index) => {
      if (!check(record)) {
        const id = externalIdOf((record as { id?: unknown } | null)?.id) ?? `at index ${index}`
        const e = check.errors?.[0]
        throw new Error(
          `Invalid ${model} record ${id}: ${e?.instancePath || '(record)'} ${e?.message ?? 'is invalid'}`,
        )
      }
    })
  }

  const tally = (model: string, result: WriteResult): void => {
    const counts = c.counts[model]!
    counts.added += result.added.length
    counts.updated += result.updated.length
    counts.deleted += result.deleted.length
  }

  /** One transaction per write, the lease check first in it: a lost run can never write again. */
  const guarded = <T>(fn: (trx: Transaction<Database>) => Promise<T>): Promise<T> =>
    inTransaction(db, async (trx) => {
      await guard(trx)
      return fn(trx)
    })

  const write = async (
    model: string,
    records: unknown,
    op: (trx: Transaction<Database>, ds: Dataset, chunk: unknown[]) => Promise<WriteResult>,
    { validated }: { validated: boolean },
  ): Promise<true> => {
    if (!Array.isArray(records)) throw new Error(`records for ${model} must be an array`)
    const ds = dataset(model)
    if (validated) validate(model, records)
    for (let i = 0; i < records.length; i += CHUNK) {
      const chunk = records.slice(i, i + CHUNK)
      tally(model, await guarded((trx) => op(trx, ds, chunk)))
    }
    return true
  }

  const loadConnection = async (): Promise<Connection> => {
    const { environmentId, providerConfigKey, connectionId } = c.sync
    connection ??= await findConnection(db, sealer, environmentId, providerConfigKey, connectionId)
    if (!connection) throw new Error('The connection no longer exists')
    return connection
  }

  return {
    batchSave: (records, model) =>
      write(model, records, (trx, ds, chunk) => batchSave(trx, sealer, ds, chunk), { validated: true }),
    batchUpdate: (records, model) =>
      write(model, records, (trx, ds, chunk) => batchUpdate(trx, sealer, ds, chunk), { validated: false }),
    batchDelete: (records, model) =>
      write(model, records, (trx, ds, chunk) => batchDelete(trx, ds, chunk), { validated: false }),

    async trackDeletesStart(model) {
      const ds = dataset(model)
      await guarded((trx) => trackDeletesStart(trx, ds))
      return null
    },
    async trackDeletesEnd(model) {
      const ds = dataset(model)
      const deleted = await guarded((trx) => trackDeletesEnd(trx, ds))
      c.counts[model]!.deleted += deleted.length
      return { deletedKeys: deleted }
    },

    ...checkpointHandlers({ db, sealer, syncId: c.sync.id, guard }),

    getMetadata: async () => (await loadConnection()).metadata ?? {},
    async getConnection() {
      const found = await loadConnection()
      return connectionFull(
        found,
        () => c.integration.provider ?? found.providerConfigKey,
        found.credentials ?? {},
        'iso',
      )
    },
    getEnvironmentVariables: () => listVariables(db, sealer, c.sync.environmentId),
    log: (message, payload, level) => log(level, String(message), payload),
    proxy: async (config) => proxyRequest(config, c.integration, (await loadConnection()).credentials),
  }
}
