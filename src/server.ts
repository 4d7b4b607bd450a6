import type { FastifyInstance } from 'fastify'

import { buildApp } from './app.ts'
import type { Config } from './config.ts'
import { importConnection } from './connections/service.ts'
import { findConnectionRef } from './connections/store.ts'
import type { Sealer } from './crypto.ts'
import type { Db } from './db/connect.ts'
import { ensureEnvironment } from './environments/store.ts'
import type { BootstrapKey } from './keys/bootstrap.ts'
import type { Logger } from './logger.ts'
import { type Loop, startLoop } from './loop.ts'
import { listenMetrics, type MetricsListener } from './metrics/listener.ts'
import { Metrics } from './metrics/metrics.ts'
import { reconcileDue } from './nango/reconcile.ts'
import { loadProviders } from './providers/registry.ts'
import { runRetention } from './records/retention.ts'
import { SyncExecutor } from './runs/execute.ts'
import { WorkerPool } from './runtime/pool.ts'
import { Dispatcher } from './scheduler/dispatcher.ts'
import { localWakeups, postgresWakeups, type Wakeups } from './scheduler/wakeups.ts'
import { deployAtStart } from './deployments/serve.ts'
import { deliverDue } from './webhooks/deliver.ts'

export interface Server {
  app: FastifyInstance
  wakeups: Wakeups
  dispatcher: Dispatcher
  /** Where GET /metrics is served (SYNCSTORE_METRICS_PORT set), or undefined */
  metricsUrl: string | undefined
  /** Deploys the integrations folders again (`serve --watch`) */
  redeploy(): Promise<void>
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
  // Kept only when they can be scraped: otherwise nothing is counted, at no cost per request.
  const metrics = config.metricsPort === null ? undefined : new Metrics(db, logger)
  // A providers file that does not load stops the start, before anything runs
  const providers = await loadProviders(config.providersFile)
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
  const redeploy = async () => {
    await deployAtStart(db.kysely, config, logger)
    await wakeups.notify()
  }
  await redeploy()
  if (config.exampleIntegrations) await ensureDemoConnection(db, sealer)
  // Each warm worker is a V8 isolate of its own (about 24 MB): keep them only when there is something
  // to run, a started schedule. Deployed syncs nobody started (autoStart: false) warm nothing; the
  // pool starts a worker for the first run that comes anyway.
  const running = await db.kysely
    .selectFrom('schedules')
    .select('sync_id')
    .where('state', '=', 'STARTED')
    .limit(1)
    .executeTakeFirst()
  if (running) pool.warm()
  const executor = new SyncExecutor({
    db: db.kysely,
    sealer,
    pool,
    recordValidation: config.runs.recordValidation,
    providers,
    runTimeoutMs: config.runs.timeoutMs,
  })
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
    metrics,
  })
  await dispatcher.start()

  const loops: Loop[] = [
    startLoop({
      name: 'webhooks',
      // Deliveries go out within a second of their run; a failed one waits for its backoff.
      intervalMs: 1000,
      logger,
      run: async () => void (await deliverDue(db.kysely, sealer, logger)),
    }),
    startLoop({
      name: 'nango-reconcile',
      // Each pass claims the paired environments whose reconcile is due: one process reconciles each.
      intervalMs: config.nango.reconcileMs,
      logger,
      run: async (signal) =>
        void (await reconcileDue(db.kysely, sealer, {
          intervalMs: config.nango.reconcileMs,
          signal,
          logger,
        })),
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
  const app = await buildApp({ ...deps, wakeups, providers, metrics })

  let metricsListener: MetricsListener | undefined
  const server: Server = {
    app,
    wakeups,
    dispatcher,
    get metricsUrl() {
      return metricsListener?.url
    },
    redeploy,
    async close(graceMs) {
      // New requests are refused at once and in-flight ones finish, while running syncs get the grace period.
      await Promise.all([app.close(), dispatcher.stop(graceMs), metricsListener?.close()])
      await Promise.all(loops.map((l) => l.stop()))
      await pool.close()
    },
  }
  if (metrics && config.metricsPort !== null) {
    try {
      metricsListener = await listenMetrics(metrics, {
        port: config.metricsPort,
        host: config.host,
        requestTimeoutMs: config.http.requestTimeoutMs,
        logger,
      })
    } catch (err) {
      // A port in use stops the start, as the API's own would, with nothing left running.
      await server.close(0)
      throw err
    }
    logger.info({ url: `${metricsListener.url}/metrics` }, 'metrics listening')
  }
  return server
}

/** The bundled example's connection, so a fresh embedded install has records to page at once. */
async function ensureDemoConnection(db: Db, sealer: Sealer): Promise<void> {
  const dev = await ensureEnvironment(db.kysely, 'dev')
  if (await findConnectionRef(db.kysely, dev.id, 'demo', 'demo')) return
  await importConnection(db.kysely, sealer, dev.id, {
    provider_config_key: 'demo',
    connection_id: 'demo',
    metadata: { created_by: 'syncstore serve (example integration)' },
    credentials: { type: 'NONE' },
  })
}
