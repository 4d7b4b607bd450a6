import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'

import { findConnectionRef } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Db } from '../db/connect.ts'
import { HttpError, invalidRequest } from '../http/errors.ts'
import { EmptyQuery, errors } from '../http/schemas.ts'
import { type CursorPosition, decodeCursor, isStorableTimestamp } from './cursor.ts'
import { BASE_VARIANT, type Dataset } from './datasets.ts'
import { renderPage } from './format.ts'
import { pruneRecords } from './prune.ts'
import { type Action, readPage } from './read.ts'
import { ConnectionHeaders, GetRecordsQuery, PruneBody, PruneResponse, RecordsPage } from './schemas.ts'

export interface RecordRoutesOptions {
  db: Db
  sealer: Sealer
  /** SYNCSTORE_MAX_PAGE_BYTES: no GET /records response is larger (one record always fits). */
  maxPageBytes: number
}

const unknownConnection = () =>
  new HttpError(
    400,
    'unknown_connection',
    'Provided ConnectionId and ProviderConfigKey does not match a valid connection',
  )

function cursorParam(value: string, name: string): CursorPosition {
  const position = decodeCursor(value)
  if (!position) throw new HttpError(400, 'invalid_cursor', `${name} is not a valid cursor`)
  return position
}

export const recordRoutes: FastifyPluginAsyncTypebox<RecordRoutesOptions> = async (
  app,
  { db, sealer, maxPageBytes },
) => {
  /** The dataset a request names, or a 400 when its connection is not in the key's environment. */
  async function datasetOf(
    environmentId: number,
    headers: { 'connection-id': string; 'provider-config-key': string },
    model: string,
    variant: string | undefined,
  ): Promise<Dataset> {
    const connection = await findConnectionRef(
      db.kysely,
      environmentId,
      headers['provider-config-key'],
      headers['connection-id'],
    )
    if (!connection) throw unknownConnection()
    return { connectionId: connection.id, model, variant: variant ?? BASE_VARIANT }
  }

  app.get(
    '/records',
    {
      config: { scope: 'environment:records:read' },
      schema: {
        querystring: GetRecordsQuery,
        headers: ConnectionHeaders,
        response: { 200: RecordsPage, ...errors(400, 401, 403, 415) },
      },
    },
    async (request, reply) => {
      const q = request.query
      for (const key of ['delta', 'modified_after'] as const) {
        const value = q[key]
        if (value !== undefined && !isStorableTimestamp(value)) {
          throw invalidRequest('querystring', [
            { code: 'invalid_format', message: 'Invalid date-time', path: [key] },
          ])
        }
      }
      const after = q.cursor === undefined ? undefined : cursorParam(q.cursor, 'cursor')
      const page = await readPage(
        db.kysely,
        sealer,
        {
          environmentId: request.principal.environmentId,
          providerConfigKey: request.headers['provider-config-key'],
          connectionId: request.headers['connection-id'],
          model: q.model,
          variant: q.variant ?? BASE_VARIANT,
        },
        {
          after,
          modifiedAfter: q.delta ?? q.modified_after,
          actions: q.filter ? new Set(q.filter.toLowerCase().split(',') as Action[]) : undefined,
          externalIds: q.ids,
          limit: q.limit ?? 100,
          maxBytes: maxPageBytes,
        },
      )
      if (!page) throw unknownConnection()
      // Already-serialised JSON, bypassing the 200 serializer. As a Buffer, not a string: Node would
      // otherwise measure the text, then copy it once more to put the headers in front of it.
      return reply.type('application/json; charset=utf-8').send(Buffer.from(renderPage(page)) as never)
    },
  )

  app.patch(
    '/records/prune',
    {
      config: { scope: 'environment:records:write' },
      schema: {
        querystring: EmptyQuery,
        headers: ConnectionHeaders,
        body: PruneBody,
        response: { 200: PruneResponse, ...errors(400, 401, 403, 415) },
      },
    },
    async (request) => {
      const body = request.body
      const until = cursorParam(body.until_cursor, 'until_cursor')
      const ds = await datasetOf(request.principal.environmentId, request.headers, body.model, body.variant)
      const { count, hasMore } = await pruneRecords(db.kysely, ds, until, body.limit ?? 1000)
      return { count, has_more: hasMore }
    },
  )
}
