/**
 * `npm run openapi`: rewrites openapi.yaml from the route schemas. test/http/openapi.test.ts fails
 * while the committed file differs from what the routes generate.
 */
import { writeFile } from 'node:fs/promises'

import { buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { createSealer } from '../src/crypto.ts'
import type { Db } from '../src/db/connect.ts'
import { openApiYaml } from '../src/http/openapi.ts'
import { createLogger } from '../src/logger.ts'

// Registering routes reads no data (only requests do), so the document needs no database.
const noDatabase = {} as Db
const config = loadConfig({ LOG_LEVEL: 'silent' })
const app = await buildApp({
  config,
  db: noDatabase,
  logger: createLogger('silent'),
  sealer: createSealer(null),
  bootstrapKeys: [],
})
await app.ready()
const file = new URL('../openapi.yaml', import.meta.url)
await writeFile(file, openApiYaml(app))
await app.close()
console.log(`wrote ${file.pathname}`)
