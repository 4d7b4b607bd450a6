import type { FastifyInstance } from 'fastify'

import { buildApp } from '../../src/app.ts'
import { type Config, loadConfig } from '../../src/config.ts'
import { createSealer, type Sealer } from '../../src/crypto.ts'
import type { Db } from '../../src/db/connect.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { resolveBootstrapKeys } from '../../src/keys/bootstrap.ts'
import { createKey } from '../../src/keys/store.ts'
import { createLogger } from '../../src/logger.ts'
import { Metrics } from '../../src/metrics/metrics.ts'
import { createTestDatabase, type TestDatabase } from './database.ts'

export interface TestApp {
  app: FastifyInstance
  db: Db
  database: TestDatabase
  config: Config
  sealer: Sealer
  /** The server's metrics, when started with `metrics: true` */
  metrics: Metrics | undefined
  /** http://127.0.0.1:<port> when started with `listen: true` */
  url: string
  /** Full-access keys */
  keys: { dev: string; prod: string }
  envIds: { dev: number; prod: number }
  /** A key for `env` with exactly these scopes. */
  keyWith(scopes: string[], env?: 'dev' | 'prod'): Promise<string>
  close(): Promise<void>
}

/**
 * The production app (src/app.ts) on a fresh test database. `env` holds extra configuration
 * variables, as the process environment would.
 */
export async function startTestApp(
  options: { env?: Record<string, string>; listen?: boolean; metrics?: boolean } = {},
): Promise<TestApp> {
  const database = await createTestDatabase()
  const { db } = database
  const config = loadConfig({ LOG_LEVEL: 'silent', ...options.env })
  const sealer = createSealer(config.encryptionKey)
  const bootstrapKeys = await resolveBootstrapKeys(db.kysely, config)
  const logger = createLogger('silent')
  const metrics = options.metrics ? new Metrics(db, logger) : undefined
  const app = await buildApp({ config, db, logger, sealer, bootstrapKeys, metrics })
  let url = ''
  if (options.listen) url = await app.listen({ port: 0, host: '127.0.0.1' })
  const dev = await ensureEnvironment(db.kysely, 'dev')
  const prod = await ensureEnvironment(db.kysely, 'prod')
  const envIds = { dev: dev.id, prod: prod.id }
  const keyWith = async (scopes: string[], env: 'dev' | 'prod' = 'dev') =>
    (await createKey(db.kysely, envIds[env], scopes)).secret
  return {
    app,
    db,
    database,
    config,
    sealer,
    metrics,
    url,
    envIds,
    keys: { dev: await keyWith(['environment:*']), prod: await keyWith(['environment:*'], 'prod') },
    keyWith,
    async close() {
      await app.close()
      await database.destroy()
    },
  }
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` })
