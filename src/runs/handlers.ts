import { Ajv, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { Kysely, Transaction } from 'kysely'

import { connectionFull } from '../connections/format.ts'
import { type Connection, lockConnections, readMetadata, writeMetadata } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import { integrationClient } from '../credentials/app.ts'
import { nangoProviderOf } from '../credentials/nango.ts'
import { credentialsStale, freshConnection } from '../credentials/refresh.ts'
import { rowsVia } from '../db/rows.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { readDefinitions } from '../deployments/store.ts'
import { listVariables } from '../environments/variables-store.ts'
import { proxyThroughNango } from '../nango/proxy.ts'
import type { Pairing } from '../nango/store.ts'
import { proxyRequest } from '../providers/proxy.ts'
import type { Provider } from '../providers/types.ts'
import type { Dataset, WriteGuard } from '../records/datasets.ts'
import { batchDelete, trackDeletesEnd, trackDeletesStart } from '../records/delete.ts'
import { isPlainObject } from '../json.ts'
import { decodeCursor } from '../records/cursor.ts'
import { lastModifiedAt, modifiedAfter } from '../records/merging.ts'
import { externalIdOf } from '../records/payload.ts'
import { readPage } from '../records/read.ts'
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
  /** The integration's provider: built-in catalogue < SYNCSTORE_PROVIDERS_FILE < integration.json */
  provider: Provider | undefined
  /** The Nango the environment is paired with: credentials and requests go through it (SPEC 6.5) */
  pairing: Pairing | undefined
  /** Epoch ms at which the run's time limit ends: a rate-limit wait never goes past it */
  deadline: number
  /** The definition's models, compiled (compileModels) */
  validators: Map<string, ValidateFunction>
  /** What the run wrote, per model of the definition; the handlers add to it */
  counts: ModelCounts
  /** The lease check (lease.ts), first in every transaction that writes */
  guard: WriteGuard
  /** What an invalid record does (SYNCSTORE_RECORD_VALIDATION) */
  validation: RecordValidation
}

/**
 * `warn`: saved, and the violation logged (Nango's production runner does not reject); `strict`:
 * the batch fails, nothing of it written; `off`: not checked.
 */
export type RecordValidation = 'warn' | 'strict' | 'off'

// A run's log gets this many invalid-record lines per batch, then one line with how many more.
const INVALID_LINES_PER_BATCH = 10
// listRecords pages (Nango's runner reads 100 records a call); the byte budget is GET /records' default.
const LIST_PAGE = 100
const LIST_PAGE_BYTES = 10 * 1024 * 1024

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

  /**
   * Checks every record against the model's schema before anything of the batch is written: in
   * `strict` mode the first invalid one fails the batch, in `warn` mode each is logged.
   */
  const validate = async (model: string, records: unknown[]): Promise<void> => {
    if (c.validation === 'off') return
    const check = c.validators.get(model)!
    let invalid = 0
    for (const [index, record] of records.entries()) {
      if (check(record)) continue
      const id = externalIdOf((record as { id?: unknown } | null)?.id) ?? `at index ${index}`
      const e = check.errors?.[0]
      const problem = `Invalid ${model} record ${id}: ${e?.instancePath || '(record)'} ${e?.message ?? 'is invalid'}`
      if (c.validation === 'strict') throw new Error(problem)
      invalid += 1
      if (invalid <= INVALID_LINES_PER_BATCH) {
        await log('warn', `${problem} (saved anyway)`, { model, id, errors: check.errors })
      }
    }
    if (invalid > INVALID_LINES_PER_BATCH) {
      await log(
        'warn',
        `${invalid - INVALID_LINES_PER_BATCH} more invalid ${model} records in this batch (saved anyway)`,
      )
    }
  }

  /** Per model: 'override', or the time after which others' changes are left alone (null: none yet) */
  const merging = new Map<string, { since: string | null } | 'override'>()

  /** Under ignore_if_modified_after, drops the records modified since (by someone else). */
  const merged = async (trx: Transaction<Database>, ds: Dataset, chunk: unknown[]): Promise<unknown[]> => {
    const strategy = merging.get(ds.model)
    if (strategy === undefined || strategy === 'override' || strategy.since === null) return chunk
    const idOf = (r: unknown) => externalIdOf((r as { id?: unknown } | null)?.id)
    const ids = chunk.map(idOf).filter((id) => id !== undefined)
    const skip = await modifiedAfter(trx, ds, ids, strategy.since)
    return skip.size === 0 ? chunk : chunk.filter((r) => !skip.has(idOf(r)!))
  }

  /** After a write: `ignore_if_modified_after` moves past it (Nango's next merging cursor). */
  const advance = async (trx: Transaction<Database>, ds: Dataset): Promise<void> => {
    const strategy = merging.get(ds.model)
    if (strategy === undefined) merging.set(ds.model, 'override')
    else if (strategy !== 'override') strategy.since = await lastModifiedAt(trx, ds)
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
    if (validated) await validate(model, records)
    for (let i = 0; i < records.length; i += CHUNK) {
      const chunk = records.slice(i, i + CHUNK)
      const result = await guarded(async (trx) => {
        const written = await op(trx, ds, await merged(trx, ds, chunk))
        await advance(trx, ds)
        return written
      })
      tally(model, result)
    }
    return true
  }

  /**
   * The connection, with credentials fit for use: refreshed first when they expire within 15
   * minutes (credentials/refresh.ts), then kept for the run until they do again. A failed refresh
   * throws its message into the function, which fails the run unless the function catches it.
   */
  const loadConnection = async (): Promise<Connection> => {
    const key = c.sync
    if (!connection || credentialsStale(connection, c.provider)) {
      connection = await freshConnection(
        {
          db,
          sealer,
          oauthApp: async () => ({
            provider: c.provider,
            client: await integrationClient(db, sealer, key.environmentId, key.providerConfigKey),
          }),
        },
        key,
        { provider: c.provider },
      )
    }
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
    async setMetadata(metadata, mode) {
      if (!isPlainObject(metadata)) throw new Error('metadata must be an object')
      const { environmentId, providerConfigKey, connectionId } = c.sync
      await guarded(async (trx) => {
        const { found } = await lockConnections(trx, environmentId, providerConfigKey, [connectionId])
        const row = found.get(connectionId)
        if (!row) throw new Error('The connection no longer exists')
        const next = mode === 'replace' ? metadata : { ...readMetadata(sealer, row.metadata), ...metadata }
        await writeMetadata(trx, sealer, row.id, next)
      })
      connection = undefined
      return null
    },
    async getIntegration() {
      const { integrations } = await readDefinitions(db, c.sync.environmentId)
      const found = integrations.get(c.sync.providerConfigKey)
      if (!found) throw new Error(`The integration ${c.sync.providerConfigKey} no longer exists`)
      return {
        unique_key: found.key,
        provider: found.provider,
        display_name: found.displayName,
        created_at: found.createdAt.toISOString(),
        updated_at: found.updatedAt.toISOString(),
      }
    },
    async listRecords(model, cursor, ids) {
      const ds = dataset(model)
      const after = cursor === null ? undefined : decodeCursor(String(cursor))
      if (cursor !== null && !after) throw new Error(`listRecords: invalid cursor ${JSON.stringify(cursor)}`)
      const { environmentId, providerConfigKey, connectionId } = c.sync
      const target = { environmentId, providerConfigKey, connectionId, model: ds.model, variant: ds.variant }
      const externalIds = Array.isArray(ids) ? ids.map(String) : undefined
      const page = await readPage(rowsVia(db), sealer, target, {
        after,
        externalIds,
        limit: LIST_PAGE,
        maxBytes: LIST_PAGE_BYTES,
      })
      if (!page) throw new Error('The connection no longer exists')
      return page.body.toString()
    },
    async setMergingStrategy(requested, model) {
      const ds = dataset(model)
      const strategy = (requested as { strategy?: unknown } | null)?.strategy
      if (merging.has(model)) {
        await log('warn', `Merging strategy for model ${model} is already set. Skipping`, {
          model,
          merging: requested,
        })
        return null
      }
      if (strategy === 'override') merging.set(model, 'override')
      else if (strategy === 'ignore_if_modified_after') {
        merging.set(model, { since: await lastModifiedAt(db, ds) })
      } else throw new Error(`Unsupported merging strategy: ${String(strategy)}`)
      await log('info', `Merging strategy set to '${String(strategy)}' for model ${model}.`)
      return null
    },
    async getConnection() {
      const found = await loadConnection()
      // A paired connection's provider is the one Nango names for it.
      return connectionFull(
        found,
        () => nangoProviderOf(found) ?? c.integration.provider ?? found.providerConfigKey,
        found.credentials ?? {},
        'iso',
      )
    },
    getEnvironmentVariables: () => listVariables(db, sealer, c.sync.environmentId),
    log: (message, payload, level) => log(level, String(message), payload),
    proxy: async (config) =>
      c.pairing
        ? proxyThroughNango(config, {
            pairing: c.pairing,
            providerConfigKey: c.sync.providerConfigKey,
            connectionId: c.sync.connectionId,
            deadline: c.deadline,
          })
        : proxyRequest(config, {
            provider: c.provider,
            providerName: c.integration.provider ?? c.sync.providerConfigKey,
            connection: await loadConnection(),
            deadline: c.deadline,
            retryOn: Array.isArray(config.retryOn) ? config.retryOn.filter((s) => Number.isInteger(s)) : [],
          }),
  }
}
