import { parseArgs, type ParseArgsConfig } from 'node:util'

import type { Db } from '../db/connect.ts'
import { type Environment, findEnvironment } from '../environments/store.ts'
import { CommandError, UsageError } from './context.ts'

type Options = NonNullable<ParseArgsConfig['options']>

/**
 * node:util parseArgs in strict mode, with its errors turned into one-line usage errors.
 * `positionals` names the expected arguments; a name ending in "?" may be left out.
 */
export function parse<O extends Options>(args: string[], options: O, positionals: readonly string[] = []) {
  let parsed
  try {
    parsed = parseArgs({ args, options, allowPositionals: positionals.length > 0, strict: true })
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0])
  }
  const required = positionals.filter((p) => !p.endsWith('?')).length
  if (parsed.positionals.length < required || parsed.positionals.length > positionals.length) {
    const expected = positionals.length
      ? positionals.map((p) => (p.endsWith('?') ? `[${p.slice(0, -1)}]` : `<${p}>`)).join(' ')
      : 'no positional arguments'
    throw new UsageError(`expected ${expected}, got ${parsed.positionals.length} argument(s)`)
  }
  return parsed
}

export const envOption = { env: { type: 'string', default: 'dev' } } as const

export async function requireEnvironment(db: Db, name: string): Promise<Environment> {
  const env = await findEnvironment(db.kysely, name)
  if (!env) throw new CommandError(`unknown environment "${name}" (see: syncstore environments list)`)
  return env
}

export function parseJsonArgument(name: string, text: string | undefined): unknown {
  if (text === undefined) return undefined
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new UsageError(`--${name} is not valid JSON: ${(err as Error).message}`)
  }
}
