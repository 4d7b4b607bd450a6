import { sql } from 'kysely'

import type { Queryable } from '../db/database.ts'
import {
  type Definitions,
  definitionsOf,
  type Integration,
  type IntegrationConfig,
  type SyncDefinition,
} from '../syncs/definitions.ts'
import type { LoadResult } from './load.worker.ts'

/**
 * What is deployed, read back from the database. Every request and every run reads here (a few
 * indexed rows, without the bundles), so every instance sees a deployment as soon as it commits.
 */

const definitionColumns = [
  'd.integration',
  'd.name',
  'd.file',
  'd.description',
  'd.frequency',
  'd.frequency_ms',
  'd.auto_start',
  'd.sync_type',
  'd.track_deletes',
  'd.models',
  'd.extra',
  'd.bundle_hash',
  'd.deployed_at',
] as const

type DefinitionRow = {
  integration: string
  name: string
  file: string
  description: string
  frequency: string
  frequency_ms: string | number
  auto_start: boolean
  sync_type: 'full' | 'incremental'
  track_deletes: boolean
  models: Record<string, object>
  extra: Record<string, unknown>
  bundle_hash: string
  deployed_at: Date
}

function toDefinition(row: DefinitionRow): SyncDefinition {
  return {
    integration: row.integration,
    name: row.name,
    file: row.file,
    description: row.description,
    frequency: row.frequency,
    frequencyMs: Number(row.frequency_ms),
    autoStart: row.auto_start,
    syncType: row.sync_type,
    trackDeletes: row.track_deletes,
    models: row.models,
    extra: row.extra,
    bundleHash: row.bundle_hash,
    deployedAt: row.deployed_at,
  }
}

/** The environment's integrations and their syncs. */
export async function readDefinitions(db: Queryable, environmentId: number): Promise<Definitions> {
  const [integrations, syncs] = await Promise.all([
    db
      .selectFrom('integrations')
      .select(['unique_key', 'provider', 'display_name', 'config', 'created_at', 'updated_at'])
      .where('environment_id', '=', environmentId)
      .orderBy('unique_key')
      .execute(),
    db
      .selectFrom('sync_definitions as d')
      .select(definitionColumns)
      .where('d.environment_id', '=', environmentId)
      .orderBy('d.integration')
      .orderBy('d.name')
      .execute(),
  ])
  const byKey = new Map<string, Integration>()
  for (const row of integrations) {
    byKey.set(row.unique_key, {
      key: row.unique_key,
      provider: row.provider,
      displayName: row.display_name,
      config: row.config,
      syncs: [],
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    })
  }
  for (const row of syncs) byKey.get(row.integration)?.syncs.push(toDefinition(row as DefinitionRow))
  return definitionsOf(byKey)
}

/** The provider of each of the environment's integrations; an unknown key is its own provider. */
export async function readProviders(
  db: Queryable,
  environmentId: number,
): Promise<(providerConfigKey: string) => string> {
  const rows = await db
    .selectFrom('integrations')
    .select(['unique_key', 'provider'])
    .where('environment_id', '=', environmentId)
    .execute()
  const providers = new Map(rows.map((r) => [r.unique_key, r.provider]))
  return (key) => providers.get(key) ?? key
}

/** One deployed sync and its integration's settings: what a run starts on. */
export async function readDefinition(
  db: Queryable,
  environmentId: number,
  integration: string,
  name: string,
): Promise<{ definition: SyncDefinition; integration: IntegrationConfig } | undefined> {
  const row = await db
    .selectFrom('sync_definitions as d')
    .innerJoin('integrations as i', (j) =>
      j.onRef('i.environment_id', '=', 'd.environment_id').onRef('i.unique_key', '=', 'd.integration'),
    )
    .select([...definitionColumns, 'i.config', 'i.provider'])
    .where('d.environment_id', '=', environmentId)
    .where('d.integration', '=', integration)
    .where('d.name', '=', name)
    .executeTakeFirst()
  if (!row) return undefined
  return {
    definition: toDefinition(row as DefinitionRow),
    integration: { ...row.config, provider: row.provider },
  }
}

/** The code of a bundle, for a worker that has not run it yet. */
export async function readBundle(db: Queryable, hash: string): Promise<string | undefined> {
  const row = await db.selectFrom('bundles').select('code').where('hash', '=', hash).executeTakeFirst()
  return row?.code
}

export interface DeploymentSummary {
  /** integrations added, changed (integration.json) or removed */
  integrations: string[]
  added: string[]
  changed: string[]
  removed: string[]
  refused: { file: string; reason: string }[]
}

export interface DeploymentRow {
  id: number
  environment: string
  deployedBy: string
  source: string
  summary: DeploymentSummary
  createdAt: Date
}

/** Deployments, newest first, optionally of some environments only. */
export async function listDeployments(
  db: Queryable,
  options: { environments?: readonly string[]; limit: number },
): Promise<DeploymentRow[]> {
  let query = db
    .selectFrom('deployments as d')
    .innerJoin('environments as e', 'e.id', 'd.environment_id')
    .select(['d.id', 'e.name', 'd.deployed_by', 'd.source', 'd.summary', 'd.created_at'])
    .orderBy('d.id', 'desc')
    .limit(options.limit)
  if (options.environments?.length) query = query.where('e.name', 'in', [...options.environments])
  const rows = await query.execute()
  return rows.map((r) => ({
    id: Number(r.id),
    environment: r.name,
    deployedBy: r.deployed_by,
    source: r.source,
    summary: r.summary,
    createdAt: r.created_at,
  }))
}

/** Serialises deployments to an environment against each other and against new connections. */
export async function lockForDeployment(db: Queryable, environmentId: number): Promise<void> {
  await sql`SELECT 1 FROM environments WHERE id = ${environmentId} FOR UPDATE`.execute(db)
}

/**
 * Taken by whatever creates a connection, in its transaction: a deployment committing meanwhile
 * waits, so the connection gets either the old syncs and then the new ones from the deployment's
 * provisioning, or the new ones directly; never neither.
 */
export async function lockForProvisioning(db: Queryable, environmentId: number): Promise<void> {
  await sql`SELECT 1 FROM environments WHERE id = ${environmentId} FOR SHARE`.execute(db)
}

/**
 * The definitions deployed bundles were loaded into, by hash (as the deploy-time check found them):
 * a deployment reuses them instead of loading those bundles again.
 */
export async function knownBundles(
  db: Queryable,
  hashes: readonly string[],
): Promise<Map<string, LoadResult>> {
  if (hashes.length === 0) return new Map()
  const rows = await db
    .selectFrom('sync_definitions')
    .distinctOn('bundle_hash')
    .select([
      'bundle_hash',
      'description',
      'frequency',
      'models',
      'auto_start',
      'sync_type',
      'track_deletes',
      'extra',
    ])
    .where('bundle_hash', 'in', [...hashes])
    .execute()
  return new Map(
    rows.map((r) => [
      r.bundle_hash,
      {
        definition: {
          description: r.description,
          frequency: r.frequency,
          models: r.models,
          autoStart: r.auto_start,
          syncType: r.sync_type,
          trackDeletes: r.track_deletes,
          hasExec: true,
        },
        extra: r.extra,
      },
    ]),
  )
}
