import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import { findConnectionRef } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import { HttpError } from '../http/errors.ts'
import { EmptyQuery, errors, Success } from '../http/schemas.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import {
  FrequencyBody,
  PauseStartBody,
  StatusQuery,
  SyncStatus,
  TriggerBody,
  TriggerHeaders,
  VariantBody,
  VariantParams,
} from './schemas.ts'
import {
  pauseSyncs,
  resolveCommandTargets,
  startSyncs,
  type SyncServices,
  toSelector,
  triggerSyncs,
} from './service.ts'
import { syncStatuses } from './status.ts'
import { findSyncs } from './store.ts'
import { createVariant, deleteVariant, updateFrequency } from './variants.ts'

export interface SyncRoutesOptions extends SyncServices {
  sealer: Sealer
}

/** Nango's sync-control routes (packages/server/lib/controllers/sync), with SPEC section 4's differences. */
export const syncRoutes: FastifyPluginAsyncTypebox<SyncRoutesOptions> = async (app, opts) => {
  const { sealer } = opts

  app.post(
    '/sync/trigger',
    {
      config: { scope: 'environment:syncs:execute' },
      schema: {
        querystring: EmptyQuery,
        headers: TriggerHeaders,
        body: TriggerBody,
        response: { 200: Success, ...errors(400, 401, 403, 404, 415) },
      },
    },
    async (request) => {
      const body = request.body
      const providerConfigKey = body.provider_config_key || request.headers['provider-config-key']
      if (!providerConfigKey) {
        throw new HttpError(
          400,
          'missing_provider_config_key',
          'Missing provider_config_key. Provide it in the body or headers.',
        )
      }
      if (body.opts && (body.sync_mode !== undefined || body.full_resync !== undefined)) {
        throw new HttpError(
          400,
          'invalid_body',
          'Cannot use opts with deprecated sync_mode/full_resync parameters',
        )
      }
      // Nango's mapping of the deprecated forms; emptyCache only counts together with a reset.
      const reset = body.opts
        ? body.opts.reset === true
        : body.sync_mode
          ? body.sync_mode !== 'incremental'
          : body.full_resync === true
      const emptyCache =
        reset &&
        (body.opts ? body.opts.emptyCache === true : body.sync_mode === 'full_refresh_and_clear_cache')
      const rows = await resolveCommandTargets(opts, {
        environmentId: request.principal.environmentId,
        providerConfigKey,
        connectionId: body.connection_id || request.headers['connection-id'],
        selectors: body.syncs.map(toSelector),
      })
      await triggerSyncs(opts, rows, { reset, emptyCache })
      return { success: true }
    },
  )

  for (const [url, command] of [
    ['/sync/pause', pauseSyncs],
    ['/sync/start', startSyncs],
  ] as const) {
    app.post(
      url,
      {
        config: { scope: 'environment:syncs:execute' },
        schema: { body: PauseStartBody, response: { 200: Success, ...errors(400, 401, 403, 404, 415) } },
      },
      async (request) => {
        const body = request.body
        const rows = await resolveCommandTargets(opts, {
          environmentId: request.principal.environmentId,
          providerConfigKey: body.provider_config_key,
          connectionId: body.connection_id,
          selectors: body.syncs.map(toSelector),
        })
        await command(opts, rows)
        return { success: true }
      },
    )
  }

  app.get(
    '/sync/status',
    {
      config: { scope: 'environment:syncs:read' },
      schema: {
        querystring: StatusQuery,
        response: { 200: Type.Object({ syncs: Type.Array(SyncStatus) }), ...errors(400, 401, 403, 415) },
      },
    },
    async (request) => {
      const q = request.query
      const environmentId = request.principal.environmentId
      let connectionId: number | undefined
      if (q.connection_id !== undefined) {
        const connection = await findConnectionRef(
          opts.db,
          environmentId,
          q.provider_config_key,
          q.connection_id,
        )
        if (!connection) throw new HttpError(400, 'invalid_body', 'Connection not found')
        connectionId = connection.id
      }
      const selectors = q.syncs === '*' ? 'all' : q.syncs.split(',').map((s) => toSelector(s))
      const rows = await findSyncs(
        opts.db,
        { environmentId, providerConfigKey: q.provider_config_key, connectionId },
        selectors,
      )
      return { syncs: await syncStatuses(opts.db, sealer, opts.definitions(), rows) }
    },
  )

  app.put(
    '/sync/update-connection-frequency',
    {
      config: { scope: 'environment:syncs:update' },
      schema: {
        querystring: EmptyQuery,
        body: FrequencyBody,
        response: { 200: Type.Object({ frequency: Type.String() }), ...errors(400, 401, 403, 415) },
      },
    },
    async (request) => {
      const b = request.body
      const frequency = await updateFrequency(opts, {
        environmentId: request.principal.environmentId,
        providerConfigKey: b.provider_config_key,
        connectionId: b.connection_id,
        name: b.sync_name,
        variant: b.sync_variant ?? BASE_VARIANT,
        frequency: b.frequency,
      })
      return { frequency }
    },
  )

  app.post(
    '/sync/:name/variant/:variant',
    {
      config: { scope: 'environment:syncs:variant:create' },
      schema: {
        params: VariantParams,
        querystring: EmptyQuery,
        body: VariantBody,
        response: {
          200: Type.Object({ id: Type.String(), name: Type.String(), variant: Type.String() }),
          ...errors(400, 401, 403, 415),
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
        params: VariantParams,
        querystring: EmptyQuery,
        body: VariantBody,
        response: { 200: Success, ...errors(400, 401, 403, 404, 415) },
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
