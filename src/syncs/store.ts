import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'

export interface SyncRow {
  id: string
  /** connections.id */
  connectionPk: number
  /** the connection's public id */
  connectionId: string
  providerConfigKey: string
  name: string
  variant: string
  frequency: string | null
  lastSyncDate: Date | null
}

/** A sync named as the API names it: a name and a variant (`base` when omitted). */
export interface SyncSelector {
  name: string
  variant: string
}

const syncColumns = [
  's.id',
  's.connection_pk',
  'c.connection_id',
  'c.provider_config_key',
  's.name',
  's.variant',
  's.frequency',
  's.last_sync_date',
] as const

type Row = {
  id: string
  connection_pk: number
  connection_id: string
  provider_config_key: string
  name: string
  variant: string
  frequency: string | null
  last_sync_date: Date | null
}

const toSync = (r: Row): SyncRow => ({
  id: r.id,
  connectionPk: r.connection_pk,
  connectionId: r.connection_id,
  providerConfigKey: r.provider_config_key,
  name: r.name,
  variant: r.variant,
  frequency: r.frequency,
  lastSyncDate: r.last_sync_date,
})

/**
 * Syncs of one integration in an environment: of one connection (by internal id) or of all its
 * connections, and of the selected (name, variant) pairs or all of them.
 */
export async function findSyncs(
  db: Queryable,
  scope: { environmentId: number; providerConfigKey: string; connectionPk?: number },
  selectors: readonly SyncSelector[] | 'all',
): Promise<SyncRow[]> {
  let query = db
    .selectFrom('syncs as s')
    .innerJoin('connections as c', 'c.id', 's.connection_pk')
    .select(syncColumns)
    .where('c.environment_id', '=', scope.environmentId)
    .where('c.provider_config_key', '=', scope.providerConfigKey)
  if (scope.connectionPk !== undefined) query = query.where('s.connection_pk', '=', scope.connectionPk)
  if (selectors !== 'all') {
    if (selectors.length === 0) return []
    query = query.where(
      sql<boolean>`(s.name, s.variant) IN (SELECT * FROM unnest(${selectors.map((s) => s.name)}::text[],
        ${selectors.map((s) => s.variant)}::text[]))`,
    )
  }
  const rows = await query.orderBy('c.connection_id').orderBy('s.name').orderBy('s.variant').execute()
  return rows.map(toSync)
}

export async function findSyncById(
  db: Queryable,
  id: string,
): Promise<(SyncRow & { environmentId: number }) | undefined> {
  const row = await db
    .selectFrom('syncs as s')
    .innerJoin('connections as c', 'c.id', 's.connection_pk')
    .select([...syncColumns, 'c.environment_id'])
    .where('s.id', '=', id)
    .executeTakeFirst()
  return row && { ...toSync(row), environmentId: row.environment_id }
}

export async function countVariants(db: Queryable, connectionPk: number, name: string): Promise<number> {
  const row = await db
    .selectFrom('syncs')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('connection_pk', '=', connectionPk)
    .where('name', '=', name)
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

export async function insertSync(
  db: Queryable,
  connectionPk: number,
  name: string,
  variant: string,
): Promise<string> {
  const row = await db
    .insertInto('syncs')
    .values({ connection_pk: connectionPk, name, variant })
    .returning('id')
    .executeTakeFirstOrThrow()
  return row.id
}

export async function deleteSync(db: Queryable, id: string): Promise<void> {
  await db.deleteFrom('syncs').where('id', '=', id).execute()
}

export async function setSyncFrequency(db: Queryable, id: string, frequency: string | null): Promise<void> {
  await db.updateTable('syncs').set({ frequency }).where('id', '=', id).execute()
}

export async function setLastSyncDate(db: Queryable, id: string, date: Date | null): Promise<void> {
  await db.updateTable('syncs').set({ last_sync_date: date }).where('id', '=', id).execute()
}
