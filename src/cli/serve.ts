import type { AddressInfo } from 'node:net'

import closeWithGrace from 'close-with-grace'

import { openDatabase } from '../db/connect.ts'
import { acquireEmbeddedLock, type EmbeddedLock } from '../db/embedded-lock.ts'
import { migrateToLatest } from '../db/migrate.ts'
import { issueFirstDevKey, resolveBootstrapKeys } from '../keys/bootstrap.ts'
import { createLogger } from '../logger.ts'
import { startServer } from '../server.ts'
import { watchFolders } from '../deployments/watch.ts'
import { parse } from './args.ts'
import type { CliContext, CommandRunner } from './context.ts'
import { serveCommands, socketPathFor } from './forward.ts'

/**
 * Starts the server and returns once it listens; the process then lives until a signal.
 * Shutdown is ordered and bounded (SYNCSTORE_SHUTDOWN_GRACE_MS): stop taking runs (running ones
 * finish, or are released for another instance), stop accepting commands, let in-flight requests
 * finish, close the database, release the embedded lock. A second signal exits at once.
 */
export async function serveCommand(args: string[], ctx: CliContext, run: CommandRunner): Promise<void> {
  const { values } = parse(args, { watch: { type: 'boolean', default: false } })
  const { config } = ctx
  const started = performance.now()
  const logger = createLogger(config.logLevel)

  let lock: EmbeddedLock | undefined
  const socketPath = config.database.kind === 'embedded' ? socketPathFor(config.database.dataDir) : undefined
  if (config.database.kind === 'embedded') {
    lock = await acquireEmbeddedLock(config.database.dataDir, { pid: process.pid, socket: socketPath })
  }

  const db = await openDatabase(config.database, { logger })
  const applied = await migrateToLatest(db.kysely)
  if (applied.length > 0) logger.info({ migrations: applied }, 'applied migrations')
  const bootstrapKeys = await resolveBootstrapKeys(db.kysely, config)
  const hasDevBootstrapKey = bootstrapKeys.some((k) => k.environment === 'dev')
  const firstKey = hasDevBootstrapKey ? null : await db.kysely.transaction().execute(issueFirstDevKey)

  let server
  try {
    server = await startServer({ config, db, logger, sealer: ctx.sealer, bootstrapKeys })
  } catch (err) {
    await db.close()
    await lock?.release()
    throw err
  }
  const { app } = server
  // app.close() ends the connections idle at that moment; a keep-alive connection whose request is
  // still in flight would stay open after its response until the client or keepAliveTimeout (10 s)
  // closed it, holding shutdown for the whole grace period. Responses sent while closing say so.
  let closing = false
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) void reply.header('connection', 'close')
    done(null, payload)
  })
  const address = await app.listen({ port: config.port, host: config.host })

  const commands = socketPath
    ? await serveCommands(socketPath, async (request) => {
        const out: string[] = []
        const err: string[] = []
        const code = await run(request.argv, {
          ...ctx,
          cwd: request.cwd,
          io: { out: (line) => out.push(line), err: (line) => err.push(line) },
          withDb: (fn) => fn(db),
        })
        return { code, out, err }
      })
    : undefined

  const where =
    config.database.kind === 'embedded' ? `embedded database in ${config.database.dataDir}` : 'Postgres'
  logger.info(
    { address, startupMs: Math.round(performance.now() - started) },
    `syncstore listening (${where})`,
  )
  // The bound port, not config.port: with PORT=0 the system picks one.
  if (firstKey) printFirstKey(ctx, firstKey, (app.server.address() as AddressInfo).port)

  // serve --watch: an edit to a sync file is deployed (and runs on its next run) within a moment.
  const watcher = values.watch ? watchFolders(config.integrationsDirs, server.redeploy, logger) : undefined

  closeWithGrace(
    { delay: config.shutdownGraceMs, logger: { error: (m) => logger.error(m) } },
    async ({ signal, err }) => {
      if (err) logger.error({ err }, 'shutting down after an unexpected error')
      else logger.info({ signal }, 'shutting down')
      closing = true
      await watcher?.close()
      await commands?.close()
      // Runs get most of the grace period; HTTP requests are short and finish meanwhile.
      await server.close(Math.max(0, config.shutdownGraceMs - 2000))
      await db.close()
      await lock?.release()
      logger.info('shutdown complete')
      logger.flush()
    },
  )
}

function printFirstKey(ctx: CliContext, key: string, port: number): void {
  ctx.io.err(
    [
      '',
      'First start: created a secret key for the dev environment. It is shown this once:',
      '',
      `  ${key}`,
      '',
      'Try it:',
      `  curl -s http://localhost:${port}/environment-variables -H "Authorization: Bearer ${key}"`,
      '',
    ].join('\n'),
  )
}
