import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { type RawBuilder, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { loadConfig } from '../../src/config.ts'
import { findConnectionRef } from '../../src/connections/store.ts'
import { setVariable } from '../../src/environments/variables-store.ts'
import { encodeCursor } from '../../src/records/cursor.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import { batchSave } from '../helpers/records.ts'

let t: TestApp
beforeAll(async () => {
  t = await startTestApp()
  await setVariable(t.db.kysely, t.sealer, t.envIds.dev, 'KEEP', 'kept')
  await seed()
  // A prod connection with records: a dev key must neither read nor prune them.
  await importConnection('prod', 'prod-only')
  await saveRecords('prod', 'prod-only')
})
afterAll(() => t.close())

const PCK = 'bad-input'
/** startTestApp leaves SYNCSTORE_BODY_LIMIT_BYTES unset, so the app has the default limit. */
const BODY_LIMIT = loadConfig({}).bodyLimitBytes

const MODEL = 'Contact'

/**
 * `fixture` is what reads, metadata changes and the records routes act on (its records are saved
 * again, which restores what a valid prune emptied); `doomed` is what the valid DELETE removes.
 */
async function seed() {
  for (const connectionId of ['fixture', 'doomed']) await importConnection('dev', connectionId)
  await saveRecords('dev', 'fixture')
}

async function importConnection(env: 'dev' | 'prod', connection_id: string) {
  const res = await t.app.inject({
    method: 'POST',
    url: '/connections',
    headers: bearer(t.keys[env]),
    payload: {
      provider_config_key: PCK,
      connection_id,
      metadata: { keep: true },
      credentials: { type: 'API_KEY', apiKey: 'secret' },
    },
  })
  expect(res.statusCode).toBe(201)
}

async function saveRecords(env: 'dev' | 'prod', connectionId: string) {
  const connection = await findConnectionRef(t.db.kysely, t.envIds[env], PCK, connectionId)
  const ds = { connectionPk: connection!.id, model: MODEL, variant: 'base' }
  await batchSave(t.db.kysely, t.sealer, ds, [
    { id: 'r1', name: 'one' },
    { id: 'r2', name: 'two' },
  ])
}

/** Every stored row, raw: a rejected request must leave all of it as it was. */
async function snapshot() {
  const all = async (query: RawBuilder<unknown>) => (await query.execute(t.db.kysely)).rows
  return {
    connections: await all(sql`SELECT * FROM connections ORDER BY id`),
    variables: await all(sql`SELECT * FROM environment_variables ORDER BY environment_id, name`),
    records: await all(sql`SELECT * FROM records ORDER BY id`),
    datasets: await all(sql`SELECT * FROM datasets ORDER BY connection_pk, model, variant`),
    syncs: await all(sql`SELECT * FROM syncs ORDER BY id`),
    schedules: await all(sql`SELECT * FROM schedules ORDER BY sync_id`),
    runs: await all(sql`SELECT * FROM runs ORDER BY id`),
  }
}

function expectStdError(res: LightMyRequestResponse, status: number, code: string) {
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status })
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  const body = res.json()
  expect(Object.keys(body)).toEqual(['error'])
  expect(body.error.code).toBe(code)
  for (const key of Object.keys(body.error)) expect(['code', 'message', 'errors']).toContain(key)
  if ('message' in body.error) expect(typeof body.error.message).toBe('string')
  for (const issue of body.error.errors ?? []) {
    expect(Object.keys(issue).sort()).toEqual(['code', 'message', 'path'])
    expect(issue.path.every((p: unknown) => typeof p === 'string')).toBe(true)
  }
  expect(res.body).not.toMatch(/<html|\n\s+at |node_modules|\.ts:\d+/i)
  return body.error as { code: string; message?: string; errors?: unknown[] }
}

interface BadCase {
  label: string
  url?: string
  /** Replaces the route's headers (besides the key). */
  headers?: Record<string, string>
  body?: unknown
  /** A body sent as is, with Content-Type: application/json. */
  raw?: string
  status: number
  code: string
  /** One of the reported issues, for validation failures. */
  issue?: Record<string, unknown>
}

type Issue = Record<string, unknown> | undefined
const badQuery = (label: string, url: string, issue?: Issue): BadCase => ({
  label,
  url,
  status: 400,
  code: 'invalid_query_params',
  issue,
})
const badParam = (label: string, url: string, status = 400): BadCase => ({
  label,
  url,
  status,
  code: 'invalid_uri_params',
})
const badBody = (label: string, body: unknown, issue?: Issue): BadCase => ({
  label,
  body,
  status: 400,
  code: 'invalid_body',
  issue,
})
const badRaw = (label: string, raw: string, status = 400, code = 'invalid_body'): BadCase => ({
  label,
  raw,
  status,
  code,
})

interface Route {
  name: string
  url: string
  headers?: Record<string, string>
  ok: number
  /**
   * The error code a valid request answers with: the test app has no sync definitions, so a valid
   * sync command gets past validation and then finds no integration (or no sync).
   */
  okCode?: string
  /** False where Nango does not check the query string (pause, start): unknown keys are ignored. */
  strictQuery?: boolean
  bad: BadCase[]
  body?: Record<string, unknown>
}
const methodOf = (route: Route) => route.name.split(' ')[0] as 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

const create = { provider_config_key: PCK, connection_id: 'fresh', metadata: { a: 1 } }
const metadata = { connection_id: 'fixture', provider_config_key: PCK, metadata: { a: 2 } }
const metadataCases: BadCase[] = [
  badBody('metadata null', { ...metadata, metadata: null }, { path: ['metadata'] }),
  badBody('metadata an array', { ...metadata, metadata: [1] }, { path: ['metadata'] }),
  badBody('metadata a string', { ...metadata, metadata: 'x' }, { path: ['metadata'] }),
  badBody('no metadata', { connection_id: 'fixture', provider_config_key: PCK }, { path: ['metadata'] }),
  badBody('an empty connection id', { ...metadata, connection_id: '' }, { code: 'invalid_union' }),
  badBody('a connection id with NUL', { ...metadata, connection_id: 'fix\u0000ture' }),
  badBody(
    'an empty provider_config_key',
    { ...metadata, provider_config_key: '' },
    { code: 'invalid_format' },
  ),
  badBody('an unknown key', { ...metadata, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
  badRaw(
    'a nested __proto__ key',
    JSON.stringify(metadata).replace('{"a":2}', '{"__proto__":{"admin":true}}'),
  ),
]
const oneConnection = (id: string, q = `provider_config_key=${PCK}`) => `/connections/${id}?${q}`
const connectionCases: BadCase[] = [
  badQuery('no provider_config_key', '/connections/fixture', { code: 'invalid_type' }),
  badQuery('a bad provider_config_key', oneConnection('fixture', 'provider_config_key=a/b')),
  badParam('bad connection id characters', oneConnection('a%3Cb%3E')),
  badParam('a NUL in the connection id', oneConnection('a%00b')),
  badParam('a connection id over 255 characters', oneConnection('a'.repeat(256))),
  badParam('a connection id over the router limit', oneConnection('a'.repeat(600)), 414),
  badParam('bad percent-encoding', oneConnection('%E0%A4%A')),
]
const credentials = (value: unknown, issue?: Issue) =>
  badBody(`credentials ${JSON.stringify(value)}`, { ...create, credentials: value }, issue)

const domainError = (label: string, status: number, code: string, c: Partial<BadCase>): BadCase => ({
  label,
  status,
  code,
  ...c,
})
const b64 = (text: string) => Buffer.from(text).toString('base64')
/** Cursor ids past the last safe JS integer (2^53 - 1), which a record id never reaches. */
const HUGE_IDS = ['9007199254740993', '9999999999999999', '99999999999999999999']
/** A cursor after every record, so the valid prune covers them all. */
const LAST_CURSOR = encodeCursor('2999-01-01T00:00:00.000000+00:00', 1)

const recordsHeaders = { 'connection-id': 'fixture', 'provider-config-key': PCK }
/** Cases on the Connection-Id / Provider-Config-Key headers of both records routes. */
const badHeaders = (label: string, headers: Record<string, string>, issue?: Issue): BadCase => ({
  label,
  headers,
  status: 400,
  code: 'invalid_headers',
  issue,
})
const headerCases: BadCase[] = [
  badHeaders(
    'no Connection-Id header',
    { 'provider-config-key': PCK },
    { code: 'invalid_type', path: ['connection-id'] },
  ),
  badHeaders(
    'no Provider-Config-Key header',
    { 'connection-id': 'fixture' },
    { code: 'invalid_type', path: ['provider-config-key'] },
  ),
  badHeaders(
    'bad Connection-Id characters',
    { ...recordsHeaders, 'connection-id': 'a<b>' },
    { path: ['connection-id'] },
  ),
  badHeaders(
    'a Connection-Id over 255 characters',
    { ...recordsHeaders, 'connection-id': 'a'.repeat(256) },
    { code: 'too_big' },
  ),
  badHeaders(
    'a bad Provider-Config-Key',
    { ...recordsHeaders, 'provider-config-key': 'a/b' },
    { path: ['provider-config-key'] },
  ),
  domainError('an unknown connection', 400, 'unknown_connection', {
    headers: { ...recordsHeaders, 'connection-id': 'nope' },
  }),
  domainError("a prod connection's ids, with a dev key", 400, 'unknown_connection', {
    headers: { ...recordsHeaders, 'connection-id': 'prod-only' },
  }),
]
const records = (query: string) => `/records?model=${MODEL}${query}`
const prune = { model: MODEL, until_cursor: LAST_CURSOR }

const syncCommand = { syncs: ['nightly'], provider_config_key: PCK, connection_id: 'fixture' }
/** Body cases shared by pause and start (strict body, no query check). */
const pauseStartCases: BadCase[] = [
  badBody('no body', undefined),
  badBody('no syncs', { provider_config_key: PCK }, { code: 'invalid_type', path: ['syncs'] }),
  badBody('syncs a string', { ...syncCommand, syncs: 'nightly' }, { path: ['syncs'] }),
  badBody('257 syncs', { ...syncCommand, syncs: Array(257).fill('nightly') }, { code: 'too_big' }),
  badBody('a sync object without a variant', { ...syncCommand, syncs: [{ name: 'nightly' }] }),
  badBody('a sync object with an unknown key', {
    ...syncCommand,
    syncs: [{ name: 'n', variant: 'v', x: 1 }],
  }),
  badBody('no provider_config_key', { syncs: [] }, { path: ['provider_config_key'] }),
  badBody(
    'a bad provider_config_key',
    { ...syncCommand, provider_config_key: 'a/b' },
    { path: ['provider_config_key'] },
  ),
  badBody(
    'bad connection id characters',
    { ...syncCommand, connection_id: 'a<b>' },
    { path: ['connection_id'] },
  ),
  badBody('an unknown key', { ...syncCommand, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
]
const frequency = {
  sync_name: 'nightly',
  provider_config_key: PCK,
  connection_id: 'fixture',
  frequency: 'every hour',
}
const variantTarget = { provider_config_key: PCK, connection_id: 'fixture' }
const variantCases: BadCase[] = [
  badParam('a bad sync name', '/sync/night.ly/variant/v1'),
  badParam('a sync name over 255 characters', `/sync/${'a'.repeat(256)}/variant/v1`),
  badParam('a bad variant', '/sync/nightly/variant/v%201'),
  badParam('a NUL in the variant', '/sync/nightly/variant/v%001'),
  domainError('the base variant', 400, 'invalid_variant', { url: '/sync/nightly/variant/base' }),
  domainError('the base variant, upper-case', 400, 'invalid_variant', { url: '/sync/nightly/variant/BASE' }),
  badBody('no body', undefined),
  badBody(
    'no connection_id',
    { provider_config_key: PCK },
    { code: 'invalid_type', path: ['connection_id'] },
  ),
  badBody(
    'bad connection id characters',
    { ...variantTarget, connection_id: 'a<b>' },
    { path: ['connection_id'] },
  ),
  badBody('a bad provider_config_key', { ...variantTarget, provider_config_key: '' }),
  badBody('an unknown key', { ...variantTarget, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
  domainError('an unknown connection', 400, 'unknown_connection', {
    body: { ...variantTarget, connection_id: 'nope' },
  }),
  domainError("a prod connection's ids", 400, 'unknown_connection', {
    body: { ...variantTarget, connection_id: 'prod-only' },
  }),
]

const routes: Route[] = [
  { name: 'GET /environment-variables', url: '/environment-variables', ok: 200, bad: [] },
  {
    name: 'POST /connections',
    url: '/connections',
    body: create,
    ok: 201,
    bad: [
      badBody('no body', undefined),
      badBody('an array body', [create]),
      badBody('no provider_config_key', { connection_id: 'x' }, { path: ['provider_config_key'] }),
      badBody('an unknown key', { ...create, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
      badBody(
        'bad connection id characters',
        { ...create, connection_id: 'a<b>' },
        { path: ['connection_id'] },
      ),
      badBody(
        'a NUL in connection_id',
        { ...create, connection_id: 'a\u0000b' },
        { path: ['connection_id'] },
      ),
      badBody('a NUL in a tag', { ...create, tags: { team: 'a\u0000b' } }),
      badBody('a NUL in connection_config', { ...create, connection_config: { a: 'a\u0000b' } }),
      badBody('a NUL in the end user id', { ...create, end_user: { id: 'a\u0000b' } }),
      badBody('a lone surrogate in a tag', { ...create, tags: { team: 'a\ud800b' } }),
      badBody('metadata an array', { ...create, metadata: [1] }, { path: ['metadata'] }),
      badBody('metadata a string', { ...create, metadata: 'x' }, { path: ['metadata'] }),
      badBody('eleven tags', {
        ...create,
        tags: Object.fromEntries([...'abcdefghijk'].map((k) => [k, 'v'])),
      }),
      badBody('a bad end user email', { ...create, end_user: { id: 'u', email: 'nope' } }),
      credentials('x', { path: ['credentials'] }),
      credentials({ type: 'SSH' }),
      credentials({ type: 'API_KEY' }, { code: 'invalid_type', path: ['credentials', 'apiKey'] }),
      credentials({ type: 'NONE', apiKey: 'k' }, { code: 'unrecognized_keys', path: ['credentials'] }),
      credentials({ type: 'OAUTH2', access_token: '' }, { code: 'too_small' }),
      credentials({ type: 'OAUTH2', access_token: 't', expires_at: 'soon' }, { code: 'invalid_format' }),
    ],
  },
  {
    name: 'GET /connections',
    url: '/connections?limit=10&page=0',
    ok: 200,
    bad: [
      badQuery('limit=abc', '/connections?limit=abc', { path: ['limit'] }),
      badQuery('limit=0', '/connections?limit=0', { code: 'too_small' }),
      badQuery('limit=10001', '/connections?limit=10001', { code: 'too_big' }),
      badQuery('limit=1.5', '/connections?limit=1.5'),
      badQuery('limit given twice', '/connections?limit=1&limit=2'),
      badQuery('page=-1', '/connections?page=-1', { path: ['page'] }),
      ...['1e20', String(2 ** 53), '1000000001'].map((page) =>
        badQuery(`page=${page}`, `/connections?page=${page}`, { code: 'too_big', path: ['page'] }),
      ),
      badQuery('page=Infinity', '/connections?page=Infinity', { path: ['page'] }),
      badQuery('a page of 400 digits', `/connections?page=${'9'.repeat(400)}`, { path: ['page'] }),
      badQuery('limit=1e20', '/connections?limit=1e20', { code: 'too_big', path: ['limit'] }),
      badQuery('an empty search', '/connections?search='),
      badQuery('a NUL in search', '/connections?search=a%00b'),
      badQuery('a bad tag key', '/connections?tags[1a]=x'),
    ],
  },
  {
    name: 'GET /connections/{connectionId}',
    url: oneConnection('fixture'),
    ok: 200,
    bad: [
      ...connectionCases,
      badQuery(
        'refresh_token=maybe',
        oneConnection('fixture', `provider_config_key=${PCK}&refresh_token=maybe`),
      ),
    ],
  },
  { name: 'DELETE /connections/{connectionId}', url: oneConnection('doomed'), ok: 200, bad: connectionCases },
  ...(['POST', 'PATCH'] as const).map((method) => ({
    name: `${method} /connections/metadata`,
    url: '/connections/metadata',
    body: metadata,
    ok: method === 'POST' ? 201 : 200,
    bad: metadataCases,
  })),
  {
    name: 'GET /records',
    url: records(
      `&variant=base&limit=10&filter=added,updated&modified_after=2000-01-01T00:00:00%2B02:00&ids=r1&ids=r2`,
    ),
    headers: recordsHeaders,
    ok: 200,
    bad: [
      badQuery('no model', '/records', { code: 'invalid_type', path: ['model'] }),
      badQuery('a lower-case model', '/records?model=contact', { code: 'invalid_format', path: ['model'] }),
      badQuery('a one-letter model', '/records?model=C', { path: ['model'] }),
      badQuery('a model with ::', '/records?model=Contact::v1', { path: ['model'] }),
      badQuery('model given twice', '/records?model=Contact&model=Other', { path: ['model'] }),
      badQuery('a bad variant', records('&variant=v.1'), { path: ['variant'] }),
      badQuery('limit=0', records('&limit=0'), { code: 'too_small', path: ['limit'] }),
      badQuery('limit=10001', records('&limit=10001'), { code: 'too_big', path: ['limit'] }),
      badQuery('limit=1.5', records('&limit=1.5'), { path: ['limit'] }),
      badQuery('limit=abc', records('&limit=abc'), { path: ['limit'] }),
      badQuery('limit=1e20', records('&limit=1e20'), { code: 'too_big', path: ['limit'] }),
      badQuery('limit=2^53', records(`&limit=${2 ** 53}`), { code: 'too_big', path: ['limit'] }),
      badQuery('filter=bogus', records('&filter=bogus'), { path: ['filter'] }),
      badQuery('a trailing comma in filter', records('&filter=added,'), { path: ['filter'] }),
      badQuery('an empty filter', records('&filter='), { path: ['filter'] }),
      badQuery('modified_after without a time', records('&modified_after=2024-01-01'), {
        code: 'invalid_format',
        path: ['modified_after'],
      }),
      badQuery('modified_after without an offset', records('&modified_after=2024-01-01T00:00:00'), {
        path: ['modified_after'],
      }),
      badQuery('modified_after on February 30th', records('&modified_after=2024-02-30T00:00:00Z'), {
        path: ['modified_after'],
      }),
      badQuery('modified_after in year 0', records('&modified_after=0000-01-01T00:00:00Z'), {
        path: ['modified_after'],
      }),
      badQuery(
        'modified_after 16 hours ahead of UTC',
        records('&modified_after=2024-01-01T00:00:00%2B16:00'),
        { path: ['modified_after'] },
      ),
      badQuery(
        'modified_after given twice',
        records('&modified_after=2024-01-01T00:00:00Z&modified_after=2024-01-01T00:00:00Z'),
      ),
      badQuery('a bad delta', records('&delta=yesterday'), { path: ['delta'] }),
      badQuery('an empty cursor', records('&cursor='), { path: ['cursor'] }),
      badQuery('an empty id', records('&ids='), { path: ['ids', '0'] }),
      badQuery('an id over 255 characters', records(`&ids=${'x'.repeat(256)}`), { code: 'too_big' }),
      badQuery('a NUL in an id', records('&ids=a%00b'), { path: ['ids', '0'] }),
      badQuery('101 ids', records('&ids=a'.repeat(101)), { code: 'too_big', path: ['ids'] }),
      domainError('a cursor that is not base64 of one', 400, 'invalid_cursor', {
        url: records('&cursor=zzz'),
      }),
      domainError('a cursor with month 13', 400, 'invalid_cursor', {
        url: records(`&cursor=${b64('2024-13-01T00:00:00Z||1')}`),
      }),
      domainError('a cursor with a non-numeric id', 400, 'invalid_cursor', {
        url: records(`&cursor=${b64('2024-01-01T00:00:00Z||abc')}`),
      }),
      domainError('a cursor in year 0', 400, 'invalid_cursor', {
        url: records(`&cursor=${b64('0000-01-01T00:00:00Z||1')}`),
      }),
      ...HUGE_IDS.map((id) =>
        domainError(`a cursor with id ${id}`, 400, 'invalid_cursor', {
          url: records(`&cursor=${b64(`2024-01-01T00:00:00Z||${id}`)}`),
        }),
      ),
      ...headerCases,
    ],
  },
  {
    name: 'PATCH /records/prune',
    url: '/records/prune',
    headers: recordsHeaders,
    body: prune,
    ok: 200,
    bad: [
      badBody('no body', undefined, { code: 'invalid_type', path: [] }),
      badBody('an array body', [prune]),
      badBody('no model', { until_cursor: LAST_CURSOR }, { code: 'invalid_type', path: ['model'] }),
      badBody('a lower-case model', { ...prune, model: 'contact' }, { path: ['model'] }),
      badBody('a bad variant', { ...prune, variant: 'v.1' }, { path: ['variant'] }),
      badBody('no until_cursor', { model: MODEL }, { code: 'invalid_type', path: ['until_cursor'] }),
      badBody('an empty until_cursor', { ...prune, until_cursor: '' }, { code: 'too_small' }),
      badBody('until_cursor a number', { ...prune, until_cursor: 1 }, { path: ['until_cursor'] }),
      badBody('limit 0', { ...prune, limit: 0 }, { code: 'too_small', path: ['limit'] }),
      badBody('limit 10001', { ...prune, limit: 10_001 }, { code: 'too_big', path: ['limit'] }),
      badBody('limit 1.5', { ...prune, limit: 1.5 }, { path: ['limit'] }),
      badBody('limit a string', { ...prune, limit: '5' }, { path: ['limit'] }),
      badBody('limit 1e20', { ...prune, limit: 1e20 }, { code: 'too_big', path: ['limit'] }),
      badBody('limit 2^53', { ...prune, limit: 2 ** 53 }, { code: 'too_big', path: ['limit'] }),
      badRaw('limit 1e400', `${JSON.stringify(prune).slice(0, -1)},"limit":1e400}`),
      badBody('an unknown key', { ...prune, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
      domainError('an until_cursor that does not decode', 400, 'invalid_cursor', {
        body: { ...prune, until_cursor: 'zzz' },
      }),
      domainError('an until_cursor with February 30th', 400, 'invalid_cursor', {
        body: { ...prune, until_cursor: b64('2024-02-30T00:00:00Z||1') },
      }),
      ...HUGE_IDS.map((id) =>
        domainError(`an until_cursor with id ${id}`, 400, 'invalid_cursor', {
          body: { ...prune, until_cursor: b64(`2024-01-01T00:00:00Z||${id}`) },
        }),
      ),
      ...headerCases,
    ],
  },
  { name: 'GET /integrations', url: '/integrations', ok: 200, bad: [] },
  {
    name: 'POST /sync/trigger',
    url: '/sync/trigger',
    body: syncCommand,
    ok: 400,
    okCode: 'unknown_provider_config',
    bad: [
      badBody('no body', undefined),
      badBody('no syncs', { provider_config_key: PCK }, { code: 'invalid_type', path: ['syncs'] }),
      badBody('syncs a string', { ...syncCommand, syncs: 'nightly' }, { path: ['syncs'] }),
      badBody('a sync that is a number', { ...syncCommand, syncs: [1] }, { path: ['syncs', '0'] }),
      badBody('a sync object with an unknown key', {
        ...syncCommand,
        syncs: [{ name: 'n', variant: 'v', x: 1 }],
      }),
      badBody('opts.reset a string', { ...syncCommand, opts: { reset: 'yes' } }, { path: ['opts', 'reset'] }),
      badBody('an unknown sync_mode', { ...syncCommand, sync_mode: 'sometimes' }, { path: ['sync_mode'] }),
      badBody('full_resync a string', { ...syncCommand, full_resync: 'true' }, { path: ['full_resync'] }),
      badBody('an unknown key', { ...syncCommand, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
      domainError('opts with the deprecated sync_mode', 400, 'invalid_body', {
        body: { ...syncCommand, opts: { reset: true }, sync_mode: 'full_refresh' },
      }),
      domainError('no provider_config_key in the body or headers', 400, 'missing_provider_config_key', {
        body: { syncs: [] },
      }),
      {
        ...badHeaders('a bad Provider-Config-Key header', { 'provider-config-key': 'a/b' }),
        body: { syncs: [] },
        issue: { path: ['provider-config-key'] },
      },
    ],
  },
  ...(['pause', 'start'] as const).map((command) => ({
    name: `POST /sync/${command}`,
    url: `/sync/${command}`,
    body: syncCommand,
    ok: 400,
    okCode: 'unknown_provider_config',
    strictQuery: false,
    bad: pauseStartCases,
  })),
  {
    name: 'GET /sync/status',
    url: `/sync/status?syncs=*&provider_config_key=${PCK}&connection_id=fixture`,
    ok: 200,
    bad: [
      badQuery('no syncs', `/sync/status?provider_config_key=${PCK}`, {
        code: 'invalid_type',
        path: ['syncs'],
      }),
      badQuery('syncs given twice', `/sync/status?syncs=a&syncs=b&provider_config_key=${PCK}`, {
        path: ['syncs'],
      }),
      badQuery('no provider_config_key', '/sync/status?syncs=*', { path: ['provider_config_key'] }),
      badQuery('a bad provider_config_key', '/sync/status?syncs=*&provider_config_key=a/b', {
        path: ['provider_config_key'],
      }),
      badQuery(
        'bad connection id characters',
        `/sync/status?syncs=*&provider_config_key=${PCK}&connection_id=a<b>`,
        { path: ['connection_id'] },
      ),
      badQuery('a NUL in syncs', `/sync/status?syncs=a%00b&provider_config_key=${PCK}`),
      domainError('an unknown connection', 400, 'invalid_body', {
        url: `/sync/status?syncs=*&provider_config_key=${PCK}&connection_id=nope`,
      }),
      domainError("a prod connection's ids", 400, 'invalid_body', {
        url: `/sync/status?syncs=*&provider_config_key=${PCK}&connection_id=prod-only`,
      }),
    ],
  },
  {
    name: 'PUT /sync/update-connection-frequency',
    url: '/sync/update-connection-frequency',
    body: frequency,
    // The connection is found; it has no syncs.
    ok: 400,
    okCode: 'unknown_sync',
    bad: [
      badBody('no body', undefined),
      badBody(
        'no frequency',
        { ...frequency, frequency: undefined },
        { code: 'invalid_type', path: ['frequency'] },
      ),
      badBody('frequency "whenever"', { ...frequency, frequency: 'whenever' }, { path: ['frequency'] }),
      badBody('frequency a number', { ...frequency, frequency: 3600 }, { path: ['frequency'] }),
      ...['every 366 days', 'every 99999999999999999999 days', `${'9'.repeat(400)}d`].map((value) =>
        domainError(`frequency "${value.slice(0, 30)}"`, 400, 'invalid_body', {
          body: { ...frequency, frequency: value },
        }),
      ),
      // The longest interval gets past validation to the lookup of the (missing) sync.
      domainError('frequency "every 365 days"', 400, 'unknown_sync', {
        body: { ...frequency, frequency: 'every 365 days' },
      }),
      badBody('a bad sync_name', { ...frequency, sync_name: 'a b' }, { path: ['sync_name'] }),
      badBody('a bad sync_variant', { ...frequency, sync_variant: 'v.1' }, { path: ['sync_variant'] }),
      badBody('no connection_id', { ...frequency, connection_id: undefined }, { path: ['connection_id'] }),
      badBody('an unknown key', { ...frequency, extra: 1 }, { code: 'unrecognized_keys', path: [] }),
      domainError('an unknown connection', 400, 'unknown_connection', {
        body: { ...frequency, connection_id: 'nope' },
      }),
      domainError("a prod connection's ids", 400, 'unknown_connection', {
        body: { ...frequency, connection_id: 'prod-only' },
      }),
    ],
  },
  {
    name: 'POST /sync/{name}/variant/{variant}',
    url: '/sync/nightly/variant/v1',
    body: variantTarget,
    // The connection is found; its integration has no definitions.
    ok: 400,
    okCode: 'unknown_provider_config',
    bad: variantCases,
  },
  {
    name: 'DELETE /sync/{name}/variant/{variant}',
    url: '/sync/nightly/variant/v1',
    body: variantTarget,
    // The connection is found; it has no such variant.
    ok: 404,
    okCode: 'not_found',
    bad: variantCases,
  },
]

/** The valid body with one more member, written as raw JSON text. */
const withMember = (route: Route, member: string) => {
  const base = JSON.stringify(route.body ?? {})
  return `${base.slice(0, -1)}${base === '{}' ? '' : ','}${member}}`
}

const withUnknownKey = (url: string) => `${url}${url.includes('?') ? '&' : '?'}unknown_key=1`

function casesFor(route: Route): BadCase[] {
  const unrecognized = { code: 'unrecognized_keys', message: 'Unrecognized key: "unknown_key"', path: [] }
  const cases =
    route.strictQuery === false
      ? route.bad
      : [badQuery('an unknown query key', withUnknownKey(route.url), unrecognized), ...route.bad]
  if (methodOf(route) === 'GET') return cases
  const deep = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`
  return [
    ...cases,
    badRaw('malformed JSON', withMember(route, '"broken":'), 400, 'invalid_json'),
    badRaw(
      'a body over the limit',
      withMember(route, `"pad":"${'x'.repeat(BODY_LIMIT)}"`),
      413,
      'request_too_large',
    ),
    badRaw('JSON nested 10,000 levels deep', withMember(route, `"deep":${deep}`)),
    badRaw('a __proto__ key', withMember(route, '"__proto__":{"admin":true}')),
    badRaw('a constructor.prototype key', withMember(route, '"constructor":{"prototype":{"admin":true}}')),
  ]
}

function requestFor(route: Route, c?: BadCase): InjectOptions {
  const request: InjectOptions = {
    method: methodOf(route),
    url: c?.url ?? route.url,
    headers: { ...(c?.headers ?? route.headers), ...bearer(t.keys.dev) },
  }
  if (c?.raw !== undefined) {
    return { ...request, payload: c.raw, headers: { ...request.headers, 'content-type': 'application/json' } }
  }
  const body = c && 'body' in c ? c.body : route.body
  return body === undefined ? request : { ...request, payload: body as object }
}

/** The answer to the valid request: the route's success, or the domain error it must reach. */
function expectValidAnswer(route: Route, res: LightMyRequestResponse) {
  expect(res.statusCode, res.body).toBe(route.ok)
  if (route.okCode) expectStdError(res, route.ok, route.okCode)
}

describe.each(routes)('$name', (route) => {
  it('accepts the valid request the bad ones are made from', async () => {
    expect(t.config.bodyLimitBytes).toBe(BODY_LIMIT)
    expectValidAnswer(route, await t.app.inject(requestFor(route)))
    await seed()
  })

  if (route.strictQuery === false) {
    it('ignores unknown query keys, as Nango does', async () => {
      const res = await t.app.inject({ ...requestFor(route), url: withUnknownKey(route.url) })
      expectValidAnswer(route, res)
    })
  }

  it.each(casesFor(route))('$label: $status $code, nothing changed', async (c) => {
    const before = await snapshot()
    const error = expectStdError(await t.app.inject(requestFor(route, c)), c.status, c.code)
    if (c.issue) expect(error.errors).toContainEqual(expect.objectContaining(c.issue))
    expect(await snapshot()).toEqual(before)
  })

  it.each([true, false])('refuses Content-Type: text/plain with 415 (with a key: %s)', async (withKey) => {
    const before = await snapshot()
    const res = await t.app.inject({
      method: methodOf(route),
      url: route.url,
      headers: { ...(withKey ? bearer(t.keys.dev) : {}), 'content-type': 'text/plain' },
      ...(methodOf(route) === 'GET' ? {} : { payload: JSON.stringify(route.body ?? {}) }),
    })
    expectStdError(res, 415, 'invalid_content_type')
    expect(await snapshot()).toEqual(before)
  })
})

describe('the largest numbers a schema allows', () => {
  it('GET /connections at the last page answers an empty list', async () => {
    const url = '/connections?limit=10000&page=1000000000'
    const res = await t.app.inject({ url, headers: bearer(t.keys.dev) })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({ connections: [] })
  })
})

describe('NUL characters inside metadata', () => {
  it.each(['POST', 'PATCH'] as const)(
    'are stored and returned by %s /connections/metadata',
    async (method) => {
      const note = { note: `a\u0000b ${method}`, 'k\u0000': 1 }
      const res = await t.app.inject({
        method,
        url: '/connections/metadata',
        headers: bearer(t.keys.dev),
        payload: { ...metadata, metadata: note },
      })
      expect(res.statusCode).toBe(method === 'POST' ? 201 : 200)
      const read = await t.app.inject({ url: oneConnection('fixture'), headers: bearer(t.keys.dev) })
      expect(read.json().metadata).toMatchObject(note)
    },
  )
})
