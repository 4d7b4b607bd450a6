import { listVariables, setVariable, unsetVariable } from '../environments/variables-store.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, table, UsageError } from './context.ts'

export const ENV_VARS_USAGE = [
  'env-vars set NAME VALUE [--env ENV]      set an environment variable',
  'env-vars list [--env ENV] [--json]       list environment variables',
  'env-vars unset NAME [--env ENV]          remove an environment variable',
]

const NAME = /^[^\0]{1,255}$/

export async function envVarsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'set': {
      const { values, positionals } = parse(rest, envOption, ['name', 'value'])
      const [name, value] = positionals as [string, string]
      if (!NAME.test(name)) throw new UsageError('NAME must be 1 to 255 characters')
      if (value.includes('\0')) throw new UsageError('VALUE must not contain NUL characters')
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        await setVariable(db.kysely, ctx.sealer, env.id, name, value)
        ctx.io.err(`Set ${name} in environment ${env.name}.`)
      })
      return
    }
    case 'list': {
      const { values } = parse(rest, { ...envOption, json: { type: 'boolean', default: false } })
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const variables = await listVariables(db.kysely, ctx.sealer, env.id)
        if (values.json) return ctx.io.out(JSON.stringify(variables))
        if (variables.length === 0) return ctx.io.err(`No variables in environment ${env.name}.`)
        for (const line of table([['NAME', 'VALUE'], ...variables.map((v) => [v.name, v.value])])) {
          ctx.io.out(line)
        }
      })
      return
    }
    case 'unset': {
      const { values, positionals } = parse(rest, envOption, ['name'])
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        if (!(await unsetVariable(db.kysely, env.id, positionals[0]!))) {
          throw new CommandError(`no variable ${positionals[0]} in environment ${env.name}`)
        }
        ctx.io.err(`Removed ${positionals[0]} from environment ${env.name}.`)
      })
      return
    }
    default:
      throw new UsageError(`unknown env-vars command "${sub ?? ''}"; expected set, list or unset`)
  }
}
