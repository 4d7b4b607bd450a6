import { toJSONSchema } from 'zod/v4/core'
import { zodToJsonSchema } from 'zod-to-json-schema'

/**
 * A model (or metadata / checkpoint) schema as stored: JSON Schema draft-07. A zod schema is
 * converted once, here, at deploy time, as Nango's CLI converts it for its `models_json_schema`:
 * dates become date-time strings (a record crosses to the server as JSON, a Date as its ISO
 * string), what JSON Schema cannot say (a transform, say) accepts anything, and `$schema` is left
 * off. Zod 4 (classic or mini, syncstore's copy or the team's) carries `_zod`; zod 3 (or 4's
 * `zod/v3`) carries `_def`, converted by zod-to-json-schema. Anything else is taken as JSON
 * Schema already (syncstore's format; a TypeBox schema is one) and kept as JSON.
 */
export function toJsonSchema(schema: unknown): unknown {
  let json: Record<string, unknown>
  if (isZod4(schema)) {
    // Nango stores `metadata: z.void()` as a schema that only accepts null.
    if (schema._zod.def.type === 'void') return { type: 'null' }
    json = toJSONSchema(schema, {
      target: 'draft-7',
      unrepresentable: 'any',
      override: (ctx) => {
        if (ctx.zodSchema._zod.def.type === 'date') {
          Object.assign(ctx.jsonSchema, { type: 'string', format: 'date-time' })
        }
      },
    }) as Record<string, unknown>
  } else if (isZod3(schema)) {
    json = zodToJsonSchema(schema as Parameters<typeof zodToJsonSchema>[0], {
      target: 'jsonSchema7',
    }) as Record<string, unknown>
  } else {
    return schema === undefined ? undefined : (JSON.parse(JSON.stringify(schema)) as unknown)
  }
  delete json.$schema
  return json
}

type Zod4 = Parameters<typeof toJSONSchema>[0] & { _zod: { def: { type: string } } }

function isZod4(value: unknown): value is Zod4 {
  const internals = (value as { _zod?: { def?: { type?: unknown } } } | null)?._zod
  return typeof internals?.def?.type === 'string'
}

function isZod3(value: unknown): boolean {
  const v = value as { _def?: { typeName?: unknown }; safeParse?: unknown } | null
  return typeof v?._def?.typeName === 'string' && typeof v.safeParse === 'function'
}
