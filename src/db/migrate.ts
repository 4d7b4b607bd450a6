import { readdir, readFile } from 'node:fs/promises'

import { postgreSplitterOptions, splitQuery } from 'dbgate-query-splitter'
import { type Kysely, sql } from 'kysely'
import { type Migration, type MigrationProvider, Migrator } from 'kysely/migration'

import { PACKAGE_ROOT } from '../paths.ts'
import type { Database } from './database.ts'

const MIGRATIONS_DIR = new URL('migrations/', PACKAGE_ROOT)

/**
 * Forward-only migrations: `migrations/NNNN_name.sql`, applied in name order. Kysely's Migrator
 * records them, takes an advisory lock (so several instances can start at once) and runs all
 * pending files in one transaction. Each file is split into statements because the embedded
 * database only accepts one statement per query.
 */
class SqlFileProvider implements MigrationProvider {
  constructor(private readonly dir: URL) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await readdir(this.dir)).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort()
    const migrations: Record<string, Migration> = {}
    for (const file of files) {
      const text = await readFile(new URL(file, this.dir), 'utf8')
      const statements = splitQuery(text, postgreSplitterOptions).map((s) =>
        typeof s === 'string' ? s : s.text,
      )
      migrations[file.replace(/\.sql$/, '')] = {
        up: async (db) => {
          for (const statement of statements) await sql.raw(statement).execute(db)
        },
      }
    }
    return migrations
  }
}

export class MigrationError extends Error {
  constructor(
    readonly migration: string | undefined,
    options: { cause: unknown },
  ) {
    super(`Migration ${migration ?? '(unknown)'} failed: ${errorMessage(options.cause)}`, options)
    this.name = 'MigrationError'
  }
}

/** Applies pending migrations; returns the names applied. Throws MigrationError on failure. */
export async function migrateToLatest(db: Kysely<Database>, dir: URL = MIGRATIONS_DIR): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new SqlFileProvider(dir) })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error) {
    const failed = results.find((r) => r.status === 'Error')
    throw new MigrationError(failed?.migrationName, { cause: error })
  }
  return results.filter((r) => r.status === 'Success').map((r) => r.migrationName)
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
