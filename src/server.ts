import type { FastifyInstance } from 'fastify'

import { buildApp } from './app.ts'
import type { Config } from './config.ts'
import { findConnectionRef, upsertConnection } from './connections/store.ts'
import type { Sealer } from './crypto.ts'
import type { Db } from './db/connect.ts'
import { ensureEnvironment } from './environments/store.ts'
import type { BootstrapKey } from './keys/bootstrap.ts'
import type { Logger } from './logger.ts'
import { type Loop, startLoop } from './loop.ts'
import { runRetention } from './records/retention.ts'
import { SyncExecutor } from './runs/execute.ts'
import { WorkerPool } from './runtime/pool.ts'
import { Dispatcher } from './scheduler/dispatcher.ts'
import { localWakeups, postgresWakeups, type Wakeups } from './scheduler/wakeups.ts'
import { type Definitions, loadDefinitions } from './syncs/definitions.ts'
import { provisionSyncs } from './syncs/provision.ts'
import { deliverDue } from './webhooks/deliver.ts'

export interface Server {
  app: FastifyInstance
  definitions: Definitions
  wakeups: Wakeups
  dispatcher: Dispatcher
  /** Gives a connection the syncs of its integration (connections created outside the API). */
  provision(connectionPk: number): Promise<void>
  /**
   * Ordered and bounded: HTTP stops taking requests while the dispatcher stops taking runs (running
   * ones get `graceMs` to finish, then are released); then the background loops stop, then the workers.
   */
  close(graceMs: number): Promise<void>
}

/**
 * Everything `syncstore serve` runs on one database: the HTTP API, the scheduler's worker and the
 * sync runtime, webhook delivery and retention. Every background loop is safe on every instance.
 */
export async function startServer(deps: {
  config: Config
  db: Db
  logger: Logger
  sealer: Sealer
  bootstrapKeys: readonly BootstrapKey[]
}): Promise<Server> {
  const { config, db, logger, sealer } = deps
  const definitions = await loadDefinitions(config.integrationsDirs)
  await provisionSyncs(db.kysely, definitions)
  if (config.exampleIntegrations) await ensureDemoConnection(db, sealer, definitions)

  const wakeups =
    config.database.kind === 'postgres'
      ? postgresWakeups(db.kysely, config.database.url, logger)
      : localWakeups()
  const pool = new WorkerPool({
    memoryMb: config.runs.memoryMb,
    timeoutMs: config.runs.timeoutMs,
    idle: Math.min(2, config.runs.concurrency),
    logger,
  })
  // Each warm worker is a V8 isolate of its own (tens of MB): keep them only when there is something to run.
  if (definitions.integrations.size > 0) pool.warm()
  const executor = new SyncExecutor({ db: db.kysely, sealer, pool, definitions: () => definitions })
  const dispatcher = new Dispatcher({
    db: db.kysely,
    wakeups,
    executor,
    logger,
    concurrency: config.runs.concurrency,
    pollMs: config.runs.pollMs,
    heartbeatIntervalMs: config.runs.heartbeatIntervalMs,
    heartbeatTimeoutMs: config.runs.heartbeatTimeoutMs,
    maxRunMs: config.runs.timeoutMs + config.runs.heartbeatTimeoutMs,
  })
  await dispatcher.start()

  const provision = async (connectionPk: number) => {
    await provisionSyncs(db.kysely, definitions, [connectionPk])
    await wakeups.notify()
  }
  const loops: Loop[] = [
    startLoop({
      name: 'webhooks',
      // Deliveries go out within a second of their run; a failed one waits for its backoff.
      intervalMs: 1000,
      logger,
      run: async () => void (await deliverDue(db.kysely, sealer, logger)),
    }),
    startLoop({
      name: 'retention',
      intervalMs: config.retention.intervalMs,
      logger,
      run: async () => {
        const { pruned, deleted } = await runRetention(db.kysely, config.retention, new Date())
        if (pruned + deleted > 0) logger.info({ pruned, deleted }, 'retention')
      },
    }),
  ]
  const app = await buildApp({
    ...deps,
    definitions: () => definitions,
    wakeups,
    onConnectionSaved: (connection) => provision(connection.id),
  })

  return {
    app,
    definitions,
    wakeups,
    dispatcher,
    provision,
    async close(graceMs) {
      // New requests are refused at once and in-flight ones finish, while running syncs get the grace period.
      await Promise.all([app.close(), dispatcher.stop(graceMs)])
      await Promise.all(loops.map((l) => l.stop()))
      await pool.close()
    },
  }
}

/** The bundled example's connection, so a fresh embedded install has records to page at once. */
async function ensureDemoConnection(db: Db, sealer: Sealer, definitions: Definitions): Promise<void> {
  if (!definitions.integrations.has('demo')) return
  const dev = await ensureEnvironment(db.kysely, 'dev')
  if (await findConnectionRef(db.kysely, dev.id, 'demo', 'demo')) return
  const { connection } = await upsertConnection(db.kysely, sealer, dev.id, {
    providerConfigKey: 'demo',
    connectionId: 'demo',
    metadata: { created_by: 'syncstore serve (example integration)' },
    credentials: { type: 'NONE' },
  })
  await provisionSyncs(db.kysely, definitions, [connection.id])
}
