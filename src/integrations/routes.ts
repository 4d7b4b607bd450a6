import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { deployer } from '../deployments/routes.ts'
import { readDefinitions } from '../deployments/store.ts'
import { described, EmptyQuery, errorResponse, errors, Success } from '../http/schemas.ts'
import { satisfies } from '../keys/scopes.ts'
import {
  GetIntegrationQuery,
  IntegrationData,
  IntegrationList,
  IntegrationParams,
  PatchIntegrationBody,
  PostIntegrationBody,
} from './schemas.ts'
import { changeIntegration, createIntegration, deleteIntegration, noSuchIntegration } from './service.ts'
import { findIntegration, type Integration, listIntegrations, readIntegrationCredentials } from './store.ts'

/**
 * Nango's integrations API (packages/server/lib/controllers/integrations): an environment's
 * integrations as data, with Nango's scopes, bodies, status codes and messages. An integration is
 * created here or by a deployment (a folder's integration); both are the same row.
 */

const READ_CREDENTIALS = 'environment:integrations:read_credentials'

const NOT_FOUND = errorResponse('`not_found`: `Integration "<uniqueKey>" does not exist`.')

export const integrationRoutes: FastifyPluginAsyncTypebox<{
  db: Kysely<Database>
  sealer: Sealer
  publicUrl: string
}> = async (app, { db, sealer, publicUrl }) => {
  /** Nango's public shape (integrationToPublicApi). */
  const publicShape = (integration: Integration) => ({
    unique_key: integration.uniqueKey,
    provider: integration.provider,
    display_name: integration.displayName,
    logo: `${publicUrl}/images/template-logos/${integration.provider}.svg`,
    forward_webhooks: integration.forwardWebhooks,
    created_at: integration.createdAt.toISOString(),
    updated_at: integration.updatedAt.toISOString(),
  })

  app.get(
    '/integrations',
    {
      config: { scope: ['environment:integrations:list', 'environment:integrations:list_credentials'] },
      schema: {
        tags: ['integrations'],
        summary: "List the environment's integrations",
        description:
          "Nango's shape (`{data: [...]}`), sorted by provider then unique key, never with credentials. " +
          'An environment has the integrations created through this API or `syncstore integrations`, and ' +
          'those deployed to it (`syncstore deploy`, or the folder `syncstore serve` deploys). Ours: each ' +
          'also lists its deployed syncs under `syncs`.',
        operationId: 'listIntegrations',
        querystring: EmptyQuery,
        response: {
          200: described('The integrations.', IntegrationList),
          ...errors(400, 401, 403),
        },
      },
    },
    async (request) => {
      const environmentId = request.principal.environmentId
      const [rows, { integrations }] = await Promise.all([
        listIntegrations(db, environmentId),
        readDefinitions(db, environmentId),
      ])
      const data = rows.map((integration) => ({
        ...publicShape(integration),
        syncs: (integrations.get(integration.uniqueKey)?.syncs ?? []).map((s) => ({
          name: s.name,
          description: s.description,
          frequency: s.frequency,
          models: Object.keys(s.models),
          auto_start: s.autoStart,
          sync_type: s.syncType,
          track_deletes: s.trackDeletes,
        })),
      }))
      data.sort((a, b) => a.provider.localeCompare(b.provider) || a.unique_key.localeCompare(b.unique_key))
      return { data }
    },
  )

  app.get(
    '/integrations/:uniqueKey',
    {
      config: { scope: ['environment:integrations:read', READ_CREDENTIALS] },
      schema: {
        tags: ['integrations'],
        summary: 'Get an integration',
        description:
          "Nango's shape under `data`. `include=credentials` adds the integration's own app credentials " +
          `(null when it has none) for a key with ${READ_CREDENTIALS}; for any other key they are left ` +
          'out, without an error, as Nango does. `include=webhook` adds `webhook_url`, always null here.',
        operationId: 'getIntegration',
        params: IntegrationParams,
        querystring: GetIntegrationQuery,
        response: {
          200: described('The integration.', IntegrationData),
          ...errors(400, 401, 403),
          404: NOT_FOUND,
        },
      },
    },
    async (request) => {
      const environmentId = request.principal.environmentId
      const { uniqueKey } = request.params
      const include = new Set(request.query.include ?? [])
      const integration = await findIntegration(db, environmentId, uniqueKey)
      if (!integration) throw noSuchIntegration(uniqueKey)
      const withCredentials =
        include.has('credentials') && satisfies(request.principal.scopes, READ_CREDENTIALS)
      return {
        data: {
          ...publicShape(integration),
          ...(include.has('webhook') ? { webhook_url: null } : {}),
          ...(withCredentials
            ? { credentials: await readIntegrationCredentials(db, sealer, environmentId, uniqueKey) }
            : {}),
        },
      }
    },
  )

  app.post(
    '/integrations',
    {
      config: { scope: 'environment:integrations:create' },
      schema: {
        tags: ['integrations'],
        summary: 'Create an integration',
        description:
          "Any provider name in Nango's pattern is taken (`github`, `google-calendar`...). Without " +
          '`display_name`, the provider name is shown. Credentials are stored encrypted when ' +
          'SYNCSTORE_ENCRYPTION_KEY is set and are never shown by this answer. Nango answers 200.',
        operationId: 'createIntegration',
        querystring: EmptyQuery,
        body: PostIntegrationBody,
        response: {
          200: described('The created integration.', IntegrationData),
          ...errors(401, 403, 415),
          400: errorResponse(
            '`invalid_body` (with `errors`), also "Unique key already exists" (path `uniqueKey`) when ' +
              'the environment has an integration with that key.',
          ),
        },
      },
    },
    async (request) => {
      const { body } = request
      const integration = await createIntegration(db, sealer, request.principal.environmentId, {
        uniqueKey: body.unique_key,
        provider: body.provider,
        displayName: body.display_name ?? body.provider,
        forwardWebhooks: body.forward_webhooks,
        credentials: body.credentials,
      })
      return { data: publicShape(integration) }
    },
  )

  app.patch(
    '/integrations/:uniqueKey',
    {
      config: { scope: 'environment:integrations:update' },
      schema: {
        tags: ['integrations'],
        summary: 'Change an integration',
        description:
          'Changes what is sent and keeps the rest; `credentials` replaces the stored ones whole. The ' +
          "deployed folder's integration.json is never changed here. Renaming (`unique_key`) is refused " +
          'while connections use the key (as Nango) or syncs are deployed under it (ours).',
        operationId: 'updateIntegration',
        params: IntegrationParams,
        querystring: EmptyQuery,
        body: PatchIntegrationBody,
        response: {
          200: described('The changed integration.', IntegrationData),
          ...errors(401, 403, 415),
          400: errorResponse(
            '`invalid_body`: a bad field (with `errors`), "uniqueKey is already used by another ' +
              'integration", "Can\'t rename an integration with active connections" or "Can\'t rename an ' +
              'integration with deployed functions".',
          ),
          404: NOT_FOUND,
        },
      },
    },
    async (request) => {
      const { body } = request
      const integration = await changeIntegration(
        db,
        sealer,
        request.principal.environmentId,
        request.params.uniqueKey,
        {
          uniqueKey: body.unique_key,
          displayName: body.display_name,
          forwardWebhooks: body.forward_webhooks,
          credentials: body.credentials,
        },
      )
      return { data: publicShape(integration) }
    },
  )

  app.delete(
    '/integrations/:uniqueKey',
    {
      config: { scope: 'environment:integrations:delete' },
      schema: {
        tags: ['integrations'],
        summary: 'Delete an integration, its connections and its deployed syncs',
        description:
          'In one transaction, as Nango: every connection of the integration is deleted as DELETE ' +
          '/connections/{id} deletes one (its syncs stop, its records go), its deployed syncs are removed ' +
          'as DELETE /integrations/{uniqueKey}/functions/{name} removes one (a deployment is recorded, ' +
          'source `DELETE /integrations/<uniqueKey>`), then the integration. A folder that still has ' +
          'the integration deploys it again on its next deployment.',
        operationId: 'deleteIntegration',
        params: IntegrationParams,
        querystring: EmptyQuery,
        response: {
          200: described('Deleted.', Success),
          ...errors(400, 401, 403),
          404: errorResponse('`not_found` "Integration does not exist".'),
        },
      },
    },
    async (request) => {
      const { uniqueKey } = request.params
      await deleteIntegration(db, request.principal.environmentId, uniqueKey, {
        deployedBy: deployer(request.principal),
        source: `DELETE /integrations/${uniqueKey}`,
      })
      return { success: true }
    },
  )
}
