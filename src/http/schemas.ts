import { type TSchema, Type } from 'typebox'

import { StdErrorSchema } from './errors.ts'

/** Shared request pieces, with Nango's patterns (packages/server/lib/helpers/validation.ts). */

export const ProviderConfigKey = Type.String({ pattern: '^[a-zA-Z0-9~:.@ _-]+$', maxLength: 255 })

export const ConnectionId = Type.String({
  pattern: `^[a-zA-Z0-9,.;:=+~[\\]|@\${}"'\\\\/_ -]+$`,
  maxLength: 255,
})

export const SyncName = Type.String({ pattern: '^[a-zA-Z0-9_-]+$', maxLength: 255 })
export const VariantName = Type.String({ pattern: '^[a-zA-Z0-9_-]+$', maxLength: 255 })

/** Model names start upper-case and have at least two characters (Nango's modelSchema). */
export const ModelName = Type.String({ pattern: '^[A-Z][a-zA-Z0-9_-]+$', maxLength: 255 })

export const JsonObject = Type.Record(Type.String(), Type.Unknown())

/** zod's stringbool: the words Nango accepts for booleans in a query string. */
export const StringBool = Type.String({
  pattern:
    '^(?:[Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss]|[Oo][Nn]|[Yy]|[Ee][Nn][Aa][Bb][Ll][Ee][Dd]|[Ff][Aa][Ll][Ss][Ee]|0|[Nn][Oo]|[Oo][Ff][Ff]|[Nn]|[Dd][Ii][Ss][Aa][Bb][Ll][Ee][Dd])$',
})
export const stringBoolValue = (value: string | undefined): boolean =>
  value !== undefined && /^(true|1|yes|on|y|enabled)$/i.test(value)

export const Success = Type.Object({ success: Type.Boolean() })

/** A strict object: unknown keys are a 400, like Nango's `.strict()` schemas. */
export const Strict = <T extends Record<string, TSchema>>(properties: T) =>
  Type.Object(properties, { additionalProperties: false })

/** The empty query string Nango requires on most routes (`requireEmptyQuery`). */
export const EmptyQuery = Strict({})

/** Error responses a route declares, beside its success body. */
export function errors<const S extends readonly number[]>(...statuses: S) {
  return Object.fromEntries(statuses.map((s) => [s, StdErrorSchema])) as {
    [K in S[number]]: typeof StdErrorSchema
  }
}
