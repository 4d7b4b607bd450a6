import type { Queryable } from '../db/database.ts'
import type { PreparedSync } from './nango-flows.ts'

/**
 * The plan `nango deploy` shows before it deploys (POST /sync/deploy/confirmation), with Nango's
 * rules (packages/shared/lib/services/sync/sync.service.ts getAndReconcileDifferences), and which
 * deployed syncs a deployment removes.
 */

/** What the deployment covers: everything (`all`), one integration, or one function (`single`). */
export type DeployMode = 'all' | 'integration' | 'single'

interface SlimSync {
  name: string
  providerConfigKey: string
  connections: number
  auto_start: boolean
}
interface SlimFunction {
  name: string
  providerConfigKey: string
}

/** Nango's ScriptDifferences: the CLI reads every one of these arrays. */
export interface ScriptDifferences {
  newSyncs: SlimSync[]
  updatedSyncs: SlimSync[]
  deletedSyncs: SlimSync[]
  newActions: SlimFunction[]
  updatedActions: SlimFunction[]
  deletedActions: SlimFunction[]
  deletedModels: string[]
  newOnEventScripts: (SlimFunction & { event: string })[]
  updatedOnEventScripts: (SlimFunction & { event: string })[]
  deletedOnEventScripts: (SlimFunction & { event: string })[]
}

type Flow = Pick<PreparedSync, 'integration' | 'name' | 'autoStart' | 'modelNames'>

/**
 * What deploying `flows` would change: a sync not deployed yet is new, a deployed one is updated
 * (Nango lists it whether or not it changed), and, unless one function is deployed, the deployed
 * syncs the deployment does not name (in its integration only, for `integration`) are deleted.
 * Models a sync no longer has are listed when its integration has connections (their records
 * stop being written). Actions and on-event scripts are never deployed here: always empty.
 */
export async function planNangoDeploy(
  db: Queryable,
  environmentId: number,
  flows: readonly Flow[],
  mode: DeployMode,
): Promise<ScriptDifferences> {
  const [deployed, connectionRows] = await Promise.all([
    db
      .selectFrom('sync_definitions')
      .select(['integration', 'name', 'models'])
      .where('environment_id', '=', environmentId)
      .execute(),
    db
      .selectFrom('connections')
      .select(['provider_config_key'])
      .select((eb) => eb.fn.countAll<string | number>().as('count'))
      .where('environment_id', '=', environmentId)
      .groupBy('provider_config_key')
      .execute(),
  ])
  const connections = new Map(connectionRows.map((r) => [r.provider_config_key, Number(r.count)]))
  const count = (integration: string) => connections.get(integration) ?? 0
  const byKey = new Map(deployed.map((d) => [`${d.integration}/${d.name}`, d]))
  const plan: ScriptDifferences = {
    newSyncs: [],
    updatedSyncs: [],
    deletedSyncs: [],
    newActions: [],
    updatedActions: [],
    deletedActions: [],
    deletedModels: [],
    newOnEventScripts: [],
    updatedOnEventScripts: [],
    deletedOnEventScripts: [],
  }
  for (const flow of flows) {
    const before = byKey.get(`${flow.integration}/${flow.name}`)
    const slim = {
      name: flow.name,
      providerConfigKey: flow.integration,
      connections: count(flow.integration),
      auto_start: flow.autoStart,
    }
    ;(before ? plan.updatedSyncs : plan.newSyncs).push(slim)
    if (before && count(flow.integration) > 0) {
      plan.deletedModels.push(...Object.keys(before.models).filter((m) => !flow.modelNames.includes(m)))
    }
  }
  for (const d of removedBy(deployed, flows, mode)) {
    plan.deletedSyncs.push({
      name: d.name,
      providerConfigKey: d.integration,
      connections: count(d.integration),
      auto_start: false,
    })
  }
  return plan
}

/** The deployed syncs a deployment of `flows` removes (Nango's reconcile). */
export function removedBy<T extends { integration: string; name: string }>(
  deployed: readonly T[],
  flows: readonly Flow[],
  mode: DeployMode,
): T[] {
  if (mode === 'single' || flows.length === 0) return []
  const scope = mode === 'integration' ? flows[0]!.integration : undefined
  const named = new Set(flows.map((f) => `${f.integration}/${f.name}`))
  return deployed.filter(
    (d) => (scope === undefined || d.integration === scope) && !named.has(`${d.integration}/${d.name}`),
  )
}
