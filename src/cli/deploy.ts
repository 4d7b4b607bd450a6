import path from 'node:path'

import { DeployError, deployFolders, type DeployReport } from '../deployments/deploy.ts'
import { listDeployments } from '../deployments/store.ts'
import { parse } from './args.ts'
import { type CliContext, CommandError, table, UsageError } from './context.ts'

export const DEPLOY_USAGE = [
  'deploy [DIR] [--env ENV]... [--strict]   bundle, check and store the syncs in DIR (default',
  '                                         SYNCSTORE_INTEGRATIONS_DIR or ./integrations) for every',
  '                                         environment, or those named; --strict: all or nothing',
]
export const DEPLOYMENTS_USAGE = [
  'deployments list [--env ENV]... [--limit N]  what was deployed, newest first',
]

export async function deployCommand(args: string[], ctx: CliContext): Promise<void> {
  const { positionals, values } = parse(
    args,
    { env: { type: 'string', multiple: true }, strict: { type: 'boolean', default: false } },
    ['dir?'],
  )
  const dir = path.resolve(ctx.cwd, positionals[0] ?? ctx.config.integrationsDirs.at(-1)!)
  const report = await ctx.withDb(async (db) => {
    try {
      return await deployFolders(db.kysely, [dir], {
        environments: values.env,
        strict: values.strict,
        source: dir,
      })
    } catch (err) {
      if (!(err instanceof DeployError)) throw err
      printRefused(ctx, err.refused)
      throw new CommandError(err.message)
    }
  })
  printReport(ctx, report)
  if (report.refused.length > 0) {
    throw new CommandError(`${report.refused.length} file(s) refused; everything else was deployed`)
  }
}

function printReport(ctx: CliContext, report: DeployReport): void {
  for (const env of report.environments) {
    const changes = [
      ...env.added.map((s) => ['added', s]),
      ...env.changed.map((s) => ['changed', s]),
      ...env.removed.map((s) => ['removed', s]),
    ]
    ctx.io.out(
      `${env.environment}: ` +
        (env.deploymentId === null ? 'nothing changed' : `deployment ${env.deploymentId}`) +
        ` (${env.unchanged} unchanged)`,
    )
    for (const line of table(changes)) ctx.io.out(`  ${line}`)
  }
  printRefused(ctx, report.refused)
}

function printRefused(ctx: CliContext, refused: readonly { file: string; reason: string }[]): void {
  for (const r of refused) ctx.io.err(`refused  ${path.relative(ctx.cwd, r.file) || r.file}: ${r.reason}`)
}

export async function deploymentsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  if (sub !== 'list') throw new UsageError(`unknown deployments command "${sub ?? ''}"; expected list`)
  const { values } = parse(rest, {
    env: { type: 'string', multiple: true },
    limit: { type: 'string', default: '20' },
  })
  const limit = Number(values.limit)
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError('--limit must be 1 to 1000')
  await ctx.withDb(async (db) => {
    const rows = await listDeployments(db.kysely, { environments: values.env, limit })
    const lines = table([
      ['ID', 'ENV', 'WHEN', 'BY', 'ADDED', 'CHANGED', 'REMOVED', 'SOURCE'],
      ...rows.map((d) => [
        String(d.id),
        d.environment,
        d.createdAt.toISOString(),
        d.deployedBy,
        d.summary.added.join(',') || '-',
        d.summary.changed.join(',') || '-',
        d.summary.removed.join(',') || '-',
        d.source,
      ]),
    ])
    for (const line of lines) ctx.io.out(line)
  })
}
