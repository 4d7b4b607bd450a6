import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import { described, EmptyQuery, errors } from '../http/schemas.ts'
import type { Definitions } from './definitions.ts'
import { IntegrationItem } from './schemas.ts'

/**
 * GET /integrations: the integrations found in SYNCSTORE_INTEGRATIONS_DIR, in Nango's shape
 * (`{data: [...]}`), each with its syncs listed under `syncs` (ours; Nango lists them elsewhere).
 */
export const integrationsRoute: FastifyPluginAsyncTypebox<{
  definitions: () => Definitions
  publicUrl: string
}> = async (app, { definitions, publicUrl }) => {
  app.get(
    '/integrations',
    {
      config: { scope: ['environment:integrations:list', 'environment:integrations:list_credentials'] },
      schema: {
        tags: ['syncs'],
        summary: 'List the integrations found in SYNCSTORE_INTEGRATIONS_DIR',
        description:
          "Nango's shape (`{data: [...]}`), sorted by provider then unique key. Ours: each integration " +
          'also lists its syncs under `syncs`. Integrations are files shared by every environment, so ' +
          'every key sees the same list; there are never credentials in it.',
        operationId: 'listIntegrations',
        querystring: EmptyQuery,
        response: {
          200: described('The integrations.', Type.Object({ data: Type.Array(IntegrationItem) })),
          ...errors(400, 401, 403),
        },
      },
    },
    async () => {
      const data = [...definitions().integrations.values()].map((integration) => {
        const provider = integration.config.provider ?? integration.key
        return {
          unique_key: integration.key,
          provider,
          display_name: integration.config.display_name ?? integration.key,
          logo: `${publicUrl}/images/template-logos/${provider}.svg`,
          forward_webhooks: true,
          created_at: integration.createdAt.toISOString(),
          updated_at: integration.updatedAt.toISOString(),
          syncs: integration.syncs.map((s) => ({
            name: s.name,
            description: s.description,
            frequency: s.frequency,
            models: Object.keys(s.models),
            auto_start: s.autoStart,
            sync_type: s.syncType,
            track_deletes: s.trackDeletes,
          })),
        }
      })
      data.sort((a, b) => a.provider.localeCompare(b.provider) || a.unique_key.localeCompare(b.unique_key))
      return { data }
    },
  )
}
