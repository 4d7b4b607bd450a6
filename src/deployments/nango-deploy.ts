import type { Kysely, Transaction } from 'kysely'

import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { canonicalJson } from '../json.ts'
import type { PreparedSync } from './nango-flows.ts'
import { type DeployMode, removedBy } from './nango-plan.ts'
import { type DeploymentSummary, lockForDeployment } from './store.ts'
import { startDeployment } from './writer.ts'

/**
 * `nango deploy` against syncstore (POST /sync/deploy): the deployment itself, in the key's
 * environment, with Nango's rules (packages/shared/lib/services/sync/config/deploy.service.ts
 * deploy, and sync.service.ts getAndReconcileDifferences for what it removes).
 */

/** Nango's SyncDeploymentResult: the CLI prints `name@vversion` of each. */
export interface DeployedFunction {
  name: string
  version: string
  providerConfigKey: string
  type: 'sync'
  models: string[]
}

export interface NangoDeployOptions {
  mode: DeployMode
  /** remove the deployed syncs the deployment does not name (the CLI asks for it on deploy) */
  reconcile: boolean
  deployedBy: string
  /** e.g. "nango deploy (sdk 0.71.10-zero)" */
  source: string
}

/**
 * Deploys `syncs` to the environment in one transaction, as a folder deployment does: bundles and
 * definitions written, a deployment recorded when anything changed, the syncs that left removed
 * (with `reconcile`), and the provisioning that follows (new syncs for existing connections,
 * removed ones stopped, records kept). An integration the environment does not have yet is
 * created, its provider named by its key (Nango refuses with `unknown_provider_config`; here
 * `nango deploy` works on a fresh server, as a folder deployment does).
 *
 * Versions follow Nango's: the one the CLI sends (`--version` or the file's), else the deployed
 * version plus one (`"1"`, `"2"`...; a patch for `x.y.z`) when the sync changed, else unchanged.
 */
export async function applyNangoDeploy(
  db: Kysely<Database>,
  environmentId: number,
  syncs: readonly PreparedSync[],
  options: NangoDeployOptions,
): Promise<{ deployed: DeployedFunction[]; deploymentId: number | null; summary: DeploymentSummary }> {
  return inTransaction(db, async (trx) => {
    await lockForDeployment(trx, environmentId)
    const deployed = await trx
      .selectFrom('sync_definitions')
      .select([
        'integration',
        'name',
        'bundle_hash',
        'description',
        'frequency',
        'auto_start',
        'sync_type',
        'track_deletes',
        'models',
        'extra',
        'source',
      ])
      .where('environment_id', '=', environmentId)
      .execute()
    const byKey = new Map(deployed.map((d) => [`${d.integration}/${d.name}`, d]))
    const deployment = startDeployment(trx, environmentId, options)
    const { summary } = deployment

    for (const key of await missingIntegrations(trx, environmentId, syncs)) {
      await deployment.record()
      summary.integrations.push(key)
      await trx
        .insertInto('integrations')
        .values({
          environment_id: environmentId,
          unique_key: key,
          provider: key,
          display_name: key,
          config: JSON.stringify({}),
        })
        .execute()
    }

    const results: DeployedFunction[] = []
    for (const sync of syncs) {
      const key = `${sync.integration}/${sync.name}`
      const before = byKey.get(key)
      const { version: previous, ...extraBefore } = (before?.extra ?? {}) as { version?: unknown }
      const previousVersion = typeof previous === 'string' ? previous : undefined
      const values = {
        bundle_hash: sync.bundle.hash,
        description: sync.description,
        frequency: sync.frequency,
        auto_start: sync.autoStart,
        sync_type: sync.syncType,
        track_deletes: sync.trackDeletes,
        models: sync.models,
        extra: sync.extra,
        source: sync.source,
      }
      const same =
        before !== undefined &&
        fingerprint({ ...before, extra: extraBefore }) === fingerprint(values) &&
        (sync.version === undefined || sync.version === previousVersion)
      const version = same
        ? (previousVersion ?? '1')
        : (sync.version ?? (before ? nextVersion(previousVersion) : '1'))
      results.push({
        name: sync.name,
        version,
        providerConfigKey: sync.integration,
        type: 'sync',
        models: sync.modelNames,
      })
      if (same) continue
      await deployment.writeSync(
        sync.integration,
        sync.name,
        { ...sync, extra: { ...sync.extra, version } },
        before === undefined,
      )
    }

    if (options.reconcile) {
      for (const d of removedBy(deployed, syncs, options.mode)) {
        await deployment.removeSync(d.integration, d.name)
      }
    }
    const deploymentId = await deployment.finish()
    return {
      deployed: results,
      deploymentId,
      summary,
    }
  })
}

/** What decides whether a sync changed: everything written but the version and the file's path. */
function fingerprint(s: {
  bundle_hash: string
  description: string
  frequency: string
  auto_start: boolean
  sync_type: string
  track_deletes: boolean
  models: unknown
  extra: unknown
  source: string | null
}): string {
  return canonicalJson([
    s.bundle_hash,
    s.description,
    s.frequency,
    s.auto_start,
    s.sync_type,
    s.track_deletes,
    s.models,
    s.extra,
    s.source,
  ])
}

async function missingIntegrations(
  trx: Transaction<Database>,
  environmentId: number,
  syncs: readonly PreparedSync[],
): Promise<string[]> {
  const wanted = [...new Set(syncs.map((s) => s.integration))]
  if (wanted.length === 0) return []
  const existing = await trx
    .selectFrom('integrations')
    .select('unique_key')
    .where('environment_id', '=', environmentId)
    .where('unique_key', 'in', wanted)
    .execute()
  const have = new Set(existing.map((e) => e.unique_key))
  return wanted.filter((key) => !have.has(key))
}

/** Nango's version bump (config.service.ts increment): "3" -> "4", "1.2.3" -> "1.2.4". */
function nextVersion(previous: string | undefined): string {
  if (previous === undefined) return '1'
  if (/^\d+$/.test(previous)) return String(Number(previous) + 1)
  const semver = /^(\d+)\.(\d+)\.(\d+)$/.exec(previous)
  if (semver) return `${semver[1]}.${semver[2]}.${Number(semver[3]) + 1}`
  // Nothing Nango could bump either (it refuses the deployment); kept as it is.
  return previous
}
