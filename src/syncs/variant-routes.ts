import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import { described, EmptyQuery, errorResponse, errors, Success } from '../http/schemas.ts'
import { VariantBody, VariantParams } from './schemas.ts'
import type { SyncServices } from './service.ts'
import { createVariant, deleteVariant } from './variants.ts'

type App = Parameters<FastifyPluginAsyncTypebox>[0]

/** `POST|DELETE /sync/{name}/variant/{variant}`: registered by syncRoutes, after its other routes. */
export function variantRoutes(app: App, opts: SyncServices): void {
  app.post(
    '/sync/:name/variant/:variant',
    {
      config: { scope: 'environment:syncs:variant:create' },
      schema: {
        tags: ['syncs'],
        summary: "Create a variant of a connection's sync",
        description:
          'A variant is one more copy of the sync with its own schedule, checkpoint and records (read ' +
          'them with `variant=` on GET /records). It starts at once, or paused when the definition has ' +
          '`autoStart: false`. At most 100 variants per sync and connection, the base one included.',
        operationId: 'createSyncVariant',
        params: VariantParams,
        querystring: EmptyQuery,
        body: VariantBody,
        response: {
          200: described(
            'The new variant.',
            Type.Object({ id: Type.String(), name: Type.String(), variant: Type.String() }),
          ),
          ...errors(401, 403, 415),
          400: errorResponse(
            'Invalid parameters, `invalid_variant` for `base` (in any case), `unknown_connection`, ' +
              '`unknown_provider_config`, `unknown_sync`, `sync_variant_already_exists` or `resource_capped`.',
          ),
        },
      },
    },
    async (request) =>
      createVariant(opts, {
        environmentId: request.principal.environmentId,
        providerConfigKey: request.body.provider_config_key,
        connectionId: request.body.connection_id,
        name: request.params.name,
        variant: request.params.variant,
      }),
  )

  app.delete(
    '/sync/:name/variant/:variant',
    {
      config: { scope: 'environment:syncs:variant:delete' },
      schema: {
        tags: ['syncs'],
        summary: "Delete a variant of a connection's sync",
        description:
          'Its runs are cancelled (a running one stops at its next heartbeat or write). Where we differ ' +
          "from Nango on purpose: the variant's schedule, checkpoint and records are deleted at once " +
          "(Nango deletes records a day later, and the base model's rather than the variant's).",
        operationId: 'deleteSyncVariant',
        params: VariantParams,
        querystring: EmptyQuery,
        body: VariantBody,
        response: {
          200: described('Deleted.', Success),
          ...errors(401, 403, 415),
          400: errorResponse(
            'Invalid parameters, `invalid_variant` for `base` (in any case), or `unknown_connection`.',
          ),
          404: errorResponse('`not_found`: the connection has no such variant of the sync.'),
        },
      },
    },
    async (request) => {
      await deleteVariant(opts, {
        environmentId: request.principal.environmentId,
        providerConfigKey: request.body.provider_config_key,
        connectionId: request.body.connection_id,
        name: request.params.name,
        variant: request.params.variant,
      })
      return { success: true }
    },
  )
}
