import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import pg from 'pg'
import type { TestProject } from 'vitest/node'

import { openDatabase } from '../../src/db/connect.ts'
import { migrateToLatest } from '../../src/db/migrate.ts'
import { createLogger } from '../../src/logger.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    /** embedded: a migrated data folder to copy; postgres: a migrated template database name */
    template: string
  }
}

/** Builds one migrated template per run; each test file clones it (test/helpers/database.ts). */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const logger = createLogger('silent')
  if (project.config.env?.SYNCSTORE_TEST_DB === 'postgres') {
    const url = process.env.TEST_DATABASE_URL!
    const name = `syncstore_template_${randomBytes(4).toString('hex')}`
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
    const db = await openDatabase({ kind: 'postgres', url: withDatabase(url, name) }, { logger, poolMax: 1 })
    await migrateToLatest(db.kysely)
    await db.close()
    project.provide('template', name)
    return async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await admin.end()
    }
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-template-'))
  const db = await openDatabase({ kind: 'embedded', dataDir: dir }, { logger })
  await migrateToLatest(db.kysely)
  await db.close()
  project.provide('template', dir)
  return () => rm(dir, { recursive: true, force: true })
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}
