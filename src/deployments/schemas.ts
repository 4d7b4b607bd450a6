import { Type } from 'typebox'

import { JsonObject, ProviderConfigKey, Strict, SyncName } from '../http/schemas.ts'

/**
 * Request and response shapes of Nango's functions API (packages/server/lib/controllers/integrations/
 * uniqueKey/functions, types in @nangohq/types functions/api.ts), as @nangohq/node calls it.
 */

const FunctionType = Type.Union([Type.Literal('sync'), Type.Literal('action'), Type.Literal('on-event')], {
  description: 'Only syncs are deployed here: `action` and `on-event` find nothing.',
})

export const FunctionsParams = Strict({ uniqueKey: ProviderConfigKey })
export const FunctionParams = Strict({ uniqueKey: ProviderConfigKey, name: SyncName })

export const FunctionsQuery = Strict({
  type: Type.Optional(FunctionType),
  search: Type.Optional(
    Type.String({
      maxLength: 255,
      pattern: '\\S',
      description: 'Part of the name, any case (trimmed).',
    }),
  ),
  page: Type.Optional(Type.Integer({ minimum: 0, default: 0, description: 'From 0.' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
})

export const FunctionQuery = Strict({ type: Type.Optional(FunctionType) })

export const DeleteFunctionQuery = Strict({
  type: Type.Union([Type.Literal('sync'), Type.Literal('action')], {
    description: 'Required, as in Nango (a sync and an action may share a name there).',
  }),
})

/** ListedNangoSyncFunction, in Nango's key order. */
const ListedFunction = Type.Object({
  name: Type.String(),
  description: Type.String(),
  scopes: Type.Optional(
    Type.Array(Type.String(), { description: "The definition's `scopes`, when it has any." }),
  ),
  type: Type.Literal('sync'),
  returns: Type.Array(Type.String(), { description: 'Its models.' }),
  json_schema: Type.Object(
    { definitions: Type.Record(Type.String(), JsonObject) },
    { description: "Each model's JSON Schema, under `definitions`." },
  ),
  runs: Type.String({ description: 'The frequency, as written.' }),
  auto_start: Type.Boolean(),
  track_deletes: Type.Boolean(),
  id: Type.Integer({
    description: 'Kept by new versions of the sync; a sync removed and deployed again gets a new one.',
  }),
  enabled: Type.Boolean({ description: 'Always true: a deployed sync is enabled.' }),
  last_deployed: Type.String({ description: 'When this version was deployed.' }),
  source: Type.Literal('repo', {
    description: 'Deployed from a folder (`syncstore deploy`, `nango deploy`).',
  }),
  // Beyond Nango's listing: what the definition declares that syncstore keeps without using yet.
  version: Type.Optional(Type.String({ description: "The definition's `version` (or nango deploy's)." })),
  endpoints: Type.Optional(Type.Array(Type.Unknown(), { description: "The definition's `endpoints`." })),
  webhook_subscriptions: Type.Optional(
    Type.Array(Type.Unknown(), { description: "The definition's `webhookSubscriptions`." }),
  ),
  metadata_json_schema: Type.Optional(
    Type.Unknown({ description: "The connection metadata's schema (`metadata`), as JSON Schema." }),
  ),
  checkpoint_json_schema: Type.Optional(
    Type.Unknown({ description: "The checkpoint's schema (`checkpoint`), as JSON Schema." }),
  ),
})

export const FunctionList = Type.Object({
  data: Type.Array(ListedFunction),
  pagination: Type.Object({ total: Type.Integer(), page: Type.Integer(), limit: Type.Integer() }),
})

export const FunctionItem = Type.Object({ data: ListedFunction })

export const FunctionCode = Type.Object({
  type: Type.Literal('sync'),
  code: Type.String({
    description:
      'The file deployed (its TypeScript), as Nango answers; for a version deployed before sources were kept, the bundle it runs.',
  }),
})

export const FunctionDeleted = Type.Object({ data: Type.Object({ success: Type.Literal(true) }) })
