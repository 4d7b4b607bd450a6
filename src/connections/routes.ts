import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import type { Sealer } from '../crypto.ts'
import { freshConnection, type OAuthAppOf } from '../credentials/refresh.ts'
import type { Db } from '../db/connect.ts'
import { readProviders } from '../deployments/store.ts'
import { HttpError } from '../errors.ts'
import { described, EmptyQuery, errorResponse, errors, stringBoolValue, Success } from '../http/schemas.ts'
import { satisfies } from '../keys/scopes.ts'
import { connectionFull, connectionListItem, withoutRefreshTokens } from './format.ts'
import {
  ConnectionFull,
  ConnectionListItem,
  ConnectionParams,
  DeleteConnectionQuery,
  GetConnectionQuery,
  ListConnectionsQuery,
  MetadataBody,
  PostConnectionBody,
} from './schemas.ts'
import { changeMetadata, importConnection, type MetadataMode, unknownConnection } from './service.ts'
import { deleteConnection, findConnection, listConnections } from './store.ts'

export interface ConnectionRoutesOptions {
  db: Db
  sealer: Sealer
  /** The provider and OAuth client a connection's token is refreshed with */
  oauthApp: OAuthAppOf
}

const READ_CREDENTIALS = 'environment:connections:read_credentials'

export const connectionRoutes: FastifyPluginAsyncTypebox<ConnectionRoutesOptions> = async (app, opts) => {
  const { db, sealer } = opts
  const refreshDeps = { db: db.kysely, sealer, oauthApp: opts.oauthApp }

  app.post(
    '/connections',
    {
      config: { scope: 'environment:connections:create' },
      schema: {
        tags: ['connections'],
        summary: 'Import a connection (overwrites an existing one with the same ids)',
        description:
          'Credentials, metadata, connection_config and tags are replaced by what is sent; fields left ' +
          'out are reset. Credentials and metadata are encrypted at rest when SYNCSTORE_ENCRYPTION_KEY is set.',
        operationId: 'postConnection',
        querystring: EmptyQuery,
        body: PostConnectionBody,
        response: {
          201: described(
            'The stored connection, with its credentials; timestamps end in `Z`.',
            ConnectionFull,
          ),
          ...errors(400, 401, 403, 415),
        },
      },
    },
    async (request, reply) => {
      const { connection } = await importConnection(
        db.kysely,
        sealer,
        request.principal.environmentId,
        request.body,
      )
      const providerOf = await readProviders(db.kysely, request.principal.environmentId)
      return reply.code(201).send(connectionFull(connection, providerOf, connection.credentials ?? {}, 'iso'))
    },
  )

  app.get(
    '/connections',
    {
      config: { scope: ['environment:connections:list', 'environment:connections:list_credentials'] },
      schema: {
        tags: ['connections'],
        summary: 'List connections, newest first (never with credentials)',
        description:
          'Tags filter as `tags[key]=value` query parameters (deepObject style): a connection must carry ' +
          'every pair given. Keys are compared lower-cased, and match `^[a-zA-Z][a-zA-Z0-9_\\-./]{0,63}$`.',
        operationId: 'listConnections',
        querystring: ListConnectionsQuery,
        response: {
          200: described(
            'The matching connections.',
            Type.Object({ connections: Type.Array(ConnectionListItem) }),
          ),
          ...errors(400, 401, 403),
        },
      },
    },
    async (request) => {
      const q = request.query
      const tags: Record<string, string> = {}
      for (const [key, value] of Object.entries(q as Record<string, unknown>)) {
        const match = /^tags\[(.+)\]$/.exec(key)
        if (match?.[1]) tags[match[1].toLowerCase()] = String(value)
      }
      // Nango answers up to 10,000 connections when no limit is given.
      const limit = q.limit ?? 10_000
      const rows = await listConnections(db.kysely, sealer, request.principal.environmentId, {
        connectionId: q.connectionId,
        search: q.search,
        endUserId: q.endUserId,
        integrationIds: q.integrationId?.split(',').map((s) => s.trim()),
        tags,
        limit,
        offset: (q.page ?? 0) * limit,
      })
      const providerOf = await readProviders(db.kysely, request.principal.environmentId)
      return { connections: rows.map((row) => connectionListItem(row, providerOf)) }
    },
  )

  app.get(
    '/connections/:connectionId',
    {
      config: { scope: ['environment:connections:read', READ_CREDENTIALS] },
      schema: {
        tags: ['connections'],
        summary: 'Get one connection',
        description:
          `Credentials are included only for a key with ${READ_CREDENTIALS} (otherwise \`{}\`), and ` +
          'refresh tokens are removed from them unless refresh_token is true. With credentials, an OAuth2 ' +
          'access token that expires within 15 minutes is refreshed first (force_refresh=true: whatever ' +
          'its expiry), and an OAUTH2_CC one obtained anew. A failed refresh is kept on the connection: ' +
          "`errors` holds `{type: 'auth', message, failed_at, attempts}` until a refresh succeeds.",
        operationId: 'getConnection',
        params: ConnectionParams,
        querystring: GetConnectionQuery,
        response: {
          200: described('The connection; timestamps end in `+00:00`.', ConnectionFull),
          ...errors(401),
          400: errorResponse(
            'Invalid parameters (`invalid_query_params`, `invalid_uri_params`), or `invalid_credentials`: ' +
              'the credentials needed a refresh and the provider refused it (the message says what it answered).',
          ),
          424: errorResponse(
            '`invalid_credentials`: a refresh failed less than 30 s ago and is not retried yet (its message ' +
              'is repeated); force_refresh=true retries at once.',
          ),
          403: errorResponse(
            `\`forbidden\`: the key lacks the scope, or asks for a refresh without ${READ_CREDENTIALS}.`,
          ),
          404: errorResponse('`not_found` "Failed to find connection"'),
        },
      },
    },
    async (request) => {
      const {
        provider_config_key: pck,
        refresh_token: refreshToken,
        force_refresh: forceRefresh,
      } = request.query
      const mayReadCredentials = satisfies(request.principal.scopes, READ_CREDENTIALS)
      if (!mayReadCredentials && (stringBoolValue(refreshToken) || stringBoolValue(forceRefresh))) {
        throw new HttpError(
          403,
          'forbidden',
          `Credential and refresh options require the ${READ_CREDENTIALS} scope`,
        )
      }
      const key = {
        environmentId: request.principal.environmentId,
        providerConfigKey: pck,
        connectionId: request.params.connectionId,
      }
      // Credentials are refreshed only for a caller who gets them (as Nango).
      const connection = mayReadCredentials
        ? await freshConnection(refreshDeps, key, { force: stringBoolValue(forceRefresh) })
        : await findConnection(db.kysely, sealer, key.environmentId, pck, key.connectionId)
      if (!connection) throw new HttpError(404, 'not_found', 'Failed to find connection')
      let credentials: Record<string, unknown> = {}
      if (mayReadCredentials && connection.credentials) {
        credentials = stringBoolValue(refreshToken)
          ? connection.credentials
          : (withoutRefreshTokens(connection.credentials) as Record<string, unknown>)
      }
      const providerOf = await readProviders(db.kysely, request.principal.environmentId)
      return connectionFull(connection, providerOf, credentials, 'offset')
    },
  )

  app.delete(
    '/connections/:connectionId',
    {
      config: { scope: 'environment:connections:delete' },
      schema: {
        tags: ['connections'],
        summary: 'Delete a connection',
        operationId: 'deleteConnection',
        params: ConnectionParams,
        querystring: DeleteConnectionQuery,
        response: {
          200: described('Deleted.', Success),
          ...errors(401, 403),
          400: errorResponse(
            "Invalid parameters, or `unknown_connection` when no such connection exists in the key's " +
              'environment (Nango answers 400 here, not 404).',
          ),
        },
      },
    },
    async (request) => {
      const deleted = await deleteConnection(
        db.kysely,
        request.principal.environmentId,
        request.query.provider_config_key,
        request.params.connectionId,
      )
      if (!deleted) throw unknownConnection()
      return { success: true }
    },
  )

  const metadataRoute = (
    method: 'POST' | 'PATCH',
    mode: MetadataMode,
    status: 200 | 201,
    doc: { summary: string; operationId: string },
  ) =>
    app.route({
      method,
      url: '/connections/metadata',
      config: { scope: 'environment:connections:update' },
      schema: {
        tags: ['connections'],
        ...doc,
        description: 'All or nothing; the response echoes the request body.',
        querystring: EmptyQuery,
        body: MetadataBody,
        response: {
          // One of the two, typed as both so the handler's reply.code(status) checks.
          ...({ [status]: described('The request body, as sent.', MetadataBody) } as {
            200: typeof MetadataBody
            201: typeof MetadataBody
          }),
          ...errors(400, 401, 403),
          404: errorResponse('`unknown_connection`: a named connection does not exist; nothing was changed.'),
        },
      },
      handler: async (request, reply) => {
        const body = request.body
        const ids = typeof body.connection_id === 'string' ? [body.connection_id] : body.connection_id
        await changeMetadata(
          db.kysely,
          sealer,
          request.principal.environmentId,
          body.provider_config_key,
          ids,
          body.metadata,
          mode,
        )
        // Nango answers with the request body as sent.
        return reply.code(status).send(body)
      },
    })
  metadataRoute('POST', 'replace', 201, {
    summary: 'Replace the metadata of one or more connections of an integration',
    operationId: 'setMetadata',
  })
  metadataRoute('PATCH', 'merge', 200, {
    summary: 'Merge metadata (shallowly) into one or more connections of an integration',
    operationId: 'updateMetadata',
  })
}
