import { FULL_ACCESS, isScope } from '../keys/scopes.ts'
import { createKey, listKeys, revokeKey } from '../keys/store.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, table, UsageError } from './context.ts'

export const KEYS_USAGE = [
  'keys create [--env ENV] [--scopes a,b]   print a new secret key (once); default scope environment:*',
  'keys list [--env ENV] [--json]           list keys (never their secrets)',
  'keys revoke ID                           revoke a key',
]

export async function keysCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'create': {
      const { values } = parse(rest, { ...envOption, scopes: { type: 'string' } })
      const scopes = values.scopes ? values.scopes.split(',').map((s) => s.trim()) : [...FULL_ACCESS]
      const unknown = scopes.filter((s) => !isScope(s))
      if (unknown.length > 0 || scopes.length === 0) {
        throw new UsageError(`unknown scope(s): ${unknown.join(', ') || '(none given)'}`)
      }
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const { id, secret } = await createKey(db.kysely, env.id, scopes)
        ctx.io.err(`Created key ${id} for environment ${env.name} with scopes ${scopes.join(',')}.`)
        ctx.io.err('The secret below is shown once; store it now.')
        ctx.io.out(secret)
      })
      return
    }
    case 'list': {
      const { values } = parse(rest, { ...envOption, json: { type: 'boolean', default: false } })
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const keys = await listKeys(db.kysely, env.id)
        if (values.json) return ctx.io.out(JSON.stringify(keys))
        if (keys.length === 0) return ctx.io.err(`No keys in environment ${env.name}.`)
        const rows = keys.map((k) => [
          k.id,
          `${k.keyPrefix}…`,
          k.revokedAt ? 'revoked' : 'active',
          k.scopes.join(','),
          k.createdAt.toISOString(),
          k.lastUsedAt?.toISOString() ?? 'never',
        ])
        for (const line of table([['ID', 'KEY', 'STATUS', 'SCOPES', 'CREATED', 'LAST USED'], ...rows])) {
          ctx.io.out(line)
        }
      })
      return
    }
    case 'revoke': {
      const { positionals } = parse(rest, {}, ['id'])
      const id = positionals[0]!
      if (!/^[0-9a-f-]{36}$/i.test(id)) {
        throw new UsageError(`"${id}" is not a key id (see: syncstore keys list)`)
      }
      await ctx.withDb(async (db) => {
        if (!(await revokeKey(db.kysely, id))) throw new CommandError(`no active key with id ${id}`)
        ctx.io.err(`Revoked key ${id}.`)
      })
      return
    }
    default:
      throw new UsageError(`unknown keys command "${sub ?? ''}"; expected create, list or revoke`)
  }
}
