import { requireConnection } from '../connections/service.ts'
import { readDefinitions } from '../deployments/store.ts'
import { inTransaction } from '../db/transaction.ts'
import { HttpError } from '../errors.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import { parseFrequency } from '../scheduler/frequency.ts'
import { cancelRuns } from '../runs/states.ts'
import { createSchedule, setScheduleFrequency } from '../scheduler/schedules.ts'
import type { SyncServices } from './service.ts'
import { countVariants, deleteSync, findSyncs, insertSync, setSyncFrequency } from './store.ts'

// Nango's default cap (variants_per_sync_max / MAX_SYNCS_PER_CONNECTION); the base variant counts.
const MAX_VARIANTS_PER_SYNC = 100

const unknownSync = () =>
  new HttpError(400, 'unknown_sync', 'No sync with that name exists for this connection')

interface VariantTarget {
  environmentId: number
  providerConfigKey: string
  connectionId: string
  name: string
  variant: string
}

/** Creates a variant: its own sync row and schedule (started and due at once, or paused). */
export async function createVariant(
  s: SyncServices,
  t: VariantTarget,
): Promise<{ id: string; name: string; variant: string }> {
  if (t.variant.toLowerCase() === BASE_VARIANT) {
    throw new HttpError(400, 'invalid_variant', `Variant name "${t.variant}" is protected.`)
  }
  const connection = await requireConnection(s.db, t.environmentId, t.providerConfigKey, t.connectionId)
  const definitions = await readDefinitions(s.db, t.environmentId)
  if (!definitions.integrations.has(t.providerConfigKey)) {
    throw new HttpError(
      400,
      'unknown_provider_config',
      'There is no Provider Configuration matching this key',
    )
  }
  const definition = definitions.find(t.providerConfigKey, t.name)
  if (!definition) throw unknownSync()
  const id = await inTransaction(s.db, async (trx) => {
    const existing = await findSyncs(
      trx,
      {
        environmentId: t.environmentId,
        providerConfigKey: t.providerConfigKey,
        connectionPk: connection.id,
      },
      [{ name: t.name, variant: t.variant }],
    )
    if (existing.length > 0) {
      throw new HttpError(
        400,
        'sync_variant_already_exists',
        `Variant "${t.variant}" of sync ${t.name} already exists`,
      )
    }
    if ((await countVariants(trx, connection.id, t.name)) >= MAX_VARIANTS_PER_SYNC) {
      throw new HttpError(
        400,
        'resource_capped',
        `Maximum number of variants per sync (${MAX_VARIANTS_PER_SYNC}) reached`,
      )
    }
    const syncId = await insertSync(trx, connection.id, t.name, t.variant)
    await createSchedule(trx, {
      syncId,
      connectionPk: connection.id,
      frequencyMs: definition.frequencyMs,
      state: definition.autoStart ? 'STARTED' : 'PAUSED',
    })
    return syncId
  })
  await s.wakeups.notify()
  return { id, name: t.name, variant: t.variant }
}

/**
 * Deletes a variant: its runs are cancelled (a running one stops at its next heartbeat or write),
 * and its schedule, checkpoint and records are removed at once (Nango leaves the records for a
 * day and then deletes the wrong ones, the base model's).
 */
export async function deleteVariant(s: SyncServices, t: VariantTarget): Promise<void> {
  if (t.variant.toLowerCase() === BASE_VARIANT) {
    throw new HttpError(400, 'invalid_variant', `Cannot delete protected variant "${t.variant}".`)
  }
  const connection = await requireConnection(s.db, t.environmentId, t.providerConfigKey, t.connectionId)
  const models = Object.keys(
    (await readDefinitions(s.db, t.environmentId)).find(t.providerConfigKey, t.name)?.models ?? {},
  )
  await inTransaction(s.db, async (trx) => {
    const [sync] = await findSyncs(
      trx,
      {
        environmentId: t.environmentId,
        providerConfigKey: t.providerConfigKey,
        connectionPk: connection.id,
      },
      [{ name: t.name, variant: t.variant }],
    )
    if (!sync) throw new HttpError(404, 'not_found', `No variant "${t.variant}" of sync ${t.name}`)
    await cancelRuns(trx, [sync.id], ['CREATED', 'STARTED'], 'The sync variant was deleted')
    if (models.length > 0) {
      await trx
        .deleteFrom('datasets')
        .where('connection_pk', '=', connection.id)
        .where('variant', '=', t.variant)
        .where('model', 'in', models)
        .execute()
    }
    await deleteSync(trx, sync.id)
  })
}

/**
 * Overrides a connection's sync frequency, or reverts to the definition's with null. Answers the
 * frequency now in effect, normalised as Nango does ("every 2 hours" -> "2 hours").
 */
export async function updateFrequency(
  s: SyncServices,
  t: VariantTarget & { frequency: string | null },
): Promise<string> {
  // The body's own validity first: a bad interval is the same 400 whatever the ids name.
  const parsed = t.frequency === null ? undefined : parseFrequency(t.frequency)
  if (t.frequency !== null && !parsed) throw new HttpError(400, 'invalid_body', 'Sync interval is invalid')
  const connection = await requireConnection(s.db, t.environmentId, t.providerConfigKey, t.connectionId)
  const [sync] = await findSyncs(
    s.db,
    { environmentId: t.environmentId, providerConfigKey: t.providerConfigKey, connectionPk: connection.id },
    [{ name: t.name, variant: t.variant }],
  )
  if (!sync) throw unknownSync()
  let effective: { ms: number; answer: string }
  if (parsed) {
    effective = { ms: parsed.ms, answer: parsed.normalized }
  } else {
    const definition = (await readDefinitions(s.db, t.environmentId)).find(t.providerConfigKey, t.name)
    if (!definition) throw unknownSync()
    effective = { ms: definition.frequencyMs, answer: definition.frequency }
  }
  await inTransaction(s.db, async (trx) => {
    await setSyncFrequency(trx, sync.id, t.frequency)
    await setScheduleFrequency(trx, sync.id, effective.ms)
  })
  return effective.answer
}
