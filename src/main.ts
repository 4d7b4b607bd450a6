import { type CliContext, type CliIO, CommandError } from './cli/context.ts'
import { forwardCommand } from './cli/forward.ts'
import { runCommand, USAGE } from './cli/run.ts'
import { ConfigError, loadConfig } from './config.ts'
import { createSealer } from './crypto.ts'
import { openDatabase } from './db/connect.ts'
import { acquireEmbeddedLock, lockHolder } from './db/embedded-lock.ts'
import { migrateToLatest } from './db/migrate.ts'
import { createLogger } from './logger.ts'

/** The `syncstore` command: parse the environment, then run (or forward) one command. */
export async function main(argv: string[]): Promise<number> {
  const io: CliIO = {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  }
  const command = argv[0]
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    io.out(USAGE)
    return command === undefined ? 2 : 0
  }

  let config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    io.err(`error: ${err.message}`)
    return 1
  }

  const database = config.database
  if (database.kind === 'embedded' && command !== 'serve') {
    const holder = await lockHolder(database.dataDir)
    if (holder?.socket) {
      let result
      try {
        result = await forwardCommand(holder.socket, { argv, cwd: process.cwd() })
      } catch (err) {
        if (!(err instanceof CommandError)) throw err
        io.err(`error: ${err.message}`)
        return 1
      }
      result.out.forEach(io.out)
      result.err.forEach(io.err)
      return result.code
    }
  }

  const ctx: CliContext = {
    config,
    io,
    cwd: process.cwd(),
    sealer: createSealer(config.encryptionKey),
    async withDb(fn, { migrate = true } = {}) {
      const lock =
        database.kind === 'embedded'
          ? await acquireEmbeddedLock(database.dataDir, { pid: process.pid })
          : undefined
      try {
        const db = await openDatabase(database, { logger: createLogger('warn'), poolMax: 2 })
        try {
          if (migrate) await migrateToLatest(db.kysely)
          return await fn(db)
        } finally {
          await db.close()
        }
      } finally {
        await lock?.release()
      }
    },
  }
  return runCommand(argv, ctx)
}
