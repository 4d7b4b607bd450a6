import { type Static, Type } from 'typebox'

import { ConnectionId, JsonObject, ProviderConfigKey, Strict, StringBool } from '../http/schemas.ts'

/**
 * Imported credentials, one strict shape per auth type (Nango's credential schemas in
 * packages/server/lib/helpers/validation.ts). The proxy uses them to authenticate requests.
 */
const ConfigOverride = Strict({
  client_id: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  client_secret: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
})
const Token = (max: number) => Type.String({ minLength: 1, maxLength: max })
const ExpiresAt = Type.String({ format: 'date-time' })

const CredentialShapes = Type.Union(
  [
    Strict({
      type: Type.Literal('OAUTH2'),
      access_token: Token(16_384),
      refresh_token: Type.Optional(Token(16_384)),
      expires_at: Type.Optional(ExpiresAt),
      config_override: Type.Optional(ConfigOverride),
    }),
    Strict({
      type: Type.Literal('OAUTH2_CC'),
      token: Token(4096),
      client_id: Token(255),
      client_secret: Token(2048),
      client_certificate: Type.Optional(Token(10_000)),
      client_private_key: Type.Optional(Token(10_000)),
      expires_at: Type.Optional(ExpiresAt),
    }),
    Strict({ type: Type.Literal('OAUTH1'), oauth_token: Token(2048), oauth_token_secret: Token(2048) }),
    Strict({ type: Type.Literal('API_KEY'), apiKey: Token(1024) }),
    Strict({
      type: Type.Literal('BASIC'),
      username: Type.String({ maxLength: 1024 }),
      password: Type.String({ maxLength: 1024 }),
    }),
    Strict({ type: Type.Literal('NONE') }),
    Strict({
      type: Type.Literal('TBA'),
      token_id: Type.String({ minLength: 1 }),
      token_secret: Type.String({ minLength: 1 }),
      config_override: Type.Optional(ConfigOverride),
    }),
    Strict({ type: Type.Literal('APP'), app_id: Token(255), installation_id: Token(255) }),
    Strict({ type: Type.Literal('CUSTOM'), app_id: Token(255), installation_id: Token(255) }),
  ],
  { description: 'One strict shape per auth type, as Nango imports them.' },
)
/**
 * The same union, told apart by `type` (Ajv's discriminator): only the shape that `type` names is
 * checked. As a plain union every shape reported every unknown key, 9 errors a key: 1.5 s of
 * validation for 700 KB of unknown keys in `credentials`, against 0.1 s this way.
 */
const { anyOf, ...unionRest } = CredentialShapes
const Credentials = Type.Unsafe<Static<typeof CredentialShapes>>({
  ...unionRest,
  type: 'object',
  oneOf: anyOf,
  discriminator: { propertyName: 'type' },
})

/** Tag keys per Nango: a letter, then letters, digits and `_-./`; at most 10 tags. */
const Tags = Type.Record(
  Type.String({ pattern: '^[a-zA-Z][a-zA-Z0-9_\\-./]{0,63}$' }),
  Type.String({ minLength: 1, maxLength: 255 }),
  {
    maxProperties: 10,
  },
)

const EndUser = Strict({
  id: Type.String({ minLength: 1, maxLength: 255 }),
  email: Type.Optional(Type.String({ format: 'email', minLength: 5 })),
  display_name: Type.Optional(Type.String({ maxLength: 255 })),
  tags: Type.Optional(Tags),
})

export const PostConnectionBody = Strict({
  provider_config_key: ProviderConfigKey,
  connection_id: Type.Optional(
    Type.String({ ...ConnectionId, description: 'A UUID is generated when absent.' }),
  ),
  metadata: Type.Optional(JsonObject),
  credentials: Type.Optional(Credentials),
  connection_config: Type.Optional(JsonObject),
  tags: Type.Optional(Tags),
  end_user: Type.Optional(EndUser),
})

/**
 * GET /connections skips page * limit rows: a billion pages of 10,000 is 1e13, far inside a JS safe
 * integer (9e15) and Postgres' bigint OFFSET, so an absurd page is a 400 rather than a 500.
 */
const MAX_PAGE = 1_000_000_000

export const ListConnectionsQuery = Type.Object(
  {
    connectionId: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    search: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 255,
        description: "Case-insensitive substring of the connection id or the end user's name or email.",
      }),
    ),
    endUserId: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    integrationId: Type.Optional(
      Type.String({ minLength: 1, description: 'One or more provider config keys, separated by commas.' }),
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'Defaults to 10000.' })),
    page: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MAX_PAGE,
        description: 'Zero-based; skips page * limit connections.',
      }),
    ),
  },
  {
    additionalProperties: false,
    // `tags[key]=value`, as the Node client sends tag filters
    patternProperties: { '^tags\\[[a-zA-Z][a-zA-Z0-9_\\-./]{0,63}\\]$': Type.String({ maxLength: 255 }) },
  },
)

export const ConnectionParams = Strict({ connectionId: ConnectionId })

export const GetConnectionQuery = Strict({
  provider_config_key: ProviderConfigKey,
  force_refresh: Type.Optional(StringBool),
  refresh_token: Type.Optional(StringBool),
  refresh_github_app_jwt_token: Type.Optional(StringBool),
})

export const DeleteConnectionQuery = Strict({ provider_config_key: ProviderConfigKey })

export const MetadataBody = Strict({
  connection_id: Type.Union([ConnectionId, Type.Array(ConnectionId)]),
  provider_config_key: ProviderConfigKey,
  metadata: JsonObject,
})

const EndUserOut = Type.Union([
  Type.Null(),
  Type.Object({
    id: Type.String(),
    display_name: Type.Union([Type.String(), Type.Null()]),
    email: Type.Union([Type.String(), Type.Null()]),
    tags: Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()]),
    organization: Type.Null(),
  }),
])

/** The properties every connection body starts with, in Nango's key order. */
const connectionHead = {
  id: Type.Integer(),
  connection_id: Type.String(),
  provider_config_key: Type.String(),
  provider: Type.String(),
  errors: Type.Array(JsonObject),
  end_user: EndUserOut,
  tags: Type.Record(Type.String(), Type.String()),
  metadata: Type.Union([JsonObject, Type.Null()]),
}

/** GET /connections/{id} and POST /connections, in Nango's key order. */
export const ConnectionFull = Type.Object(
  {
    ...connectionHead,
    connection_config: JsonObject,
    webhook_url_override: Type.Null(),
    created_at: Type.String(),
    updated_at: Type.String(),
    last_fetched_at: Type.Null(),
    credentials: Type.Record(Type.String(), Type.Unknown(), {
      description: 'The imported credentials (OAuth ones with a `raw` copy), or `{}`.',
    }),
  },
  { description: "Keys in Nango's order." },
)

/** One item of GET /connections: never credentials. */
export const ConnectionListItem = Type.Object({
  ...connectionHead,
  created: Type.String({ description: 'Postgres timestamp text with microseconds and `+00:00`.' }),
})
