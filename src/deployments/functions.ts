import type { Kysely } from 'kysely'

import type { Database, Queryable } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { notFound } from '../errors.ts'
import { lockForDeployment, readBundle } from './store.ts'
import { startDeployment } from './writer.ts'

/**
 * What is deployed, as Nango's functions API names it (a sync definition is a "function" of type
 * `sync`, identified by its integration and name, numbered by sync_definitions.id). Only syncs are
 * deployed here: no actions and no on-event scripts yet, so asking for those types finds nothing.
 */

/** Nango's function types (FunctionType in @nangohq/types). */
export type FunctionType = 'sync' | 'action' | 'on-event'

/** One deployed sync, as Nango lists it (ListedNangoSyncFunction), in Nango's key order. */
export interface ListedSyncFunction {
  name: string
  description: string
  scopes?: string[]
  type: 'sync'
  /** its models */
  returns: string[]
  /** the models' JSON Schemas under `definitions`, as Nango's CLI sends them */
  json_schema: { definitions: Record<string, Record<string, unknown>> }
  /** the frequency as written ("every hour") */
  runs: string
  auto_start: boolean
  track_deletes: boolean
  id: number
  /** a deployed sync is always enabled here (Nango can disable one) */
  enabled: boolean
  last_deployed: string
  /**
   * Nango's name for functions deployed from a project folder by its CLI, which is how every sync
   * here is deployed.
   */
  source: 'repo'
  // Beyond Nango's listing: what the definition declares and syncstore keeps without using yet.
  version?: string
  endpoints?: unknown[]
  webhook_subscriptions?: unknown[]
  metadata_json_schema?: unknown
  checkpoint_json_schema?: unknown
}

const columns = [
  'id',
  'name',
  'description',
  'frequency',
  'auto_start',
  'track_deletes',
  'models',
  'extra',
  'deployed_at',
] as const

interface FunctionRow {
  id: string | number
  name: string
  description: string
  frequency: string
  auto_start: boolean
  track_deletes: boolean
  models: Record<string, Record<string, unknown>>
  extra: Record<string, unknown>
  deployed_at: Date
}

/** Row to API: Nango's mapper (toDeployedNangoFunction) for a sync, then what else is kept. */
function toListedFunction(row: FunctionRow): ListedSyncFunction {
  const { scopes, version, endpoints, webhookSubscriptions, metadata, checkpoint } = row.extra
  return {
    name: row.name,
    description: row.description,
    ...(Array.isArray(scopes) ? { scopes: scopes.map(String) } : {}),
    type: 'sync',
    returns: Object.keys(row.models),
    json_schema: { definitions: row.models },
    runs: row.frequency,
    auto_start: row.auto_start,
    track_deletes: row.track_deletes,
    id: Number(row.id),
    enabled: true,
    last_deployed: row.deployed_at.toISOString(),
    source: 'repo',
    ...(typeof version === 'string' ? { version } : {}),
    ...(Array.isArray(endpoints) ? { endpoints } : {}),
    ...(Array.isArray(webhookSubscriptions) ? { webhook_subscriptions: webhookSubscriptions } : {}),
    ...(metadata !== undefined ? { metadata_json_schema: metadata } : {}),
    ...(checkpoint !== undefined ? { checkpoint_json_schema: checkpoint } : {}),
  }
}

// Nango's messages (controllers/shared/integrations/functions: getFunction.ts, listFunctions.ts,
// deleteFunction.ts; getCode.ts words its own).
export const NO_INTEGRATION = 'Integration does not exist'
export const NO_FUNCTION = 'Function does not exist'

const onlySyncs = (type: FunctionType | undefined) => type === undefined || type === 'sync'

/** `_`, `%` and `\` match themselves in a search, as in Nango's escapeLikePattern. */
const likePattern = (search: string) => `%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`

export async function integrationExists(db: Queryable, environmentId: number, key: string): Promise<boolean> {
  const row = await db
    .selectFrom('integrations')
    .select('unique_key')
    .where('environment_id', '=', environmentId)
    .where('unique_key', '=', key)
    .executeTakeFirst()
  return row !== undefined
}

/**
 * A page of an integration's functions, by name, filtered by type and by a case-insensitive
 * substring of the name; `total` counts every match, whatever the page.
 */
export async function listFunctions(
  db: Queryable,
  environmentId: number,
  integration: string,
  filter: { type?: FunctionType | undefined; search?: string | undefined; limit: number; offset: number },
): Promise<{ rows: ListedSyncFunction[]; total: number }> {
  if (!onlySyncs(filter.type)) return { rows: [], total: 0 }
  let query = db
    .selectFrom('sync_definitions')
    .where('environment_id', '=', environmentId)
    .where('integration', '=', integration)
  if (filter.search !== undefined) query = query.where('name', 'ilike', likePattern(filter.search))
  const [rows, count] = await Promise.all([
    query.select(columns).orderBy('name').orderBy('id').limit(filter.limit).offset(filter.offset).execute(),
    query.select((eb) => eb.fn.countAll<string | number>().as('total')).executeTakeFirstOrThrow(),
  ])
  return { rows: rows.map((r) => toListedFunction(r as FunctionRow)), total: Number(count.total) }
}

/** One function of an integration by name; undefined when there is none (of that type). */
export async function findFunction(
  db: Queryable,
  environmentId: number,
  integration: string,
  name: string,
  type?: FunctionType,
): Promise<ListedSyncFunction | undefined> {
  if (!onlySyncs(type)) return undefined
  const row = await db
    .selectFrom('sync_definitions')
    .select(columns)
    .where('environment_id', '=', environmentId)
    .where('integration', '=', integration)
    .where('name', '=', name)
    .executeTakeFirst()
  return row && toListedFunction(row as FunctionRow)
}

/**
 * A function's code as Nango returns it: the file deployed (its TypeScript), or for a version
 * deployed before sources were kept, the bundle it runs; undefined when there is none.
 */
export async function findFunctionCode(
  db: Queryable,
  environmentId: number,
  integration: string,
  name: string,
  type?: FunctionType,
): Promise<{ type: 'sync'; code: string } | undefined> {
  if (!onlySyncs(type)) return undefined
  const row = await db
    .selectFrom('sync_definitions')
    .select(['bundle_hash', 'source'])
    .where('environment_id', '=', environmentId)
    .where('integration', '=', integration)
    .where('name', '=', name)
    .executeTakeFirst()
  const code = row && (row.source ?? (await readBundle(db, row.bundle_hash)))
  return code === undefined ? undefined : { type: 'sync', code }
}

/**
 * Removes one sync from the environment's deployment, as a deployment without it would: in one
 * transaction, a recorded deployment, the definition gone, and its syncs stopped by provisioning
 * (schedules DELETED, waiting runs cancelled, records kept). Throws 404 `not_found` for an unknown
 * integration or function, with Nango's messages.
 */
export async function removeFunction(
  db: Kysely<Database>,
  environmentId: number,
  target: { integration: string; name: string; type: 'sync' | 'action' },
  by: { deployedBy: string; source: string },
): Promise<{ deploymentId: number }> {
  return inTransaction(db, async (trx) => {
    await lockForDeployment(trx, environmentId)
    if (!(await integrationExists(trx, environmentId, target.integration))) {
      throw notFound('not_found', NO_INTEGRATION)
    }
    const deployment = startDeployment(trx, environmentId, by)
    if (target.type !== 'sync' || !(await deployment.removeSync(target.integration, target.name))) {
      throw notFound('not_found', NO_FUNCTION)
    }
    const deploymentId = await deployment.finish()
    return { deploymentId: deploymentId! }
  })
}
