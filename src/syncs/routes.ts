import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import { requireConnection } from '../connections/service.ts'
import type { Sealer } from '../crypto.ts'
import { readDefinitions } from '../deployments/store.ts'
import { HttpError } from '../errors.ts'
import { described, EmptyQuery, errorResponse, errors, Success } from '../http/schemas.ts'
import { BASE_VARIANT } from '../records/datasets.ts'
import {
  FrequencyBody,
  PauseStartBody,
  StatusQuery,
  SyncStatus,
  TriggerBody,
  TriggerHeaders,
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
import { updateFrequency } from './variants.ts'
import { variantRoutes } from './variant-routes.ts'

/** A connection_id that names no connection of the integration (trigger, pause, start). */
const UNKNOWN_CONNECTION = errorResponse(
  "`unknown_connection`: connection_id names no connection of the integration in the key's environment.",
)

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
        tags: ['syncs'],
        summary: 'Run syncs now',
        description:
          'Runs the named syncs (all of them for an empty `syncs`) of one connection, or of every ' +
          'connection of the integration when no connection is named. A paused sync runs once and stays ' +
          'paused. `opts.reset` (or the deprecated `sync_mode` / `full_resync`) starts from an empty ' +
          'checkpoint; `opts.emptyCache` with it also deletes the records first. Where we differ from ' +
          'Nango on purpose: a trigger while the sync is running is not dropped (one follow-up run is ' +
          'queued and starts when the current run ends; still 200); a reset clears exactly that sync ' +
          "variant's checkpoints (Nango matches by prefix); and every named sync is checked before " +
          'anything changes, so an unknown name never leaves the command half applied.',
        operationId: 'triggerSyncs',
        querystring: EmptyQuery,
        headers: TriggerHeaders,
        body: TriggerBody,
        response: {
          200: described('The runs are requested.', Success),
          ...errors(401, 403, 415),
          400: errorResponse(
            'Invalid parameters (`invalid_query_params`, `invalid_headers`, `invalid_body`, ' +
              '`invalid_json`; `invalid_body` also for `opts` together with `sync_mode` or ' +
              '`full_resync`), `missing_provider_config_key`, `unknown_provider_config` for an ' +
              'integration that has no definitions, or `no_syncs_found` when a named sync does not ' +
              'exist (or none does).',
          ),
          404: UNKNOWN_CONNECTION,
        },
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

  for (const [url, command, doc] of [
    [
      '/sync/pause',
      pauseSyncs,
      {
        summary: 'Pause syncs',
        description:
          'A run in progress finishes, waiting runs are cancelled and no new one starts until ' +
          '/sync/start.',
        operationId: 'pauseSyncs',
        answer: 'Paused (syncs already paused stay so).',
      },
    ],
    [
      '/sync/start',
      startSyncs,
      {
        summary: 'Resume paused syncs',
        description:
          'Each paused sync runs at once, then on its frequency; syncs that are not paused are left alone.',
        operationId: 'startSyncs',
        answer: 'Resumed.',
      },
    ],
  ] as const) {
    app.post(
      url,
      {
        config: { scope: 'environment:syncs:execute' },
        schema: {
          tags: ['syncs'],
          summary: doc.summary,
          description:
            `${doc.description} Like Nango, the query string is not checked. Unlike Nango, every ` +
            'named sync is checked before anything changes.',
          operationId: doc.operationId,
          body: PauseStartBody,
          response: {
            200: described(doc.answer, Success),
            ...errors(401, 403, 415),
            400: errorResponse(
              'Invalid parameters (`invalid_body`, `invalid_json`), `unknown_provider_config` for an ' +
                'integration that has no definitions, or `no_syncs_found` when a named sync does not ' +
                'exist (or none does).',
            ),
            404: UNKNOWN_CONNECTION,
          },
        },
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
        tags: ['syncs'],
        summary: 'Status of syncs',
        description:
          'One item per sync variant of the connection (or of every connection of the integration). An ' +
          'unknown integration or sync name is not an error: it matches nothing. Where we differ from ' +
          "Nango on purpose: `recordCount` counts the variant's own records (Nango counts only the base " +
          "model's).",
        operationId: 'getSyncStatus',
        querystring: StatusQuery,
        response: {
          200: described('The matching syncs.', Type.Object({ syncs: Type.Array(SyncStatus) })),
          ...errors(401, 403, 415),
          400: errorResponse(
            '`invalid_query_params` (with `errors`), or `invalid_body` "Connection not found" (Nango\'s ' +
              "code) when connection_id names no connection of the key's environment.",
          ),
        },
      },
    },
    async (request) => {
      const q = request.query
      const environmentId = request.principal.environmentId
      let connectionPk: number | undefined
      if (q.connection_id !== undefined) {
        const connection = await requireConnection(
          opts.db,
          environmentId,
          q.provider_config_key,
          q.connection_id,
          () => new HttpError(400, 'invalid_body', 'Connection not found'),
        )
        connectionPk = connection.id
      }
      const selectors = q.syncs === '*' ? 'all' : q.syncs.split(',').map((s) => toSelector(s))
      const rows = await findSyncs(
        opts.db,
        { environmentId, providerConfigKey: q.provider_config_key, connectionPk },
        selectors,
      )
      return {
        syncs: await syncStatuses(opts.db, sealer, await readDefinitions(opts.db, environmentId), rows),
      }
    },
  )

  app.put(
    '/sync/update-connection-frequency',
    {
      config: { scope: 'environment:syncs:update' },
      schema: {
        tags: ['syncs'],
        summary: "Override one connection's sync frequency (null reverts to the definition's)",
        description:
          'The schedule takes the new frequency at once. The answer is the frequency now in effect, ' +
          'normalised as Nango does (`every 2 hours` answers `2 hours`, `every hour` answers `1h`).',
        operationId: 'updateConnectionFrequency',
        querystring: EmptyQuery,
        body: FrequencyBody,
        response: {
          200: described('The frequency in effect.', Type.Object({ frequency: Type.String() })),
          ...errors(401, 403, 415),
          400: errorResponse(
            'Invalid parameters, `invalid_body` "Sync interval is invalid" (also under 30 seconds or ' +
              'over 365 days), `unknown_connection`, or `unknown_sync` when the connection has no such ' +
              'sync variant.',
          ),
        },
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

  variantRoutes(app, opts)
}
