import path from 'node:path'

import { requireConnection } from '../connections/service.ts'
import { ModelName, VariantName } from '../http/schemas.ts'
import { validateJson } from '../validation.ts'
import { ImportError, importRecords } from '../records/import.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import { envOption, parse, requireEnvironment } from './args.ts'
import { CommandError, type CliContext, UsageError } from './context.ts'

export const RECORDS_USAGE = [
  'records import --integration PCK --connection-id ID --model M [--variant V] [--env ENV] FILE',
  '                                         batch-save records from an NDJSON file (one record a line)',
]

export async function recordsCommand(args: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = args
  if (sub !== 'import') throw new UsageError(`unknown records command "${sub ?? ''}"; expected import`)
  const { values, positionals } = parse(
    rest,
    {
      ...envOption,
      integration: { type: 'string' },
      'connection-id': { type: 'string' },
      model: { type: 'string' },
      variant: { type: 'string', default: BASE_VARIANT },
    },
    ['file'],
  )
  const integration = values.integration
  const connectionId = values['connection-id']
  const model = values.model
  if (integration === undefined || connectionId === undefined || model === undefined) {
    throw new UsageError('--integration, --connection-id and --model are required')
  }
  if (validateJson(ModelName, model).length > 0) {
    throw new UsageError('--model must start with an upper-case letter, then letters, digits, "_" or "-"')
  }
  if (validateJson(VariantName, values.variant).length > 0) {
    throw new UsageError('--variant may only contain letters, digits, "_" and "-"')
  }
  const file = path.resolve(ctx.cwd, positionals[0]!)

  await ctx.withDb(async (db) => {
    const env = await requireEnvironment(db, values.env)
    const connection = await requireConnection(
      db.kysely,
      env.id,
      integration,
      connectionId,
      () =>
        new CommandError(
          `no connection ${connectionId} of integration ${integration} in environment ${env.name}`,
        ),
    )
    const ds = { connectionPk: connection.id, model, variant: values.variant }
    try {
      const s = await importRecords(db.kysely, ctx.sealer, ds, file)
      ctx.io.err(
        `Imported ${s.lines} records into ${model} (${values.variant}): ${s.added} added, ${s.updated} updated, ` +
          `${s.unchanged} unchanged${s.duplicates ? `, ${s.duplicates} duplicate ids ignored` : ''}.`,
      )
    } catch (err) {
      if (err instanceof ImportError) {
        throw new CommandError(
          `${path.basename(file)} ${err.message}; nothing from its batch was written ` +
            `(${written(err.imported)} records before it were imported)`,
        )
      }
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CommandError(`no such file: ${file}`)
      throw err
    }
  })
}

const written = (s: { added: number; updated: number; unchanged: number; duplicates: number }) =>
  s.added + s.updated + s.unchanged + s.duplicates
