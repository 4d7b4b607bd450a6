import type { ServerResponse } from 'node:http'

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'

import { requireConnection, unknownConnection } from '../connections/service.ts'
import type { Sealer } from '../crypto.ts'
import type { Db } from '../db/connect.ts'
import { inTransaction } from '../db/transaction.ts'
import { HttpError } from '../errors.ts'
import type { Metrics } from '../metrics/metrics.ts'
import { invalidRequest } from '../http/errors.ts'
import { described, EmptyQuery, errorResponse, errors } from '../http/schemas.ts'
import { type CursorPosition, decodeCursor, isStorableTimestamp } from './cursor.ts'
import { BASE_VARIANT, type Dataset } from './datasets.ts'
import { pruneRecords } from './prune.ts'
import { PageMemory, RecordSizeHints } from './page-memory.ts'
import { ReadAhead } from './read-ahead.ts'
import { recycleBody } from './format.ts'
import {
  type Action,
  datasetMark,
  largestRecordBytes,
  type PageQuery,
  type PageTarget,
  readPage,
} from './read.ts'
import { ConnectionHeaders, GetRecordsQuery, PruneBody, PruneResponse, RecordsPage } from './schemas.ts'

export interface RecordRoutesOptions {
  db: Db
  sealer: Sealer
  /** SYNCSTORE_MAX_PAGE_BYTES: no GET /records response is larger (one record always fits). */
  maxPageBytes: number
  /** SYNCSTORE_PAGE_MEMORY_BYTES: GET /records bodies this process holds at once. */
  pageMemoryBytes: number
  /** SYNCSTORE_READ_AHEAD_PAGES: pages read ahead for readers that page in order (0: none). */
  readAheadPages: number
  /** Counts the records GET /records returns */
  metrics?: Metrics | undefined
}

/**
 * How long a page waits for room in the page memory before it is 503: a 10 MiB page to a client
 * reading at 50 Mbit/s is gone in under 2 s, so a page that waits longer waits for clients that are
 * not reading, whose sockets the idle timeout closes much later. Retry-After says the same.
 */
const PAGE_WAIT_MS = 2000
/**
 * The least a page reserves: an empty page, or a few ordinary records of a dataset that was empty
 * when its hint was taken (the page is cut at the reservation, so a hint of 0 would mean one record).
 */
const MIN_PAGE_RESERVATION = 64 * 1024
/**
 * How long a page read ahead waits for its reader: a reader paging in order asks within
 * milliseconds; one that stops for longer reads its next page itself.
 */
const READ_AHEAD_WAIT_MS = 5000

const GET_RECORDS =
  'Records of one model (and variant) of the connection named by the Connection-Id and ' +
  'Provider-Config-Key headers, ordered by (last_modified_at, internal id) and paged with ' +
  '`next_cursor`; `/records/` is the same route. An unknown model, or a dataset with no records, ' +
  'answers an empty page. Where we differ from Nango on purpose: a cursor that does not decode is ' +
  '400 `invalid_cursor` (Nango: 500); `filter` is a union (`added,deleted` returns both kinds, a ' +
  'repeated value counts once); `limit` must be an integer; `modified_after` takes any RFC 3339 ' +
  'time with `Z` or an offset, with no 12-month limit; a page is cut before it would exceed ' +
  'SYNCSTORE_MAX_PAGE_BYTES (default 10 MiB), though it always holds at least one record, and ' +
  '`next_cursor` continues after its last record (Nango documents this but ships it off); and a ' +
  'reader paging with `next_cursor` never misses a committed change, even while syncs write.'

const PRUNE_RECORDS =
  'Prunes, in cursor order, the records at or before `until_cursor` (inclusive) of one model and ' +
  'variant of the connection named by the headers: the payload is emptied and `pruned_at` set; the ' +
  'metadata and the cursor stay, and a later save restores the payload. Where we differ from Nango ' +
  'on purpose: `limit` defaults to 1000 a request (Nango\'s text says "all"); `has_more` is true ' +
  'exactly when unpruned records at or before `until_cursor` remain (Nango compares cursor strings ' +
  'and is often wrong); and an `until_cursor` that does not decode is 400 `invalid_cursor` (Nango: 500).'

function cursorParam(value: string, name: string): CursorPosition {
  const position = decodeCursor(value)
  if (!position) throw new HttpError(400, 'invalid_cursor', `${name} is not a valid cursor`)
  return position
}

export const recordRoutes: FastifyPluginAsyncTypebox<RecordRoutesOptions> = async (
  app,
  { db, sealer, maxPageBytes, pageMemoryBytes, readAheadPages, metrics },
) => {
  const memory = new PageMemory(pageMemoryBytes, PAGE_WAIT_MS)
  const hints = new RecordSizeHints()
  const readAhead = new ReadAhead(
    memory,
    (target, q) => readPage(db, sealer, target, q),
    (target) => datasetMark(db, target),
    {
      maxPages: readAheadPages,
      waitMs: READ_AHEAD_WAIT_MS,
      count: metrics && ((outcome) => metrics.pageReadAhead(outcome)),
    },
  )

  /**
   * The bytes a page reserves before it is read: (limit + 1) x the dataset's largest record, capped
   * at the page byte budget. The page is then read with the reservation as its byte budget, so it
   * can never be larger than what was reserved (but for the one record a page always returns).
   */
  async function pageBytes(target: PageTarget, limit: number): Promise<number> {
    const recordBytes = hints.get(hintKey(target)) ?? (await largestRecordBytes(db.kysely, target))
    return Math.min(maxPageBytes, memory.largest, Math.max(MIN_PAGE_RESERVATION, (limit + 1) * recordBytes))
  }

  /** The dataset a request names, or a 400 when its connection is not in the key's environment. */
  async function datasetOf(
    environmentId: number,
    headers: { 'connection-id': string; 'provider-config-key': string },
    model: string,
    variant: string | undefined,
  ): Promise<Dataset> {
    const connection = await requireConnection(
      db.kysely,
      environmentId,
      headers['provider-config-key'],
      headers['connection-id'],
    )
    return { connectionPk: connection.id, model, variant: variant ?? BASE_VARIANT }
  }

  app.get(
    '/records',
    {
      config: { scope: 'environment:records:read' },
      schema: {
        tags: ['records'],
        summary: "List a model's records, oldest change first",
        description: GET_RECORDS,
        operationId: 'getRecords',
        querystring: GetRecordsQuery,
        headers: ConnectionHeaders,
        response: {
          200: described(
            'One page. `next_cursor` is null when no record after this page matched when it was read.',
            RecordsPage,
          ),
          ...errors(401, 403, 415),
          400: errorResponse(
            '`invalid_query_params` or `invalid_headers` (with `errors`), `invalid_cursor` for a cursor ' +
              'that does not decode, or `unknown_connection` when the headers name no connection of ' +
              "the key's environment.",
          ),
          503: errorResponse(
            '`server_busy`: the pages this server holds in memory (SYNCSTORE_PAGE_MEMORY_BYTES, default ' +
              '64 MiB) left no room for this one within 2 s, as when many clients ask for large pages ' +
              'and do not read them; the connection is closed, retry after `Retry-After` seconds or ' +
              'with a smaller `limit`. Or `database_unavailable`.',
            { 'Retry-After': { type: 'integer', description: 'Seconds to wait before retrying.' } },
          ),
        },
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
      const target: PageTarget = {
        environmentId: request.principal.environmentId,
        providerConfigKey: request.headers['provider-config-key'],
        connectionId: request.headers['connection-id'],
        model: q.model,
        variant: q.variant ?? BASE_VARIANT,
      }
      const limit = q.limit ?? 100
      const query: PageQuery = {
        after,
        modifiedAfter: q.delta ?? q.modified_after,
        actions: q.filter ? new Set(q.filter.toLowerCase().split(',') as Action[]) : undefined,
        externalIds: q.ids,
        limit,
        maxBytes: await pageBytes(target, limit),
      }
      const ahead = await readAhead.take(target, query)
      const held = ahead?.held ?? (await memory.reserve(query.maxBytes, () => closedSignal(reply.raw)))
      if (!held) throw serverBusy(reply)
      // Held until the response has gone out or its socket closed (the idle timeout closes a
      // socket whose client stopped reading), whichever comes first: 'close' comes after either.
      if (reply.raw.closed) held.release()
      else reply.raw.once('close', held.release)
      try {
        const page = ahead?.page ?? (await readPage(db, sealer, target, query))
        if (!page) throw unknownConnection()
        hints.set(hintKey(target), page.maxRecordBytes)
        metrics?.recordsRead(page.count)
        // Already-serialised JSON, bypassing the 200 serializer.
        const body = page.body
        held.resize(body.length)
        // One write. While the socket takes any of it, Node holds off the idle timeout (net.Socket
        // compares its write queue between timeouts), so a slow reader gets the whole page and a
        // reader that takes nothing is cut off after SYNCSTORE_IDLE_TIMEOUT_MS.
        void reply.type('application/json; charset=utf-8').send(body as never)
        // 'close' comes once the response has been handed to the socket, or the socket has closed.
        if (!reply.raw.closed) reply.raw.once('close', () => recycleBody(body))
        // Once the page is written, and before its reader can ask for the next one.
        readAhead.follow(request.raw.socket, q.cursor, target, query, page, ahead !== null)
        return reply
      } catch (err) {
        held.release()
        throw err
      }
    },
  )

  app.patch(
    '/records/prune',
    {
      config: { scope: 'environment:records:write' },
      schema: {
        tags: ['records'],
        summary: "Empty the payloads of a model's records up to a cursor",
        description: PRUNE_RECORDS,
        operationId: 'pruneRecords',
        querystring: EmptyQuery,
        headers: ConnectionHeaders,
        body: PruneBody,
        response: {
          200: described('How many records this request pruned, and whether more remain.', PruneResponse),
          ...errors(401, 403, 415),
          400: errorResponse(
            '`invalid_query_params` (any query key), `invalid_headers`, `invalid_body` or `invalid_json`, ' +
              "`invalid_cursor`, or `unknown_connection` when the headers name no connection of the key's " +
              'environment.',
          ),
        },
      },
    },
    async (request) => {
      const body = request.body
      const until = cursorParam(body.until_cursor, 'until_cursor')
      const ds = await datasetOf(request.principal.environmentId, request.headers, body.model, body.variant)
      const { count, hasMore } = await inTransaction(db.kysely, (trx) =>
        pruneRecords(trx, ds, until, body.limit ?? 1000),
      )
      return { count, has_more: hasMore }
    },
  )
}

const hintKey = (t: PageTarget) =>
  JSON.stringify([t.environmentId, t.providerConfigKey, t.connectionId, t.model, t.variant])

/**
 * Aborts when the response is done or its socket has closed ('close' comes after either), for a
 * page waiting for room. With a reason of our own: abort() without one builds a DOMException,
 * stack trace included.
 */
function closedSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController()
  if (res.closed) controller.abort(RESPONSE_CLOSED)
  else res.once('close', () => controller.abort(RESPONSE_CLOSED))
  return controller.signal
}

const RESPONSE_CLOSED = 'response closed'

/** The connection is closed after the 503: a client holding many sockets gets fewer. */
function serverBusy(reply: FastifyReply): HttpError {
  void reply.header('retry-after', String(PAGE_WAIT_MS / 1000)).header('connection', 'close')
  return new HttpError(
    503,
    'server_busy',
    'The server is sending as many large pages as its memory allows; retry, or ask for a smaller limit',
  )
}
