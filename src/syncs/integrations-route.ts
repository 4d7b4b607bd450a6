import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import type { Kysely } from 'kysely'

import type { Database } from '../db/database.ts'
import { readDefinitions } from '../deployments/store.ts'
import { described, EmptyQuery, errors } from '../http/schemas.ts'
import { IntegrationItem } from './schemas.ts'

/**
 * GET /integrations: the environment's deployed integrations, in Nango's shape (`{data: [...]}`),
 * each with its syncs listed under `syncs` (ours; Nango lists them elsewhere).
 */
export const integrationsRoute: FastifyPluginAsyncTypebox<{
  db: Kysely<Database>
  publicUrl: string
}> = async (app, { db, publicUrl }) => {
  app.get(
    '/integrations',
    {
      config: { scope: ['environment:integrations:list', 'environment:integrations:list_credentials'] },
      schema: {
        tags: ['syncs'],
        summary: "List the environment's deployed integrations",
        description:
          "Nango's shape (`{data: [...]}`), sorted by provider then unique key. Ours: each integration " +
          'also lists its deployed syncs under `syncs`. An environment has the integrations deployed to ' +
          'it (`syncstore deploy`, or the folder `syncstore serve` deploys); there are never credentials in it.',
        operationId: 'listIntegrations',
        querystring: EmptyQuery,
        response: {
          200: described('The integrations.', Type.Object({ data: Type.Array(IntegrationItem) })),
          ...errors(400, 401, 403),
        },
      },
    },
    async (request) => {
      const { integrations } = await readDefinitions(db, request.principal.environmentId)
      const data = [...integrations.values()].map((integration) => {
        const provider = integration.provider
        return {
          unique_key: integration.key,
          provider,
          display_name: integration.displayName,
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
