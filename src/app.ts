import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify'

import type { Config } from './config.ts'
import { connectionRoutes } from './connections/routes.ts'
import { oauthApps } from './credentials/app.ts'
import type { Sealer } from './crypto.ts'
import type { Db } from './db/connect.ts'
import { nangoDeployRoutes } from './deployments/nango-deploy-routes.ts'
import { functionRoutes } from './deployments/routes.ts'
import { environmentRoutes } from './environments/routes.ts'
import { Authenticator, registerAuth } from './http/auth.ts'
import { registerJsonBodies } from './http/body.ts'
import { clientErrorHandler, frameworkErrors, registerErrorHandling } from './http/error-handler.ts'
import { StdErrorSchema } from './http/errors.ts'
import { metaRoutes } from './http/meta-routes.ts'
import { openApiOptions } from './http/openapi.ts'
import { integrationRoutes } from './integrations/routes.ts'
import { registerRequestMetrics } from './metrics/http.ts'
import type { Metrics } from './metrics/metrics.ts'
import { nangoWebhookRoutes } from './nango/routes.ts'
import { createValidatorCompiler } from './http/validation.ts'
import type { BootstrapKey } from './keys/bootstrap.ts'
import { createProviders } from './providers/registry.ts'
import { proxyRoutes } from './providers/routes.ts'
import type { Providers } from './providers/types.ts'
import { recordRoutes } from './records/routes.ts'
import { localWakeups, type Wakeups } from './scheduler/wakeups.ts'
import { syncRoutes } from './syncs/routes.ts'
import type { Logger } from './logger.ts'

export interface AppDeps {
  config: Config
  db: Db
  logger: Logger
  sealer: Sealer
  bootstrapKeys: readonly BootstrapKey[]
  /** Wakes the workers of every instance when runs are requested. */
  wakeups?: Wakeups
  /** The providers integrations name (default: the built-in catalogue alone) */
  providers?: Providers
  /** Where requests and records read are counted (SYNCSTORE_METRICS_PORT set); none: not counted */
  metrics?: Metrics
}

/**
 * The one Fastify factory: `syncstore serve` and every test build the app here, so what is tested
 * is what runs. Registration order is the request order: content type, authentication and scope,
 * body parsing, validation, handler.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, db, logger, sealer } = deps
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    // Slow and idle clients (SPEC 7). A socket on which nothing moves for idleTimeoutMs is destroyed:
    // a silent socket, or one whose client stopped reading a page (Node holds the timeout off while a
    // write makes progress, so this is a send timeout), and the page memory it held is freed.
    connectionTimeout: config.http.idleTimeoutMs,
    // A request that trickles in (slowloris) keeps its socket active; it is answered 408 and closed
    // once its headers and body took longer than this. Fastify's docs ask for it without a proxy.
    requestTimeout: config.http.requestTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    http: {
      // Node's own default is 60 s, longer than requestTimeout's: trickled headers end at the same point.
      headersTimeout: config.http.requestTimeoutMs,
      // How often Node checks the two timeouts above; its default of 30 s let a slowloris request
      // live up to 30 s past them. Walking the open connections once a second costs next to nothing.
      connectionsCheckingInterval: 1000,
      // A request without Host gets the one error body from src/http/error-handler.ts, not Node's empty 400.
      requireHostHeader: false,
    },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 512 },
    return503OnClosing: true,
    frameworkErrors,
    clientErrorHandler,
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.setValidatorCompiler(createValidatorCompiler())
  registerErrorHandling(app, config.bodyLimitBytes)
  registerJsonBodies(app)
  registerAuth(app, new Authenticator(db, deps.bootstrapKeys, logger))
  if (deps.metrics) registerRequestMetrics(app, deps.metrics)

  // One line per request instead of Fastify's two; 5xx are logged with their error by the handler.
  app.addHook('onResponse', (request, reply, done) => {
    if (logger.isLevelEnabled('info')) {
      request.log.info(
        {
          method: request.method,
          url: request.url,
          status: reply.statusCode,
          ms: Math.round(reply.elapsedTime),
        },
        'request',
      )
    }
    done()
  })

  // Before the routes: openapi.yaml is generated from the schemas of the routes registered after it.
  await app.register(swagger, openApiOptions)
  app.addSchema(StdErrorSchema)

  const wakeups = deps.wakeups ?? localWakeups()
  await app.register(metaRoutes, { db })
  await app.register(environmentRoutes, { db, sealer })
  const providers = deps.providers ?? createProviders()
  await app.register(connectionRoutes, { db, sealer, oauthApp: oauthApps(db.kysely, sealer, providers) })
  await app.register(proxyRoutes, { db: db.kysely, sealer, providers })
  await app.register(recordRoutes, {
    db,
    sealer,
    maxPageBytes: config.maxPageBytes,
    pageMemoryBytes: config.pageMemoryBytes,
    readAheadPages: config.readAheadPages,
    metrics: deps.metrics,
  })
  await app.register(syncRoutes, { db: db.kysely, sealer, wakeups })
  await app.register(integrationRoutes, { db: db.kysely, sealer, publicUrl: config.publicUrl })
  await app.register(functionRoutes, { db: db.kysely })
  await app.register(nangoDeployRoutes, { db: db.kysely })
  await app.register(nangoWebhookRoutes, { db: db.kysely, sealer })
  return app
}
