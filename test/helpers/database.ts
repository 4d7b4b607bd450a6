import { randomBytes } from 'node:crypto'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import pg from 'pg'
import { inject } from 'vitest'

import { socketPathFor } from '../../src/cli/forward.ts'
import type { DatabaseTarget } from '../../src/config.ts'
import { type Db, openDatabase } from '../../src/db/connect.ts'
import { acquireEmbeddedLock } from '../../src/db/embedded-lock.ts'
import { createLogger } from '../../src/logger.ts'
import { withDatabase } from './global-setup.ts'

export const testDatabaseKind = (process.env.SYNCSTORE_TEST_DB ?? 'embedded') as DatabaseTarget['kind']

export interface TestDatabase {
  db: Db
  target: DatabaseTarget
  /** Closes the connection and removes the database. */
  destroy(): Promise<void>
}

/**
 * A fresh, migrated database for one test file: a copy of the template folder (embedded) or a
 * `CREATE DATABASE ... TEMPLATE` clone (Postgres).
 */
export async function createTestDatabase(options: { poolMax?: number } = {}): Promise<TestDatabase> {
  const template = inject('template')
  const logger = createLogger('silent')
  if (testDatabaseKind === 'postgres') {
    const base = process.env.TEST_DATABASE_URL!
    const name = `syncstore_test_${randomBytes(6).toString('hex')}`
    await adminQuery(base, `CREATE DATABASE ${name} TEMPLATE ${template}`)
    const target = { kind: 'postgres', url: withDatabase(base, name) } as const
    const db = await openDatabase(target, { logger, poolMax: options.poolMax ?? 10 })
    return {
      db,
      target,
      async destroy() {
        await db.close()
        await adminQuery(base, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      },
    }
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-test-'))
  await cp(template, dir, { recursive: true })
  const target = { kind: 'embedded', dataDir: dir } as const
  const db = await openDatabase(target, { logger })
  return {
    db,
    target,
    async destroy() {
      await db.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** A copy of the template that no process has open, for tests that start the real server. */
async function createTestDataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-serve-'))
  const dataDir = path.join(dir, 'data')
  await cp(inject('template'), dataDir, { recursive: true })
  return dataDir
}

async function adminQuery(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(text)
  } finally {
    await client.end()
  }
}

/** A database for a child process (`bin/syncstore.js`), which opens it itself. */
export interface ProcessDatabase {
  kind: DatabaseTarget['kind']
  target: DatabaseTarget
  /** `{SYNCSTORE_DATA_DIR}` or `{DATABASE_URL}`: what points a child process at it. */
  env: Record<string, string>
  /** Postgres: the database name, to find its sessions in pg_stat_activity. */
  name?: string
  /** Opens it from the test process; embedded: under the lock, so only while no child holds it. */
  withDb<T>(fn: (db: Db) => Promise<T>): Promise<T>
  /** Removes it (children must have exited or been killed first). */
  destroy(): Promise<void>
}

/**
 * A fresh database no process has open: a copy of the migrated template, or with `empty` a database
 * that has never been migrated (embedded: a folder that does not exist yet, as on a first start).
 */
export async function createProcessDatabase(
  options: { kind?: DatabaseTarget['kind']; empty?: boolean } = {},
): Promise<ProcessDatabase> {
  const kind = options.kind ?? testDatabaseKind
  const logger = createLogger('silent')
  if (kind === 'postgres') {
    const base = process.env.TEST_DATABASE_URL!
    const name = `syncstore_test_${randomBytes(6).toString('hex')}`
    await adminQuery(base, `CREATE DATABASE ${name}${options.empty ? '' : ` TEMPLATE ${inject('template')}`}`)
    const target = { kind, url: withDatabase(base, name) } as const
    return {
      kind,
      target,
      name,
      env: { DATABASE_URL: target.url },
      async withDb(fn) {
        const db = await openDatabase(target, { logger, poolMax: 1, applicationName: 'syncstore-test' })
        try {
          return await fn(db)
        } finally {
          await db.close()
        }
      },
      destroy: () => adminQuery(base, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
    }
  }
  const dataDir = options.empty
    ? path.join(await mkdtemp(path.join(os.tmpdir(), 'syncstore-serve-')), 'data')
    : await createTestDataDir()
  const target = { kind, dataDir } as const
  return {
    kind,
    target,
    env: { SYNCSTORE_DATA_DIR: dataDir },
    async withDb(fn) {
      const lock = await acquireEmbeddedLock(dataDir, { pid: process.pid })
      try {
        const db = await openDatabase(target, { logger })
        try {
          return await fn(db)
        } finally {
          await db.close()
        }
      } finally {
        await lock.release()
      }
    },
    async destroy() {
      // A killed server leaves its command socket behind (a clean one removes it).
      await rm(socketPathFor(dataDir), { force: true })
      await rm(path.dirname(dataDir), { recursive: true, force: true })
    },
  }
}

/** Runs one statement on the Postgres server of TEST_DATABASE_URL (its maintenance database). */
export async function adminRows<R>(text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL })
  await client.connect()
  try {
    return (await client.query(text, values)).rows as R[]
  } finally {
    await client.end()
  }
}
