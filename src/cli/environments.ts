import { ENVIRONMENT_NAME, ensureEnvironment, listEnvironments } from '../environments/store.ts'
import { parse } from './args.ts'
import { type CliContext, table, UsageError } from './context.ts'

export const ENVIRONMENTS_USAGE = [
  'environments create NAME                 create an environment (dev and prod always exist)',
  'environments list                        list environments',
]

export async function environmentsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'create': {
      const { positionals } = parse(rest, {}, ['name'])
      const name = positionals[0]!
      if (!ENVIRONMENT_NAME.test(name)) {
        throw new UsageError(
          'NAME must be lower-case letters, digits, "_" or "-" (at most 64, starting alphanumeric)',
        )
      }
      await ctx.withDb(async (db) => {
        await ensureEnvironment(db.kysely, name)
        ctx.io.err(
          `Environment ${name} exists. Its syncs are what is deployed to it: syncstore deploy --env ${name}` +
            ' (or restart serve, which deploys its folder to every environment).',
        )
      })
      return
    }
    case 'list': {
      parse(rest, {})
      await ctx.withDb(async (db) => {
        const envs = await listEnvironments(db.kysely)
        for (const line of table([['ID', 'NAME'], ...envs.map((e) => [String(e.id), e.name])])) {
          ctx.io.out(line)
        }
      })
      return
    }
    default:
      throw new UsageError(`unknown environments command "${sub ?? ''}"; expected create or list`)
  }
}
