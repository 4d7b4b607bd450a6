import { getWebhook, listDeliveries, removeWebhook, retryFailed, setWebhook } from '../webhooks/store.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, table, UsageError } from './context.ts'

export const WEBHOOKS_USAGE = [
  'webhooks set URL [--env ENV] [--secret S]  send sync webhooks to URL (prints the signing secret)',
  'webhooks show [--env ENV]                show the URL and signing secret',
  'webhooks remove [--env ENV]              stop sending webhooks',
  'webhooks list [--env ENV] [--state pending|delivered|failed] [--limit N] [--json]',
  'webhooks retry [--env ENV]               queue every failed delivery again',
]

export async function webhooksCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'set': {
      const { values, positionals } = parse(rest, { ...envOption, secret: { type: 'string' } }, ['url'])
      const url = positionals[0]!
      if (!/^https?:\/\/[^\s]+$/.test(url) || !URL.canParse(url)) {
        throw new UsageError('URL must be an http(s) URL')
      }
      if (values.secret !== undefined && values.secret.length < 16) {
        throw new UsageError('--secret must have at least 16 characters')
      }
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const settings = await setWebhook(db.kysely, ctx.sealer, env.id, url, values.secret)
        ctx.io.err(
          `Sync webhooks of environment ${env.name} go to ${url}, signed (X-Nango-Hmac-Sha256) with:`,
        )
        ctx.io.out(settings.secret)
      })
      return
    }
    case 'show': {
      const { values } = parse(rest, envOption)
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const settings = await getWebhook(db.kysely, ctx.sealer, env.id)
        if (!settings) {
          throw new CommandError(`environment ${env.name} has no webhook URL (see: syncstore webhooks set)`)
        }
        ctx.io.out(`url     ${settings.url}`)
        ctx.io.out(`secret  ${settings.secret}`)
      })
      return
    }
    case 'remove': {
      const { values } = parse(rest, envOption)
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        if (!(await removeWebhook(db.kysely, env.id))) {
          throw new CommandError(`environment ${env.name} has no webhook URL`)
        }
        ctx.io.err(`Environment ${env.name} no longer sends webhooks.`)
      })
      return
    }
    case 'list': {
      const { values } = parse(rest, {
        ...envOption,
        state: { type: 'string' },
        limit: { type: 'string', default: '50' },
        json: { type: 'boolean', default: false },
      })
      const state = values.state as 'pending' | 'delivered' | 'failed' | undefined
      if (state && !['pending', 'delivered', 'failed'].includes(state)) {
        throw new UsageError('--state must be pending, delivered or failed')
      }
      const limit = Number(values.limit)
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
        throw new UsageError('--limit must be 1 to 1000')
      }
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const deliveries = await listDeliveries(db.kysely, env.id, { state, limit })
        if (values.json) return ctx.io.out(JSON.stringify(deliveries))
        if (deliveries.length === 0) return ctx.io.err(`No webhook deliveries in environment ${env.name}.`)
        const rows = deliveries.map((d) => [
          String(d.id),
          String(d.runId ?? ''),
          d.state,
          String(d.attempts),
          d.lastStatus === null ? '' : String(d.lastStatus),
          d.createdAt.toISOString(),
          d.lastError ?? '',
        ])
        for (const line of table([
          ['ID', 'RUN', 'STATE', 'ATTEMPTS', 'STATUS', 'CREATED', 'LAST ERROR'],
          ...rows,
        ])) {
          ctx.io.out(line)
        }
      })
      return
    }
    case 'retry': {
      const { values } = parse(rest, envOption)
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        ctx.io.err(`Queued ${await retryFailed(db.kysely, env.id)} failed deliveries again.`)
      })
      return
    }
    default:
      throw new UsageError(
        `unknown webhooks command "${sub ?? ''}"; expected set, show, remove, list or retry`,
      )
  }
}
