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
  'connection-id': Type.String({ ...ConnectionId, description: "The connection's id (connection_id)." }),
  'provider-config-key': Type.String({
    ...ProviderConfigKey,
    description: "The connection's integration (provider_config_key).",
  }),
})

const Timestamp = Type.String({
  format: 'date-time',
  maxLength: 64,
  description: 'RFC 3339, with `Z` or any UTC offset.',
})
const CURSOR =
  'Standard base64 of `<last_modified_at with microseconds>||<internal record id>`; opaque to clients.'
const FILTER = '(?:added|updated|deleted|ADDED|UPDATED|DELETED)'

export const GetRecordsQuery = Strict({
  model: ModelName,
  variant: Type.Optional(
    Type.String({ ...VariantName, description: 'Defaults to `base`, the variant every sync has.' }),
  ),
  delta: Type.Optional(
    Type.String({
      ...Timestamp,
      deprecated: true,
      description: 'The old name of modified_after; wins when both are given, as in Nango.',
    }),
  ),
  modified_after: Type.Optional(
    Type.String({
      ...Timestamp,
      description:
        'Only records changed after this instant (RFC 3339, with `Z` or any UTC offset), e.g. ' +
        '`2024-03-27T15:10:27.123456+02:00`.',
    }),
  ),
  limit: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 10_000,
      default: 100,
      description: 'At most this many records (fewer when the page reaches the byte budget).',
    }),
  ),
  filter: Type.Optional(
    Type.String({
      pattern: `^${FILTER}(?:,${FILTER})*$`,
      maxLength: 100,
      description:
        'Only records whose last action is one of these: a comma-separated list of `added`, `updated` and `deleted` (or the same in upper case).',
      examples: ['added,deleted'],
    }),
  ),
  cursor: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 1000,
      description: `A record's \`_nango_metadata.cursor\` (or a page's \`next_cursor\`): only records after it are returned. ${CURSOR} URL-encode it.`,
    }),
  ),
  // A single `ids=a` is coerced to a one-item array.
  ids: Type.Optional(
    Type.Array(Type.String({ minLength: 1, maxLength: 255, pattern: '^[^\\u0000]+$' }), {
      maxItems: 100,
      description:
        'Only records with these external ids, as repeated keys (`ids=a&ids=b`); a comma inside a value is part of the id.',
    }),
  ),
})

const Metadata = Type.Object(
  {
    first_seen_at: Type.String(),
    last_modified_at: Type.String(),
    last_action: Type.Union([Type.Literal('ADDED'), Type.Literal('UPDATED'), Type.Literal('DELETED')]),
    deleted_at: Type.Union([Type.String(), Type.Null()]),
    pruned_at: Type.Union([Type.String(), Type.Null()], {
      description: 'Set when the payload was emptied (by PATCH /records/prune or retention).',
    }),
    cursor: Type.String({ description: CURSOR }),
  },
  { description: 'Timestamps are RFC 3339 with microseconds (trailing zeros trimmed) and `+00:00`.' },
)

/** Documents the page; the body itself is spliced from stored JSON (src/records/format.ts). */
export const RecordsPage = Type.Object({
  next_cursor: Type.Union([Type.String(), Type.Null()]),
  records: Type.Array(
    Type.Intersect([Type.Object({ id: Type.String(), _nango_metadata: Metadata }), JsonObject], {
      description:
        "The saved payload's keys, `id` (the external id, always a string) first, then `_nango_metadata`. A pruned record has only `id` and `_nango_metadata`.",
    }),
  ),
})

export const PruneBody = Strict({
  model: ModelName,
  variant: Type.Optional(Type.String({ ...VariantName, description: 'Defaults to `base`.' })),
  until_cursor: Type.String({
    minLength: 1,
    maxLength: 1000,
    description: `The last record to prune (inclusive). ${CURSOR}`,
  }),
  limit: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 10_000,
      default: 1000,
      description: 'At most this many records are pruned by one request.',
    }),
  ),
})

export const PruneResponse = Type.Object({ count: Type.Integer({ minimum: 0 }), has_more: Type.Boolean() })
