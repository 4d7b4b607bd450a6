import os from 'node:os'

import { type Kysely, sql, type Transaction } from 'kysely'

import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import { canonicalJson } from '../json.ts'
import { type Environment, listEnvironments } from '../environments/store.ts'
import { type Folder, readFolders, type Refusal } from './folder.ts'
import { type DeploymentSummary, knownBundles, lockForDeployment } from './store.ts'
import { startDeployment } from './writer.ts'

export interface DeployOptions {
  /** Environment names; every environment when empty or absent. */
  environments?: readonly string[] | undefined
  /** Refuse the whole deployment when any file is refused. */
  strict?: boolean | undefined
  /**
   * Remove deployed syncs (and integrations) that the folder no longer has (default). Off, a
   * deployment only adds and changes.
   */
  prune?: boolean | undefined
  /** Who deployed, e.g. "alice@laptop" */
  deployedBy?: string | undefined
  /** What was deployed, e.g. the folder */
  source: string
}

export interface DeployReport {
  environments: (DeploymentSummary & {
    environment: string
    /** null when nothing changed (then no deployment is recorded) */
    deploymentId: number | null
    unchanged: number
  })[]
  refused: Refusal[]
}

export class DeployError extends Error {
  override name = 'DeployError'
  constructor(
    message: string,
    readonly refused: readonly Refusal[] = [],
  ) {
    super(message)
  }
}

export const defaultDeployer = () => `${os.userInfo().username}@${os.hostname()}`

/**
 * Deploys the integrations in `dirs`: bundles and checks every sync file (outside any
 * transaction), then writes every environment's deployment in one transaction, with the
 * provisioning it implies: all of it or none of it.
 */
export async function deployFolders(
  db: Kysely<Database>,
  dirs: readonly string[],
  options: DeployOptions,
): Promise<DeployReport> {
  const folder = await readFolders(dirs, (hashes) => knownBundles(db, hashes))
  if (options.strict && folder.refused.length > 0) {
    throw new DeployError(
      `Nothing was deployed (--strict): ${folder.refused.length} file(s) were refused`,
      folder.refused,
    )
  }
  return deployFolder(db, folder, options)
}

async function deployFolder(
  db: Kysely<Database>,
  folder: Folder,
  options: DeployOptions,
): Promise<DeployReport> {
  const environments = await inTransaction(db, async (trx) => {
    const targets = await targetEnvironments(trx, options.environments)
    const reports = []
    for (const env of targets) reports.push(await deployTo(trx, env, folder, options))
    return reports
  })
  return { environments, refused: folder.refused }
}

async function targetEnvironments(
  trx: Transaction<Database>,
  names: readonly string[] | undefined,
): Promise<Environment[]> {
  const all = await listEnvironments(trx)
  if (!names || names.length === 0) {
    if (all.length === 0) throw new DeployError('There is no environment to deploy to: create one first')
    return all
  }
  return names.map((name) => {
    const env = all.find((e) => e.name === name)
    if (!env) {
      throw new DeployError(
        `Unknown environment "${name}" (create it with: syncstore environments create ${name})`,
      )
    }
    return env
  })
}

async function deployTo(
  trx: Transaction<Database>,
  env: Environment,
  folder: Folder,
  options: DeployOptions,
) {
  await lockForDeployment(trx, env.id)
  const deployed = await trx
    .selectFrom('sync_definitions')
    .select(['integration', 'name', 'bundle_hash', 'source'])
    .where('environment_id', '=', env.id)
    .execute()
  const current = new Map(deployed.map((d) => [`${d.integration}/${d.name}`, d]))
  const integrations = await trx
    .selectFrom('integrations')
    .select(['unique_key', 'provider', 'display_name', 'config', 'created_by'])
    .where('environment_id', '=', env.id)
    .execute()
  // An integration created through the API keeps its provider and name: a folder only brings its
  // integration.json. A deployment removes only the integrations deployments made.
  const madeByApi = new Set(integrations.filter((i) => i.created_by === 'api').map((i) => i.unique_key))
  const settings = new Map(
    integrations.map((i) => [
      i.unique_key,
      canonicalJson(madeByApi.has(i.unique_key) ? [i.config] : [i.provider, i.display_name, i.config]),
    ]),
  )
  const deployment = startDeployment(
    trx,
    env.id,
    { deployedBy: options.deployedBy ?? defaultDeployer(), source: options.source },
    folder.refused.map(({ file, reason }) => ({ file, reason })),
  )
  const { summary } = deployment
  let unchanged = 0

  for (const integration of folder.integrations.values()) {
    const wanted = canonicalJson(
      madeByApi.has(integration.key)
        ? [integration.config]
        : [integration.provider, integration.displayName, integration.config],
    )
    if (settings.get(integration.key) !== wanted) {
      await deployment.record()
      summary.integrations.push(integration.key)
    }
    await trx
      .insertInto('integrations')
      .values({
        environment_id: env.id,
        unique_key: integration.key,
        provider: integration.provider,
        display_name: integration.displayName,
        config: JSON.stringify(integration.config),
      })
      .onConflict((oc) =>
        oc.columns(['environment_id', 'unique_key']).doUpdateSet((eb) => ({
          provider: sql<string>`CASE WHEN integrations.created_by = 'api' THEN integrations.provider ELSE ${eb.ref('excluded.provider')} END`,
          display_name: sql<string>`CASE WHEN integrations.created_by = 'api' THEN integrations.display_name ELSE ${eb.ref('excluded.display_name')} END`,
          config: eb.ref('excluded.config'),
          updated_at: sql<Date>`CASE WHEN ${settings.get(integration.key) === wanted} THEN integrations.updated_at ELSE now() END`,
        })),
      )
      .execute()
    for (const sync of integration.syncs) {
      const key = `${integration.key}/${sync.name}`
      const before = current.get(key)
      // A comment changes the source, not always the bundle: the stored source follows it.
      if (before?.bundle_hash === sync.bundle.hash && before.source === sync.source) {
        unchanged++
        continue
      }
      await deployment.writeSync(integration.key, sync.name, sync, before === undefined)
    }
  }

  // A folder refused whole (Nango's old format) was not read: it says nothing about what to remove.
  if (options.prune !== false && !folder.refused.some((r) => r.wholeFolder)) {
    // What the folder no longer has, except what a refused file or integration.json still stands for.
    const keptIntegrations = new Set([
      ...folder.integrations.keys(),
      ...folder.refused.filter((r) => r.integration && !r.name).map((r) => r.integration!),
    ])
    const keptSyncs = new Set([
      ...[...folder.integrations.values()].flatMap((i) => i.syncs.map((s) => `${i.key}/${s.name}`)),
      ...folder.refused.filter((r) => r.name).map((r) => `${r.integration}/${r.name}`),
    ])
    for (const d of deployed) {
      const key = `${d.integration}/${d.name}`
      if (
        keptSyncs.has(key) ||
        (keptIntegrations.has(d.integration) && !folder.integrations.has(d.integration))
      ) {
        continue
      }
      await deployment.removeSync(d.integration, d.name)
    }
    for (const key of settings.keys()) {
      if (keptIntegrations.has(key) || madeByApi.has(key)) continue
      await deployment.record()
      summary.integrations.push(key)
      await trx
        .deleteFrom('integrations')
        .where('environment_id', '=', env.id)
        .where('unique_key', '=', key)
        .execute()
    }
  }

  const deploymentId = await deployment.finish()
  return {
    environment: env.name,
    deploymentId,
    unchanged,
    ...summary,
  }
}
