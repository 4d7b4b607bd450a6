import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import { sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { type Db, openDatabase } from '../../src/db/connect.ts'
import { MigrationError, migrateToLatest } from '../../src/db/migrate.ts'
import { createLogger } from '../../src/logger.ts'
import { createTestDatabase, testDatabaseKind } from '../helpers/database.ts'
import { withDatabase } from '../helpers/global-setup.ts'

const logger = createLogger('silent')
const cleanups: (() => Promise<unknown>)[] = []
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

async function adminQuery(text: string): Promise<void> {
  const client = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL })
  await client.connect()
  try {
    await client.query(text)
  } finally {
    await client.end()
  }
}

/** A new database with nothing in it: an empty Postgres database, or an empty embedded folder. */
async function emptyDatabase(): Promise<{ open(): Promise<Db> }> {
  if (testDatabaseKind === 'postgres') {
    const name = `syncstore_migrate_${randomBytes(6).toString('hex')}`
    await adminQuery(`CREATE DATABASE ${name}`)
    cleanups.push(() => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
    const url = withDatabase(process.env.TEST_DATABASE_URL!, name)
    return { open: () => track(openDatabase({ kind: 'postgres', url }, { logger, poolMax: 2 })) }
  }
  const dataDir = await tempDir('syncstore-migrate-')
  return { open: () => track(openDatabase({ kind: 'embedded', dataDir }, { logger })) }
}

async function track(opening: Promise<Db>): Promise<Db> {
  const db = await opening
  cleanups.push(() => db.close())
  return db
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  return dir
}

const tableExists = async (db: Db, table: string) =>
  (await sql<{ t: string | null }>`SELECT to_regclass(${table})::text AS t`.execute(db.kysely)).rows[0]!.t !==
  null

const appliedMigrations = async (db: Db) =>
  (await sql<{ name: string }>`SELECT name FROM kysely_migration ORDER BY name`.execute(db.kysely)).rows.map(
    (r) => r.name,
  )

/** The migrations shipped in migrations/, by the names the migrator records. */
async function shippedMigrations(): Promise<string[]> {
  const files = await readdir(new URL('../../migrations/', import.meta.url))
  return files
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort()
}

// Opening an embedded database from nothing takes seconds, more on a busy machine.
describe('migrateToLatest', { timeout: 60_000 }, () => {
  it('applies nothing to an already migrated database', async () => {
    const test = await createTestDatabase()
    cleanups.push(() => test.destroy())
    expect(await migrateToLatest(test.db.kysely)).toEqual([])
    expect(await appliedMigrations(test.db)).toEqual(await shippedMigrations())
  })

  // One empty database for the next two tests, in this order: the failed run must leave it empty.
  let db: Db
  beforeAll(async () => {
    db = await (await emptyDatabase()).open()
  })

  it('names a broken migration and leaves nothing of it behind', async () => {
    const dir = await tempDir('syncstore-broken-')
    await writeFile(
      path.join(dir, '0001_x.sql'),
      [
        'CREATE TABLE half_done (id integer PRIMARY KEY);',
        'INSERT INTO half_done VALUES (1);',
        'SELEC oops;',
      ].join('\n'),
    )
    const failure = migrateToLatest(db.kysely, pathToFileURL(`${dir}/`))
    await expect(failure).rejects.toBeInstanceOf(MigrationError)
    await expect(failure).rejects.toMatchObject({
      migration: '0001_x',
      message: expect.stringContaining('0001_x'),
    })
    expect(await tableExists(db, 'half_done')).toBe(false)
    expect(await appliedMigrations(db)).toEqual([])
  })

  it('applies every shipped migration to an empty database, once (also after a failed run)', async () => {
    expect(await tableExists(db, 'connections')).toBe(false)
    const shipped = await shippedMigrations()
    expect(await migrateToLatest(db.kysely)).toEqual(shipped)
    expect(await migrateToLatest(db.kysely)).toEqual([])
    expect(await appliedMigrations(db)).toEqual(shipped)
  })

  it.skipIf(testDatabaseKind !== 'postgres')(
    'lets three instances migrate one empty database at once, applying each migration once',
    async () => {
      const empty = await emptyDatabase()
      const dbs = await Promise.all([empty.open(), empty.open(), empty.open()])
      const results = await Promise.all(dbs.map((instance) => migrateToLatest(instance.kysely)))
      const shipped = await shippedMigrations()
      expect(results.flat().sort()).toEqual(shipped)
      expect(results.filter((applied) => applied.length > 0)).toHaveLength(1)
      expect(await appliedMigrations(dbs[0]!)).toEqual(shipped)
    },
  )
})
