import { Ajv, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { Kysely, Transaction } from 'kysely'

import { connectionFull } from '../connections/format.ts'
import { type Connection, findConnection } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { listVariables } from '../environments/variables-store.ts'
import type { Logger } from '../logger.ts'
import type { Dataset } from '../records/datasets.ts'
import { batchDelete, trackDeletesEnd, trackDeletesStart } from '../records/delete.ts'
import { externalIdOf } from '../records/payload.ts'
import { batchSave } from '../records/save.ts'
import { batchUpdate } from '../records/update.ts'
import type { WriteResult } from '../records/write-result.ts'
import type { ClaimedRun } from '../scheduler/runs.ts'
import type { IntegrationConfig, SyncDefinition } from '../syncs/definitions.ts'
import { readCheckpoint, type SyncRow, writeCheckpoint } from '../syncs/store.ts'
import { checkpointProblem } from './checkpoint.ts'
import { appendRunLog, type LogLevel } from './logs.ts'
import type { NangoMethod } from './protocol.ts'
import { proxyRequest, type ProxyConfig } from './proxy.ts'
import { assertHoldsRun } from './guard.ts'

export type ModelCounts = Record<string, { added: number; updated: number; deleted: number }>

export interface SessionContext {
  /** The definition's models, compiled (compileModels) */
  validators: Map<string, ValidateFunction>
  db: Kysely<Database>
  sealer: Sealer
  logger: Logger
  run: ClaimedRun
  sync: SyncRow & { environmentId: number }
  definition: SyncDefinition
  integration: IntegrationConfig
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
 * The server side of one run's `nango` object: every call from the sync function lands here.
 * Writes go through the records store inside a transaction that first checks the run still holds
 * its lease, so a cancelled or expired run can never write again.
 */
export class RunSession {
  readonly counts: ModelCounts = {}
  private readonly validators: Map<string, ValidateFunction>
  private checkpointVersion: number | null | undefined
  private logSeq = 0
  private connection: Connection | undefined

  constructor(private readonly c: SessionContext) {
    this.validators = c.validators
    for (const model of Object.keys(c.definition.models)) {
      this.counts[model] = { added: 0, updated: 0, deleted: 0 }
    }
  }

  private dataset(model: string): Dataset {
    if (!this.validators.has(model)) {
      throw new Error(
        `The model '${model}' is not included in the declared sync models: ${Object.keys(this.c.definition.models).join(', ')}`,
      )
    }
    return { connectionId: this.c.sync.connectionId, model, variant: this.c.sync.variant }
  }

  private guard = (trx: Transaction<Database>) => assertHoldsRun(trx, this.c.run)

  /** Validates every record against the model's schema before anything of the batch is written. */
  private validate(model: string, records: unknown[]): void {
    const validate = this.validators.get(model)!
    records.forEach((record, index) => {
      if (!validate(record)) {
        const id = externalIdOf((record as { id?: unknown } | null)?.id) ?? `at index ${index}`
        const e = validate.errors?.[0]
        throw new Error(
          `Invalid ${model} record ${id}: ${e?.instancePath || '(record)'} ${e?.message ?? 'is invalid'}`,
        )
      }
    })
  }

  private tally(model: string, result: WriteResult): { added: number; updated: number; deleted: number } {
    const counts = this.counts[model]!
    counts.added += result.added.length
    counts.updated += result.updated.length
    counts.deleted += result.deleted.length
    return { added: result.added.length, updated: result.updated.length, deleted: result.deleted.length }
  }

  private async write(
    model: string,
    records: unknown,
    op: (ds: Dataset, chunk: unknown[]) => Promise<WriteResult>,
    validate: boolean,
  ): Promise<boolean> {
    if (!Array.isArray(records)) throw new Error(`records for ${model} must be an array`)
    const ds = this.dataset(model)
    if (validate) this.validate(model, records)
    for (let i = 0; i < records.length; i += CHUNK) {
      this.tally(model, await op(ds, records.slice(i, i + CHUNK)))
    }
    return true
  }

  async handle(method: NangoMethod, args: unknown[]): Promise<unknown> {
    const { db, sealer } = this.c
    const model = args[1] as string
    switch (method) {
      case 'batchSave':
        return this.write(model, args[0], (ds, chunk) => batchSave(db, sealer, ds, chunk, this.guard), true)
      case 'batchUpdate':
        return this.write(
          model,
          args[0],
          (ds, chunk) => batchUpdate(db, sealer, ds, chunk, this.guard),
          false,
        )
      case 'batchDelete':
        return this.write(model, args[0], (ds, chunk) => batchDelete(db, ds, chunk, this.guard), false)
      case 'trackDeletesStart':
        await trackDeletesStart(db, this.dataset(args[0] as string), this.guard)
        return null
      case 'trackDeletesEnd': {
        const deleted = await trackDeletesEnd(db, this.dataset(args[0] as string), this.guard)
        this.counts[args[0] as string]!.deleted += deleted.length
        return { deletedKeys: deleted }
      }
      case 'getCheckpoint': {
        const checkpoint = await readCheckpoint(db, sealer, this.c.sync.id)
        this.checkpointVersion = checkpoint?.version ?? null
        return checkpoint?.value ?? null
      }
      case 'saveCheckpoint':
        return this.saveCheckpoint(args[0])
      case 'clearCheckpoint':
        await db.transaction().execute(async (trx) => {
          await this.guard(trx)
          await trx.deleteFrom('checkpoints').where('sync_id', '=', this.c.sync.id).execute()
        })
        this.checkpointVersion = null
        return null
      case 'getMetadata':
        return (await this.loadConnection()).metadata ?? {}
      case 'getConnection': {
        const connection = await this.loadConnection()
        return connectionFull(
          connection,
          () => this.c.integration.provider ?? connection.providerConfigKey,
          connection.credentials ?? {},
          'iso',
        )
      }
      case 'getEnvironmentVariables':
        return listVariables(db, sealer, this.c.sync.environmentId)
      case 'log':
        return this.log((args[2] as LogLevel | undefined) ?? 'info', String(args[0]), args[1])
      case 'proxy':
        return proxyRequest(
          args[0] as ProxyConfig,
          this.c.integration,
          (await this.loadConnection()).credentials,
        )
    }
  }

  private async saveCheckpoint(value: unknown): Promise<null> {
    const problem = checkpointProblem(value)
    if (problem) throw new Error(`invalid_checkpoint_format: ${problem}`)
    const { db, sealer } = this.c
    if (this.checkpointVersion === undefined) {
      this.checkpointVersion = (await readCheckpoint(db, sealer, this.c.sync.id))?.version ?? null
    }
    const version = await db.transaction().execute(async (trx) => {
      await this.guard(trx)
      return writeCheckpoint(
        trx,
        sealer,
        this.c.sync.id,
        value as Record<string, unknown>,
        this.checkpointVersion ?? null,
      )
    })
    if (version === null) {
      throw new Error('checkpoint_conflict: the checkpoint was changed by someone else since it was read')
    }
    this.checkpointVersion = version
    return null
  }

  async log(level: LogLevel, message: string, payload?: unknown): Promise<null> {
    this.logSeq += 1
    await appendRunLog(this.c.db, this.c.run.id, this.logSeq, level, message, payload)
    return null
  }

  private async loadConnection(): Promise<Connection> {
    this.connection ??= await findConnection(
      this.c.db,
      this.c.sealer,
      this.c.sync.environmentId,
      this.c.sync.providerConfigKey,
      this.c.sync.connection,
    )
    if (!this.connection) throw new Error('The connection no longer exists')
    return this.connection
  }
}
