import { type TSchema, Type } from 'typebox'

import type { StdErrorSchema } from './errors.ts'

/** Shared request pieces, with Nango's patterns (packages/server/lib/helpers/validation.ts). */

export const ProviderConfigKey = Type.String({ pattern: '^[a-zA-Z0-9~:.@ _-]+$', maxLength: 255 })

export const ConnectionId = Type.String({
  pattern: `^[a-zA-Z0-9,.;:=+~[\\]|@\${}"'\\\\/_ -]+$`,
  maxLength: 255,
})

export const SyncName = Type.String({ pattern: '^[a-zA-Z0-9_-]+$', maxLength: 255 })
export const VariantName = Type.String({ pattern: '^[a-zA-Z0-9_-]+$', maxLength: 255 })

/** Model names start upper-case and have at least two characters (Nango's modelSchema). */
export const ModelName = Type.String({
  pattern: '^[A-Z][a-zA-Z0-9_-]+$',
  maxLength: 255,
  description: "Starts upper-case, at least two characters (Nango's model names).",
})

export const JsonObject = Type.Record(Type.String(), Type.Unknown())

/** zod's stringbool: the words Nango accepts for booleans in a query string. */
export const StringBool = Type.String({
  description: 'true, 1, yes, on, y, enabled / false, 0, no, off, n, disabled (any case).',
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

/**
 * An error answer: the StdError schema by reference (app.ts adds it as a shared schema, so
 * openapi.yaml names it once), with what this status means on this route. Typed as the schema it
 * points to, so a route's reply types stay exact.
 */
export function errorResponse(description: string, headers?: Record<string, object>): typeof StdErrorSchema {
  const answer = { $ref: 'StdError#', description }
  return (headers ? { ...answer, headers } : answer) as unknown as typeof StdErrorSchema
}

/** A success answer: its schema, and what it means (the response's description in openapi.yaml). */
export const described = <T extends TSchema>(description: string, schema: T): T => ({
  ...schema,
  'x-response-description': description,
})

/** What an error status means wherever a route has nothing more precise to say. */
const ERROR_MEANINGS = {
  400:
    '`invalid_query_params`, `invalid_uri_params`, `invalid_headers` or `invalid_body` (with `errors`: ' +
    'one `{code, message, path}` per problem), or `invalid_json` for a body that does not parse.',
  401: '`missing_auth_header`, `malformed_auth_header` or `unknown_account` (also for revoked keys).',
  403: '`forbidden` "Insufficient scope. Required: <scope>" (or "Required one of: <a> or <b>").',
  413: '`request_too_large`: the body exceeds SYNCSTORE_BODY_LIMIT_BYTES (default 1 MiB).',
  415: '`invalid_content_type`: a Content-Type other than application/json was sent.',
  503: '`database_unavailable`: the database cannot be reached.',
  '5XX': '`server_error` (500, names the request id) or `database_unavailable` (503).',
} as const

/** Error responses a route declares, beside its success body, with their usual meaning. */
export function errors<const S extends readonly (keyof typeof ERROR_MEANINGS)[]>(...statuses: S) {
  return Object.fromEntries(
    statuses.map((s) =>
      s === 401
        ? [s, errorResponse(ERROR_MEANINGS[s], { 'WWW-Authenticate': { const: 'Bearer' } })]
        : [s, errorResponse(ERROR_MEANINGS[s])],
    ),
  ) as { [K in S[number]]: typeof StdErrorSchema }
}
