import { type Static, Type } from 'typebox'

import { ProviderConfigKey, Strict } from '../http/schemas.ts'

/**
 * Request and response shapes of Nango's integrations API (packages/server/lib/controllers/
 * integrations and helpers/validation.ts), with its patterns and limits.
 */

/** Nango's provider names: `github`, `google-calendar`, `bamboohr-basic`... */
const ProviderName = Type.String({ pattern: '^[a-zA-Z0-9_-]+$', maxLength: 255 })

const DisplayName = Type.String({ minLength: 1, maxLength: 255 })

/** Nango's comma-separated scope list; empty means none. */
const Scopes = Type.String({
  pattern: '^(?:[0-9a-zA-Z:/_.*-]+(?:,[0-9a-zA-Z:/_.*-]+)*)?$',
  description: 'Comma-separated, as Nango takes them: `read,write`.',
})
const PrivateKey = Type.String({
  pattern: '^-----BEGIN RSA PRIVATE KEY----[\\s\\S]*-----END RSA PRIVATE KEY-----$',
})
const ClientId = Type.String({ minLength: 1, maxLength: 255 })
const ClientSecret = Type.String({ minLength: 1 })

const CredentialShapes = Type.Union(
  [
    Strict({
      type: Type.Enum(['OAUTH1', 'OAUTH2', 'TBA']),
      client_id: ClientId,
      client_secret: ClientSecret,
      scopes: Type.Optional(Scopes),
      webhook_secret: Type.Optional(Type.String({ maxLength: 255 })),
    }),
    Strict({
      type: Type.Literal('APP'),
      app_id: ClientId,
      app_link: Type.String({ minLength: 1 }),
      private_key: PrivateKey,
    }),
    Strict({
      type: Type.Literal('CUSTOM'),
      client_id: ClientId,
      client_secret: ClientSecret,
      app_id: ClientId,
      app_link: Type.String({ minLength: 1 }),
      private_key: PrivateKey,
    }),
  ],
  {
    description:
      "The integration's own app, one strict shape per type (Nango's integration credentials). " +
      'Stored encrypted when SYNCSTORE_ENCRYPTION_KEY is set.',
  },
)

/** The same union told apart by `type` (Ajv's discriminator): errors name only that shape's fields. */
const { anyOf, ...unionRest } = CredentialShapes
const Credentials = Type.Unsafe<Static<typeof CredentialShapes>>({
  ...unionRest,
  type: 'object',
  oneOf: anyOf,
  discriminator: { propertyName: 'type' },
})

export const IntegrationParams = Strict({ uniqueKey: ProviderConfigKey })

export const GetIntegrationQuery = Strict({
  include: Type.Optional(
    Type.Array(Type.Union([Type.Literal('webhook'), Type.Literal('credentials')]), {
      description:
        '`webhook` adds `webhook_url`; `credentials` adds `credentials`, only for a key with ' +
        '`environment:integrations:read_credentials` (otherwise it is left out, as Nango does). ' +
        'Repeat the parameter for both.',
    }),
  ),
})

export const PostIntegrationBody = Strict({
  unique_key: ProviderConfigKey,
  provider: ProviderName,
  display_name: Type.Optional(DisplayName),
  forward_webhooks: Type.Optional(Type.Boolean()),
  credentials: Type.Optional(Credentials),
})

export const PatchIntegrationBody = Strict({
  unique_key: Type.Optional(ProviderConfigKey),
  display_name: Type.Optional(DisplayName),
  forward_webhooks: Type.Optional(Type.Boolean()),
  credentials: Type.Optional(Credentials),
})

/** What Nango's public API shows of an integration (ApiPublicIntegration). */
const integrationFields = {
  unique_key: Type.String(),
  provider: Type.String(),
  display_name: Type.String(),
  logo: Type.String(),
  forward_webhooks: Type.Boolean(),
  created_at: Type.String(),
  updated_at: Type.String(),
}

/** The stored credentials (null when the integration has none), as they were given. */
const StoredCredentials = Type.Union([
  Type.Object({
    type: Type.String(),
    client_id: Type.Optional(Type.String()),
    client_secret: Type.Optional(Type.String()),
    scopes: Type.Optional(Type.String()),
    webhook_secret: Type.Optional(Type.String()),
    app_id: Type.Optional(Type.String()),
    app_link: Type.Optional(Type.String()),
    private_key: Type.Optional(Type.String()),
  }),
  Type.Null(),
])

export const IntegrationData = Type.Object({
  data: Type.Object({
    ...integrationFields,
    webhook_url: Type.Optional(
      Type.Union([Type.String(), Type.Null()], {
        description: 'With `include=webhook`: always null, syncstore does not receive provider webhooks.',
      }),
    ),
    credentials: Type.Optional(StoredCredentials),
  }),
})

export const IntegrationList = Type.Object({
  data: Type.Array(
    Type.Object({
      ...integrationFields,
      unique_key: Type.String({ description: 'The provider_config_key of its connections.' }),
      syncs: Type.Array(
        Type.Object({
          name: Type.String(),
          description: Type.String(),
          frequency: Type.String(),
          models: Type.Array(Type.String()),
          auto_start: Type.Boolean(),
          sync_type: Type.String(),
          track_deletes: Type.Boolean(),
        }),
        { description: 'Ours: its deployed syncs (Nango lists them elsewhere).' },
      ),
    }),
  ),
})
