import { migrateToLatest } from '../db/migrate.ts'
import { parse } from './args.ts'
import type { CliContext } from './context.ts'

export const MIGRATE_USAGE = ['migrate                                  apply pending migrations and exit']

export async function migrateCommand(args: string[], ctx: CliContext): Promise<void> {
  parse(args, {})
  // withDb would migrate before handing over the connection, leaving nothing to report.
  await ctx.withDb(
    async (db) => {
      const applied = await migrateToLatest(db.kysely)
      ctx.io.err(applied.length ? `Applied ${applied.join(', ')}.` : 'The database is up to date.')
    },
    { migrate: false },
  )
}
