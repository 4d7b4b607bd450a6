import type { Static } from 'typebox'

import type { Db } from '../db/connect.ts'
import { defaultDeployer } from '../deployments/deploy.ts'
import { HttpError } from '../errors.ts'
import { PatchIntegrationBody, PostIntegrationBody } from '../integrations/schemas.ts'
import { changeIntegration, createIntegration, deleteIntegration } from '../integrations/service.ts'
import { listIntegrations, readIntegrationCredentials } from '../integrations/store.ts'
import { validateJson } from '../validation.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, table, UsageError } from './context.ts'

export const INTEGRATIONS_USAGE = [
  'integrations create KEY --provider P [--display-name N] [--client-id ID --client-secret S] [--scopes a,b]',
  '  [--type OAUTH2|OAUTH1|TBA] [--env ENV]  create an integration (as POST /integrations)',
  'integrations list [--env ENV] [--json]   list integrations (never their credentials)',
  'integrations update KEY [--display-name N] [--new-key K] [--client-id ID] [--client-secret S]',
  '  [--scopes a,b] [--type T] [--env ENV]  change an integration; credential options change those fields',
  'integrations delete KEY [--env ENV]      delete an integration, its connections and deployed syncs',
]

const credentialOptions = {
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  scopes: { type: 'string' },
  type: { type: 'string' },
} as const

type CredentialValues = { [K in keyof typeof credentialOptions]?: string | undefined }

/** The credentials the options name, over `base` (the stored ones, for update); undefined for none. */
function credentialsOf(values: CredentialValues, base: Record<string, unknown> | null = null) {
  const given = {
    ...(values.type !== undefined && { type: values.type }),
    ...(values['client-id'] !== undefined && { client_id: values['client-id'] }),
    ...(values['client-secret'] !== undefined && { client_secret: values['client-secret'] }),
    ...(values.scopes !== undefined && { scopes: values.scopes }),
  }
  if (Object.keys(given).length === 0) return undefined
  return { type: 'OAUTH2', ...base, ...given }
}

/** Checked with the route's own schema, so the CLI and the API accept exactly the same input. */
function check(schema: object, body: Record<string, unknown>): void {
  const issue = validateJson(schema, body)[0]
  if (!issue) return
  const field = issue.path.length ? `${issue.path.join('.')}: ` : ''
  throw new UsageError(`${field}${issue.message}`)
}

/** The service's client errors, said as the command's failure. */
async function run<T>(ctx: CliContext, fn: (db: Db) => Promise<T>): Promise<T> {
  return ctx.withDb(async (db) => {
    try {
      return await fn(db)
    } catch (err) {
      if (err instanceof HttpError && err.statusCode < 500) throw new CommandError(err.message)
      throw err
    }
  })
}

export async function integrationsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'create': {
      const { values, positionals } = parse(
        rest,
        {
          ...envOption,
          provider: { type: 'string' },
          'display-name': { type: 'string' },
          ...credentialOptions,
        },
        ['key'],
      )
      if (values.provider === undefined) throw new UsageError('--provider is required')
      const credentials = credentialsOf(values)
      const body = {
        unique_key: positionals[0]!,
        provider: values.provider,
        ...(values['display-name'] !== undefined && { display_name: values['display-name'] }),
        ...(credentials && { credentials }),
      }
      check(PostIntegrationBody, body)
      const valid = body as Static<typeof PostIntegrationBody>
      await run(ctx, async (db) => {
        const env = await requireEnvironment(db, values.env)
        const integration = await createIntegration(db.kysely, ctx.sealer, env.id, {
          uniqueKey: valid.unique_key,
          provider: valid.provider,
          displayName: valid.display_name ?? valid.provider,
          credentials: valid.credentials,
        })
        ctx.io.err(
          `Created integration ${integration.uniqueKey} (provider ${integration.provider}) in environment ` +
            `${env.name}${credentials ? ', with its credentials' : ''}.`,
        )
      })
      return
    }
    case 'list': {
      const { values } = parse(rest, { ...envOption, json: { type: 'boolean', default: false } })
      await run(ctx, async (db) => {
        const env = await requireEnvironment(db, values.env)
        const rows = await listIntegrations(db.kysely, env.id)
        if (values.json) return ctx.io.out(JSON.stringify(rows))
        if (rows.length === 0) return ctx.io.err(`No integrations in environment ${env.name}.`)
        const lines = rows.map((i) => [
          i.uniqueKey,
          i.provider,
          i.displayName,
          i.hasCredentials ? 'yes' : 'no',
          i.createdBy,
        ])
        const header = ['KEY', 'PROVIDER', 'DISPLAY NAME', 'CREDENTIALS', 'CREATED BY']
        for (const line of table([header, ...lines])) ctx.io.out(line)
      })
      return
    }
    case 'update': {
      const { values, positionals } = parse(
        rest,
        {
          ...envOption,
          'display-name': { type: 'string' },
          'new-key': { type: 'string' },
          ...credentialOptions,
        },
        ['key'],
      )
      const key = positionals[0]!
      await run(ctx, async (db) => {
        const env = await requireEnvironment(db, values.env)
        // Credential options change those fields of the stored credentials (the API replaces them whole).
        const stored = await readIntegrationCredentials(db.kysely, ctx.sealer, env.id, key)
        const credentials = credentialsOf(values, stored)
        const body = {
          ...(values['new-key'] !== undefined && { unique_key: values['new-key'] }),
          ...(values['display-name'] !== undefined && { display_name: values['display-name'] }),
          ...(credentials && { credentials }),
        }
        if (Object.keys(body).length === 0) throw new UsageError('nothing to change')
        check(PatchIntegrationBody, body)
        const valid = body as Static<typeof PatchIntegrationBody>
        const integration = await changeIntegration(db.kysely, ctx.sealer, env.id, key, {
          uniqueKey: valid.unique_key,
          displayName: valid.display_name,
          credentials: valid.credentials,
        })
        ctx.io.err(`Updated integration ${integration.uniqueKey} in environment ${env.name}.`)
      })
      return
    }
    case 'delete': {
      const { values, positionals } = parse(rest, envOption, ['key'])
      const key = positionals[0]!
      await run(ctx, async (db) => {
        const env = await requireEnvironment(db, values.env)
        const { connections, syncs } = await deleteIntegration(db.kysely, env.id, key, {
          deployedBy: defaultDeployer(),
          source: `syncstore integrations delete ${key}`,
        })
        ctx.io.err(
          `Deleted integration ${key} from environment ${env.name}, with ${connections} connection(s) ` +
            `and ${syncs.length} deployed sync(s).`,
        )
      })
      return
    }
    default:
      throw new UsageError(
        `unknown integrations command "${sub ?? ''}"; expected create, list, update or delete`,
      )
  }
}
