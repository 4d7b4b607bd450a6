import { ConfigError } from '../config.ts'
import { EmbeddedBusyError } from '../db/embedded-lock.ts'
import { MigrationError } from '../db/migrate.ts'
import { CONNECTIONS_USAGE, connectionsCommand } from './connections.ts'
import { CommandError, type CliContext, UsageError } from './context.ts'
import { DEPLOY_USAGE, DEPLOYMENTS_USAGE, deployCommand, deploymentsCommand } from './deploy.ts'
import { ENV_VARS_USAGE, envVarsCommand } from './env-vars.ts'
import { ENVIRONMENTS_USAGE, environmentsCommand } from './environments.ts'
import { INTEGRATIONS_USAGE, integrationsCommand } from './integrations.ts'
import { KEYS_USAGE, keysCommand } from './keys.ts'
import { MIGRATE_USAGE, migrateCommand } from './migrate.ts'
import { NANGO_USAGE, nangoCommand } from './nango.ts'
import { RECORDS_USAGE, recordsCommand } from './records.ts'
import { RUNS_USAGE, runsCommand } from './runs.ts'
import { WEBHOOKS_USAGE, webhooksCommand } from './webhooks.ts'

export const USAGE = [
  'usage: syncstore <command> [options]',
  '',
  ...[
    'serve [--watch]                          migrate, deploy the integrations folder, serve HTTP on PORT',
    '                                         (default 3003); --watch: redeploy when a file changes',
    ...DEPLOY_USAGE,
    ...DEPLOYMENTS_USAGE,
    ...MIGRATE_USAGE,
    ...KEYS_USAGE,
    ...ENV_VARS_USAGE,
    ...INTEGRATIONS_USAGE,
    ...CONNECTIONS_USAGE,
    ...NANGO_USAGE,
    ...RECORDS_USAGE,
    ...RUNS_USAGE,
    ...WEBHOOKS_USAGE,
    ...ENVIRONMENTS_USAGE,
  ].map((line) => `  ${line}`),
  '',
  'Configuration comes from the environment (PORT, DATABASE_URL, SYNCSTORE_DATA_DIR, ...); see README.md.',
].join('\n')

type Handler = (args: string[], ctx: CliContext) => Promise<void>

/** The commands that take their arguments and context and nothing else (serve also needs runCommand). */
const COMMANDS = new Map<string, Handler>([
  ['migrate', migrateCommand],
  ['deploy', deployCommand],
  ['deployments', deploymentsCommand],
  ['keys', keysCommand],
  ['env-vars', envVarsCommand],
  ['integrations', integrationsCommand],
  ['connections', connectionsCommand],
  ['nango', nangoCommand],
  ['records', recordsCommand],
  ['runs', runsCommand],
  ['webhooks', webhooksCommand],
  ['environments', environmentsCommand],
])

/**
 * Runs one command line and returns its exit code: 0 done, 1 failed, 2 bad arguments.
 * Used by the `syncstore` binary and by a running server executing a forwarded command.
 */
export async function runCommand(argv: readonly string[], ctx: CliContext): Promise<number> {
  const [command, ...args] = argv
  try {
    const handler = command === undefined ? undefined : COMMANDS.get(command)
    if (handler) {
      await handler(args, ctx)
      return 0
    }
    switch (command) {
      case 'serve': {
        // Loaded only here: the server pulls in Fastify, the scheduler and the runtime, which
        // the other commands do not need (each CLI call stays quick to start).
        const { serveCommand } = await import('./serve.ts')
        await serveCommand(args, ctx, runCommand)
        return 0
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        ctx.io.out(USAGE)
        return command === undefined ? 2 : 0
      default:
        throw new UsageError(`unknown command "${command}" (see: syncstore help)`)
    }
  } catch (err) {
    if (err instanceof UsageError) {
      ctx.io.err(`error: ${err.message}`)
      return 2
    }
    if (
      err instanceof CommandError ||
      err instanceof ConfigError ||
      err instanceof MigrationError ||
      err instanceof EmbeddedBusyError
    ) {
      ctx.io.err(`error: ${err.message}`)
      return 1
    }
    throw err
  }
}
