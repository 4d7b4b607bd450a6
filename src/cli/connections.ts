import type { Static } from 'typebox'

import { PostConnectionBody } from '../connections/schemas.ts'
import { importConnection } from '../connections/service.ts'
import { deleteConnection, listConnections } from '../connections/store.ts'
import { validateJson } from '../validation.ts'
import { envOption, parse, parseJsonArgument, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, table, UsageError } from './context.ts'

export const CONNECTIONS_USAGE = [
  'connections create --integration PCK --connection-id ID [--env ENV] [--metadata JSON] [--credentials JSON]',
  'connections list [--env ENV] [--integration PCK] [--json]',
  'connections delete --integration PCK --connection-id ID [--env ENV]',
]

const target = {
  ...envOption,
  integration: { type: 'string' },
  'connection-id': { type: 'string' },
} as const

export async function connectionsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'create': {
      const { values } = parse(rest, {
        ...target,
        metadata: { type: 'string' },
        credentials: { type: 'string' },
      })
      // Checked with the same schema as POST /connections, so both accept exactly the same input.
      const body = {
        provider_config_key: required(values.integration, 'integration'),
        connection_id: required(values['connection-id'], 'connection-id'),
        ...(values.metadata !== undefined && { metadata: parseJsonArgument('metadata', values.metadata) }),
        ...(values.credentials !== undefined && {
          credentials: parseJsonArgument('credentials', values.credentials),
        }),
      }
      const issues = validateJson(PostConnectionBody, body)
      if (issues[0]) {
        const { path, message } = issues[0]
        throw new UsageError(`${path.length ? `${path.join('.')}: ` : ''}${message}`)
      }
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const { connection, created } = await importConnection(
          db.kysely,
          ctx.sealer,
          env.id,
          // Valid: checked against the same schema just above.
          body as Static<typeof PostConnectionBody>,
        )
        ctx.io.err(
          `${created ? 'Created' : 'Replaced'} connection ${connection.connectionId} of integration ` +
            `${connection.providerConfigKey} in environment ${env.name}.`,
        )
      })
      return
    }
    case 'list': {
      const { values } = parse(rest, {
        ...envOption,
        integration: { type: 'string' },
        json: { type: 'boolean', default: false },
      })
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const rows = await listConnections(db.kysely, ctx.sealer, env.id, {
          integrationIds: values.integration ? [values.integration] : undefined,
          limit: 10_000,
          offset: 0,
        })
        if (values.json) return ctx.io.out(JSON.stringify(rows))
        if (rows.length === 0) return ctx.io.err(`No connections in environment ${env.name}.`)
        const lines = rows.map((c) => [c.providerConfigKey, c.connectionId, c.created])
        for (const line of table([['INTEGRATION', 'CONNECTION', 'CREATED'], ...lines])) ctx.io.out(line)
      })
      return
    }
    case 'delete': {
      const { values } = parse(rest, target)
      const pck = required(values.integration, 'integration')
      const id = required(values['connection-id'], 'connection-id')
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        if (!(await deleteConnection(db.kysely, env.id, pck, id))) {
          throw new CommandError(`no connection ${id} of integration ${pck} in environment ${env.name}`)
        }
        ctx.io.err(`Deleted connection ${id} of integration ${pck} and all its records.`)
      })
      return
    }
    default:
      throw new UsageError(`unknown connections command "${sub ?? ''}"; expected create, list or delete`)
  }
}

function required(value: string | undefined, name: string): string {
  if (value === undefined) throw new UsageError(`--${name} is required`)
  return value
}
