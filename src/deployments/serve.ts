import { stat } from 'node:fs/promises'

import type { Kysely } from 'kysely'

import type { Config } from '../config.ts'
import type { Database } from '../db/database.ts'
import type { Logger } from '../logger.ts'
import { defaultDeployer, deployFolders } from './deploy.ts'

/**
 * What `syncstore serve` deploys at start (and on change with --watch): the integrations folder
 * (SYNCSTORE_INTEGRATIONS_DIR or ./integrations) and, on the embedded database, the bundled
 * example, to every environment. Without a folder nothing is removed: the server runs what was
 * deployed with `syncstore deploy`. A refused file is logged and the rest deploys.
 */
export async function deployAtStart(db: Kysely<Database>, config: Config, logger: Logger): Promise<void> {
  const dirs = []
  for (const dir of config.integrationsDirs) if (await isDirectory(dir)) dirs.push(dir)
  if (dirs.length === 0) {
    logger.info({ dirs: config.integrationsDirs }, 'no integrations folder: running what is deployed')
    return
  }
  const folder = config.integrationsDirs.at(-1)!
  const report = await deployFolders(db, dirs, {
    // Only the team's own folder speaks for what is deployed: the example alone removes nothing.
    prune: dirs.includes(folder),
    deployedBy: `syncstore serve (${defaultDeployer()})`,
    source: dirs.join(', '),
  })
  for (const r of report.refused) logger.error({ file: r.file, reason: r.reason }, 'sync file refused')
  for (const env of report.environments) {
    if (env.deploymentId === null) continue
    const { environment, deploymentId, added, changed, removed } = env
    logger.info({ environment, deploymentId, added, changed, removed }, 'deployed')
  }
}

async function isDirectory(dir: string): Promise<boolean> {
  return stat(dir).then(
    (s) => s.isDirectory(),
    () => false,
  )
}
