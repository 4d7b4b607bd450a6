import { Type } from 'typebox'

import {
  ConnectionId,
  JsonObject,
  ModelName,
  ProviderConfigKey,
  Strict,
  VariantName,
} from '../http/schemas.ts'

/** Both records routes name the connection in headers (matched case-insensitively). */
export const ConnectionHeaders = Type.Object({
  'connection-id': ConnectionId,
  'provider-config-key': ProviderConfigKey,
})

const Timestamp = Type.String({ format: 'date-time', maxLength: 64 })
const FILTER = '(?:added|updated|deleted|ADDED|UPDATED|DELETED)'

export const GetRecordsQuery = Strict({
  model: ModelName,
  variant: Type.Optional(VariantName),
  /** deprecated alias of modified_after; wins when both are given, as in Nango */
  delta: Type.Optional(Timestamp),
  modified_after: Type.Optional(Timestamp),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 100 })),
  filter: Type.Optional(Type.String({ pattern: `^${FILTER}(?:,${FILTER})*$`, maxLength: 100 })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 1000 })),
  // Repeated keys (`ids=a&ids=b`); a single `ids=a` is coerced to a one-item array.
  ids: Type.Optional(
    Type.Array(Type.String({ minLength: 1, maxLength: 255, pattern: '^[^\\u0000]+$' }), { maxItems: 100 }),
  ),
})

const Metadata = Type.Object({
  first_seen_at: Type.String(),
  last_modified_at: Type.String(),
  last_action: Type.Union([Type.Literal('ADDED'), Type.Literal('UPDATED'), Type.Literal('DELETED')]),
  deleted_at: Type.Union([Type.String(), Type.Null()]),
  pruned_at: Type.Union([Type.String(), Type.Null()]),
  cursor: Type.String(),
})

/** Documents the page; the body itself is spliced from stored JSON (src/records/format.ts). */
export const RecordsPage = Type.Object({
  next_cursor: Type.Union([Type.String(), Type.Null()]),
  records: Type.Array(
    Type.Intersect([Type.Object({ id: Type.String(), _nango_metadata: Metadata }), JsonObject]),
  ),
})

export const PruneBody = Strict({
  model: ModelName,
  variant: Type.Optional(VariantName),
  until_cursor: Type.String({ minLength: 1, maxLength: 1000 }),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 })),
})

export const PruneResponse = Type.Object({ count: Type.Integer(), has_more: Type.Boolean() })
