import { findRunOutcome, listRuns } from '../runs/history.ts'
import { listRunLogs } from '../runs/logs.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, table, UsageError } from './context.ts'

export const RUNS_USAGE = [
  'runs list [--env ENV] [--integration PCK] [--connection-id ID] [--sync NAME] [--limit N] [--json]',
  '                                         recent sync runs, newest first',
  'runs logs RUN_ID [--json]                what a run logged (nango.log) and why it failed',
]

export async function runsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'list': {
      const { values } = parse(rest, {
        ...envOption,
        integration: { type: 'string' },
        'connection-id': { type: 'string' },
        sync: { type: 'string' },
        limit: { type: 'string', default: '20' },
        json: { type: 'boolean', default: false },
      })
      const limit = Number(values.limit)
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
        throw new UsageError('--limit must be 1 to 1000')
      }
      await ctx.withDb(async (db) => {
        const env = await requireEnvironment(db, values.env)
        const runs = await listRuns(db.kysely, {
          environmentId: env.id,
          providerConfigKey: values.integration,
          connectionId: values['connection-id'],
          syncName: values.sync,
          limit,
        })
        if (values.json) return ctx.io.out(JSON.stringify(runs))
        if (runs.length === 0) return ctx.io.err(`No runs in environment ${env.name}.`)
        const rows = runs.map((r) => [
          String(r.id),
          `${r.provider_config_key}/${r.connection_id}`,
          `${r.name}${r.variant === 'base' ? '' : `::${r.variant}`}`,
          r.state,
          r.reason,
          r.created_at.toISOString(),
          r.duration ?? '',
          r.error ?? (r.result ? JSON.stringify(r.result) : ''),
        ])
        for (const line of table([
          ['RUN', 'CONNECTION', 'SYNC', 'STATE', 'WHY', 'CREATED', 'TOOK', 'RESULT'],
          ...rows,
        ])) {
          ctx.io.out(line)
        }
      })
      return
    }
    case 'logs': {
      const { values, positionals } = parse(rest, { json: { type: 'boolean', default: false } }, ['run-id'])
      const id = Number(positionals[0])
      // Safe, not just whole: 1e20 is an integer to JS but no bigint Postgres could compare.
      if (!Number.isSafeInteger(id) || id < 1) {
        throw new UsageError('RUN_ID must be a run number (see: syncstore runs list)')
      }
      await ctx.withDb(async (db) => {
        const run = await findRunOutcome(db.kysely, id)
        if (!run) throw new CommandError(`no run ${id}`)
        const lines = await listRunLogs(db.kysely, id)
        if (values.json) {
          return ctx.io.out(JSON.stringify({ state: run.state, error: run.error, logs: lines }))
        }
        for (const l of lines) {
          const payload = l.payload === null ? '' : ` ${JSON.stringify(l.payload)}`
          ctx.io.out(`${l.createdAt.toISOString()} ${l.level.toUpperCase().padEnd(5)} ${l.message}${payload}`)
        }
        ctx.io.err(`Run ${id}: ${run.state}${run.error ? ` (${run.error})` : ''}`)
      })
      return
    }
    default:
      throw new UsageError(`unknown runs command "${sub ?? ''}"; expected list or logs`)
  }
}
