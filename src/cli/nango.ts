import { NangoApiError, nangoClient } from '../nango/client.ts'
import { RECONCILE_LEASE_MS, reconcileClaimed } from '../nango/reconcile.ts'
import { deletePairing, pairingStatuses, savePairing } from '../nango/store.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, UsageError } from './context.ts'

export const NANGO_USAGE = [
  'nango pair --url URL --secret-key KEY [--webhook-secret S] [--env ENV]',
  '                                         take connections from a Nango instance (checks the key,',
  '                                         then reconciles); its webhooks go to /webhooks/nango/ENV',
  'nango unpair [--env ENV]',
  'nango status [--env ENV] [--json]        the pairing, its last reconcile and last webhook',
]

function nangoUrl(value: string | undefined): string {
  if (value === undefined) throw new UsageError('--url is required')
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new UsageError(`--url is not a URL: ${value}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--url must be http:// or https:// (got ${url.protocol})`)
  }
  return value.replace(/\/+$/, '')
}

export async function nangoCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'pair': {
      const { values } = parse(rest, {
        ...envOption,
        url: { type: 'string' },
        'secret-key': { type: 'string' },
        'webhook-secret': { type: 'string' },
      })
      const url = nangoUrl(values.url)
      const secretKey = values['secret-key']
      if (!secretKey) throw new UsageError('--secret-key is required')
      const webhookSecret = values['webhook-secret']
      if (webhookSecret === '') throw new UsageError('--webhook-secret must not be empty')
      // Checked before anything is saved: a pairing that cannot work is never stored.
      try {
        await nangoClient({ url, secretKey }).checkKey()
      } catch (err) {
        if (err instanceof NangoApiError) throw new CommandError(`cannot pair: ${err.message}`)
        throw err
      }
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        await savePairing(
          db.kysely,
          ctx.sealer,
          { environmentId: env.id, url, secretKey, webhookSecret: webhookSecret ?? null },
          { leaseMs: RECONCILE_LEASE_MS, intervalMs: ctx.config.nango.reconcileMs },
        )
        ctx.io.err(`Paired environment ${env.name} with Nango at ${url}.`)
        ctx.io.err(`Nango's webhook URL: <this server>/webhooks/nango/${env.name}`)
        const outcome = await reconcileClaimed(db.kysely, ctx.sealer, env.id)
        const { listed, added } = outcome.counts
        if (outcome.error) throw new CommandError(`paired, but the first reconcile failed: ${outcome.error}`)
        ctx.io.err(`First reconcile: ${listed} connection(s) in Nango, ${added} added.`)
      })
      return
    }
    case 'unpair': {
      const { values } = parse(rest, envOption)
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        if (!(await deletePairing(db.kysely, env.id))) {
          throw new CommandError(`environment ${env.name} is not paired with Nango`)
        }
        ctx.io.err(`Unpaired environment ${env.name}; its connections and syncs stay as they are.`)
      })
      return
    }
    case 'status': {
      const { values } = parse(rest, {
        env: { type: 'string' },
        json: { type: 'boolean', default: false },
      })
      await ctx.withDb(async (db) => {
        const env = values.env === undefined ? undefined : await requireEnvironment(db, values.env)
        const statuses = await pairingStatuses(db.kysely, env?.id)
        if (values.json) return ctx.io.out(JSON.stringify(statuses))
        if (statuses.length === 0) {
          return ctx.io.err(`No environment${env ? ` ${env.name}` : ''} is paired with Nango.`)
        }
        for (const s of statuses) {
          ctx.io.out(`${s.environment}: paired with ${s.url} since ${s.pairedAt.toISOString()}`)
          const r = s.lastReconcile
          const counts = r?.counts
            ? ` (listed ${r.counts.listed}, added ${r.counts.added}, deleted ${r.counts.deleted}, kept ${r.counts.kept})`
            : ''
          ctx.io.out(
            r
              ? `  last reconcile: ${r.at.toISOString()} ${r.outcome}${counts}${r.error ? `: ${r.error}` : ''}`
              : '  last reconcile: never',
          )
          const w = s.lastWebhook
          ctx.io.out(w ? `  last webhook: ${w.at.toISOString()} ${w.summary ?? ''}` : '  last webhook: never')
        }
      })
      return
    }
    default:
      throw new UsageError(`unknown nango command "${sub ?? ''}" (pair, unpair, status)`)
  }
}
