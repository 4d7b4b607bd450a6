import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'

/** Which runs `syncstore runs list` shows: one environment, optionally narrowed. */
export interface RunFilter {
  environmentId: number
  providerConfigKey?: string
  connectionId?: string
  syncName?: string
  limit: number
}

/** Recent runs of an environment, newest first, with their connection and sync named. */
export async function listRuns(db: Queryable, filter: RunFilter) {
  let query = db
    .selectFrom('runs as r')
    .innerJoin('syncs as s', 's.id', 'r.sync_id')
    .innerJoin('connections as c', 'c.id', 's.connection_pk')
    .select([
      'r.id',
      'c.provider_config_key',
      'c.connection_id',
      's.name',
      's.variant',
      'r.state',
      'r.reason',
      'r.created_at',
      'r.ended_at',
      'r.result',
      'r.error',
      sql<string | null>`(r.ended_at - r.started_at)::text`.as('duration'),
    ])
    .where('c.environment_id', '=', filter.environmentId)
  if (filter.providerConfigKey) query = query.where('c.provider_config_key', '=', filter.providerConfigKey)
  if (filter.connectionId) query = query.where('c.connection_id', '=', filter.connectionId)
  if (filter.syncName) query = query.where('s.name', '=', filter.syncName)
  return query.orderBy('r.id', 'desc').limit(filter.limit).execute()
}

/** A run's state and failure, or undefined when there is no such run. */
export async function findRunOutcome(db: Queryable, runId: number) {
  return db.selectFrom('runs').select(['state', 'error']).where('id', '=', runId).executeTakeFirst()
}
