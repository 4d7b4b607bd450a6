import { randomUUID } from 'node:crypto'

import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { findConnectionRef } from '../../src/connections/store.ts'
import { setVariable } from '../../src/environments/variables-store.ts'
import { ENVIRONMENT_SCOPES, satisfies, type Scope } from '../../src/keys/scopes.ts'
import { createKey, revokeKey } from '../../src/keys/store.ts'
import { encodeCursor } from '../../src/records/cursor.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import { batchSave } from '../helpers/records.ts'

type Env = 'dev' | 'prod'

const MISSING = 'Authentication failed. The request is missing the Authorization header.'
const MALFORMED = 'Authentication failed. The Authorization header is malformed.'
const UNKNOWN = 'Authentication failed. The provided authorization header does not match any account.'

const BOOTSTRAP = { dev: randomUUID(), prod: randomUUID() }

let t: TestApp
beforeAll(async () => {
  t = await startTestApp({
    env: { NANGO_SECRET_KEY_DEV: BOOTSTRAP.dev, NANGO_SECRET_KEY_PROD: BOOTSTRAP.prod },
  })
  for (const env of ['dev', 'prod'] as const) {
    await importConnection(env, 'auth-fixed')
    await saveRecords(env, 'auth', 'auth-fixed', [
      { id: `${env}-1`, env },
      { id: `${env}-2`, env },
    ])
  }
})
afterAll(() => t.close())

/** Saves records of MODEL for a connection, as a sync would. */
async function saveRecords(env: Env, pck: string, connectionId: string, records: unknown[]) {
  const connection = await findConnectionRef(t.db.kysely, t.envIds[env], pck, connectionId)
  expect(connection).toBeDefined()
  const ds = { connectionPk: connection!.id, model: MODEL, variant: 'base' }
  await batchSave(t.db.kysely, t.sealer, ds, records)
}

async function importConnection(env: Env, connectionId: string, extra: Record<string, unknown> = {}) {
  const res = await t.app.inject({
    method: 'POST',
    url: '/connections',
    headers: bearer(t.keys[env]),
    payload: { provider_config_key: 'auth', connection_id: connectionId, ...extra },
  })
  expect(res.statusCode).toBe(201)
}

const send = (request: InjectOptions, key?: string, headers: Record<string, string> = {}) =>
  t.app.inject({
    ...request,
    headers: { ...request.headers, ...(key === undefined ? {} : bearer(key)), ...headers },
  })

function expectError(res: LightMyRequestResponse, status: number, code: string, message: string) {
  expect(res.statusCode).toBe(status)
  expect(res.json()).toEqual({ error: { code, message } })
  if (status === 401) expect(res.headers['www-authenticate']).toBe('Bearer')
}

interface AuthRoute {
  name: string
  /** Any one of these grants the route. */
  scopes: Scope[]
  /** A wildcard scope that covers it. */
  wildcard: Scope
  ok: number
  /**
   * The error code of a valid request that answers a domain error: the test app has no sync
   * definitions, so sync commands get past authentication and validation, then find no integration.
   */
  okCode?: string
  /** A valid request in `env` (creating what it acts on). */
  request(env: Env): Promise<InjectOptions>
  /** More checks on the answer to a valid request in `env`. */
  check?(res: LightMyRequestResponse, env: Env): void
}

const MODEL = 'Contact'
/** The connection of the records routes, in their headers. */
const recordsHeaders = { 'connection-id': 'auth-fixed', 'provider-config-key': 'auth' }
/** A cursor after every record, so a prune covers them all. */
const LAST_CURSOR = encodeCursor('2999-01-01T00:00:00.000000+00:00', 1)
const metadataBody = { connection_id: 'auth-fixed', provider_config_key: 'auth', metadata: { a: 1 } }
const syncTarget = { provider_config_key: 'auth', connection_id: 'auth-fixed' }

const routes: AuthRoute[] = [
  {
    name: 'GET /environment-variables',
    scopes: ['environment:variables:read'],
    wildcard: 'environment:*',
    ok: 200,
    request: async () => ({ method: 'GET', url: '/environment-variables' }),
  },
  {
    name: 'POST /connections',
    scopes: ['environment:connections:create'],
    wildcard: 'environment:connections:*',
    ok: 201,
    request: async () => ({
      method: 'POST',
      url: '/connections',
      payload: { provider_config_key: 'auth', connection_id: `new-${randomUUID()}` },
    }),
  },
  {
    name: 'GET /connections',
    scopes: ['environment:connections:list', 'environment:connections:list_credentials'],
    wildcard: 'environment:connections:*',
    ok: 200,
    request: async () => ({ method: 'GET', url: '/connections' }),
  },
  {
    name: 'GET /connections/{connectionId}',
    scopes: ['environment:connections:read', 'environment:connections:read_credentials'],
    wildcard: 'environment:connections:*',
    ok: 200,
    request: async () => ({ method: 'GET', url: '/connections/auth-fixed?provider_config_key=auth' }),
  },
  {
    name: 'DELETE /connections/{connectionId}',
    scopes: ['environment:connections:delete'],
    wildcard: 'environment:connections:*',
    ok: 200,
    request: async (env) => {
      const id = `doomed-${randomUUID()}`
      await importConnection(env, id)
      return { method: 'DELETE', url: `/connections/${id}?provider_config_key=auth` }
    },
  },
  {
    name: 'POST /connections/metadata',
    scopes: ['environment:connections:update'],
    wildcard: 'environment:connections:*',
    ok: 201,
    request: async () => ({ method: 'POST', url: '/connections/metadata', payload: metadataBody }),
  },
  {
    name: 'PATCH /connections/metadata',
    scopes: ['environment:connections:update'],
    wildcard: 'environment:connections:*',
    ok: 200,
    request: async () => ({ method: 'PATCH', url: '/connections/metadata', payload: metadataBody }),
  },
  {
    name: 'GET /records',
    scopes: ['environment:records:read'],
    wildcard: 'environment:records:*',
    ok: 200,
    request: async () => ({ method: 'GET', url: `/records?model=${MODEL}`, headers: recordsHeaders }),
    check: (res, env) => {
      expect(res.json().records.map((r: { id: string }) => r.id)).toEqual([`${env}-1`, `${env}-2`])
    },
  },
  {
    name: 'PATCH /records/prune',
    scopes: ['environment:records:write'],
    wildcard: 'environment:records:*',
    ok: 200,
    request: async () => ({
      method: 'PATCH',
      url: '/records/prune',
      headers: recordsHeaders,
      payload: { model: MODEL, until_cursor: LAST_CURSOR },
    }),
    check: (res) => expect(res.json()).toEqual({ count: expect.any(Number), has_more: false }),
  },
  {
    name: 'GET /integrations',
    scopes: ['environment:integrations:list', 'environment:integrations:list_credentials'],
    wildcard: 'environment:integrations:*',
    ok: 200,
    request: async () => ({ method: 'GET', url: '/integrations' }),
    check: (res) => expect(res.json()).toEqual({ data: [] }),
  },
  ...(['trigger', 'pause', 'start'] as const).map((command): AuthRoute => ({
    name: `POST /sync/${command}`,
    scopes: ['environment:syncs:execute'],
    wildcard: 'environment:syncs:*',
    ok: 400,
    okCode: 'unknown_provider_config',
    request: async () => ({
      method: 'POST',
      url: `/sync/${command}`,
      payload: { syncs: ['nightly'], ...syncTarget },
    }),
  })),
  {
    name: 'GET /sync/status',
    scopes: ['environment:syncs:read'],
    wildcard: 'environment:syncs:*',
    ok: 200,
    // Finding the connection proves the key acts in its own environment.
    request: async () => ({
      method: 'GET',
      url: '/sync/status?syncs=*&provider_config_key=auth&connection_id=auth-fixed',
    }),
    check: (res) => expect(res.json()).toEqual({ syncs: [] }),
  },
  {
    name: 'PUT /sync/update-connection-frequency',
    scopes: ['environment:syncs:update'],
    wildcard: 'environment:syncs:*',
    // The connection is found (else unknown_connection); it has no syncs.
    ok: 400,
    okCode: 'unknown_sync',
    request: async () => ({
      method: 'PUT',
      url: '/sync/update-connection-frequency',
      payload: { sync_name: 'nightly', frequency: 'every hour', ...syncTarget },
    }),
  },
  {
    name: 'POST /sync/{name}/variant/{variant}',
    scopes: ['environment:syncs:variant:create'],
    wildcard: 'environment:syncs:*',
    // The connection is found (else unknown_connection); its integration has no definitions.
    ok: 400,
    okCode: 'unknown_provider_config',
    request: async () => ({ method: 'POST', url: '/sync/nightly/variant/v1', payload: syncTarget }),
  },
  {
    name: 'DELETE /sync/{name}/variant/{variant}',
    scopes: ['environment:syncs:variant:delete'],
    wildcard: 'environment:syncs:*',
    // The connection is found (else 400 unknown_connection); it has no such variant.
    ok: 404,
    okCode: 'not_found',
    request: async () => ({ method: 'DELETE', url: '/sync/nightly/variant/v1', payload: syncTarget }),
  },
]

/** The answer to a valid request with a key that may act: the route's own answer. */
function expectOk(route: AuthRoute, res: LightMyRequestResponse, env: Env = 'dev') {
  expect(res.statusCode, res.body).toBe(route.ok)
  if (route.okCode) expect(res.json().error.code).toBe(route.okCode)
  route.check?.(res, env)
}

describe.each(routes)('$name', (route) => {
  it('401 missing_auth_header without an Authorization header', async () => {
    expectError(await send(await route.request('dev')), 401, 'missing_auth_header', MISSING)
  })

  it('401 malformed_auth_header for an empty bearer token', async () => {
    const res = await send(await route.request('dev'), undefined, { authorization: 'Bearer ' })
    expectError(res, 401, 'malformed_auth_header', MALFORMED)
  })

  it.each([
    ['an unknown UUID v4 key', randomUUID()],
    ['a key that is not a UUID', 'not-a-key'],
  ])('401 unknown_account for %s', async (_label, key) => {
    expectError(await send(await route.request('dev'), key), 401, 'unknown_account', UNKNOWN)
  })

  it('401 unknown_account for a revoked key', async () => {
    const { id, secret } = await createKey(t.db.kysely, t.envIds.dev, ['environment:*'])
    expect(await revokeKey(t.db.kysely, id)).toBe(true)
    expectError(await send(await route.request('dev'), secret), 401, 'unknown_account', UNKNOWN)
  })

  it('403 forbidden for a key holding every other scope', async () => {
    const others = ENVIRONMENT_SCOPES.filter((s) => !satisfies([s], route.scopes))
    const required =
      route.scopes.length === 1
        ? `Required: ${route.scopes[0]}`
        : `Required one of: ${route.scopes.join(' or ')}`
    const res = await send(await route.request('dev'), await t.keyWith(others))
    expectError(res, 403, 'forbidden', `Insufficient scope. ${required}`)
  })

  it.each(route.scopes)('succeeds with a key holding only %s', async (scope) => {
    expectOk(route, await send(await route.request('dev'), await t.keyWith([scope])))
  })

  it(`succeeds with the wildcard ${route.wildcard}`, async () => {
    expectOk(route, await send(await route.request('dev'), await t.keyWith([route.wildcard])))
  })

  it.each(['dev', 'prod'] as const)('succeeds with NANGO_SECRET_KEY_%s', async (env) => {
    expectOk(route, await send(await route.request(env), BOOTSTRAP[env]), env)
  })

  it.each(['dev', 'prod'] as const)('succeeds with a full-access %s key, in its environment', async (env) => {
    expectOk(route, await send(await route.request(env), t.keys[env]), env)
  })
})

describe('bootstrap keys', () => {
  it('act in their own environment only, whatever the case of the key', async () => {
    await importConnection('prod', 'boot-prod-only')
    const list = async (key: string) =>
      (await send({ method: 'GET', url: '/connections?integrationId=auth' }, key))
        .json()
        .connections.map((c: { connection_id: string }) => c.connection_id)
    expect(await list(BOOTSTRAP.prod)).toContain('boot-prod-only')
    expect(await list(BOOTSTRAP.prod.toUpperCase())).toContain('boot-prod-only')
    expect(await list(BOOTSTRAP.dev)).not.toContain('boot-prod-only')
  })
})

describe('tenancy: a dev key never sees or changes prod data', () => {
  const pck = 'tenancy'
  const id = 'tenant-secret'
  const connectionHeaders = { 'connection-id': id, 'provider-config-key': pck }
  const prodState = async () => ({
    connection: (
      await send({ method: 'GET', url: `/connections/${id}?provider_config_key=${pck}` }, t.keys.prod)
    ).json(),
    variables: (await send({ method: 'GET', url: '/environment-variables' }, t.keys.prod)).json(),
    records: (
      await send({ method: 'GET', url: `/records?model=${MODEL}`, headers: connectionHeaders }, t.keys.prod)
    ).json(),
  })
  let before: Awaited<ReturnType<typeof prodState>>

  beforeAll(async () => {
    const res = await send(
      {
        method: 'POST',
        url: '/connections',
        payload: {
          provider_config_key: pck,
          connection_id: id,
          metadata: { owner: 'prod' },
          credentials: { type: 'API_KEY', apiKey: 'prod-api-key' },
        },
      },
      t.keys.prod,
    )
    expect(res.statusCode).toBe(201)
    await setVariable(t.db.kysely, t.sealer, t.envIds.prod, 'PROD_ONLY', 'prod-value')
    await saveRecords('prod', pck, id, [{ id: 'prod-record', owner: 'prod' }])
    before = await prodState()
    expect(before.connection).toMatchObject({
      metadata: { owner: 'prod' },
      credentials: { apiKey: 'prod-api-key' },
    })
    expect(before.variables).toContainEqual({ name: 'PROD_ONLY', value: 'prod-value' })
    expect(before.records.records).toMatchObject([{ id: 'prod-record', owner: 'prod' }])
  })

  const change = { connection_id: id, provider_config_key: pck, metadata: { owner: 'dev' } }
  const target = { connection_id: id, provider_config_key: pck }
  const getRecords: InjectOptions & { url: string } = {
    method: 'GET',
    url: `/records?model=${MODEL}`,
    headers: connectionHeaders,
  }
  const prune: InjectOptions & { url: string } = {
    method: 'PATCH',
    url: '/records/prune',
    headers: connectionHeaders,
    payload: { model: MODEL, until_cursor: LAST_CURSOR },
  }
  const cases: {
    name: string
    request: InjectOptions & { url: string }
    status: number
    code?: string
    body?: unknown
  }[] = [
    {
      name: 'GET /connections',
      request: { method: 'GET', url: `/connections?connectionId=${id}` },
      status: 200,
    },
    { name: 'GET /connections (all)', request: { method: 'GET', url: '/connections' }, status: 200 },
    {
      name: 'GET /connections/{connectionId}',
      request: { method: 'GET', url: `/connections/${id}?provider_config_key=${pck}` },
      status: 404,
      code: 'not_found',
    },
    {
      name: 'DELETE /connections/{connectionId}',
      request: { method: 'DELETE', url: `/connections/${id}?provider_config_key=${pck}` },
      status: 400,
      code: 'unknown_connection',
    },
    ...(['POST', 'PATCH'] as const).map((method) => ({
      name: `${method} /connections/metadata`,
      request: { method, url: '/connections/metadata', payload: change },
      status: 404,
      code: 'unknown_connection',
    })),
    {
      name: 'GET /environment-variables',
      request: { method: 'GET', url: '/environment-variables' },
      status: 200,
    },
    { name: 'GET /records', request: getRecords, status: 400, code: 'unknown_connection' },
    {
      name: 'GET /records with a cursor',
      request: {
        ...getRecords,
        url: `${getRecords.url}&cursor=${encodeURIComponent(encodeCursor('2000-01-01T00:00:00Z', 1))}`,
      },
      status: 400,
      code: 'unknown_connection',
    },
    { name: 'PATCH /records/prune', request: prune, status: 400, code: 'unknown_connection' },
    {
      name: 'GET /sync/status',
      request: { method: 'GET', url: `/sync/status?syncs=*&provider_config_key=${pck}&connection_id=${id}` },
      status: 400,
      code: 'invalid_body',
    },
    {
      name: 'PUT /sync/update-connection-frequency',
      request: {
        method: 'PUT',
        url: '/sync/update-connection-frequency',
        payload: { sync_name: 'nightly', frequency: null, ...target },
      },
      status: 400,
      code: 'unknown_connection',
    },
    ...(['POST', 'DELETE'] as const).map((method) => ({
      name: `${method} /sync/{name}/variant/{variant}`,
      request: { method, url: '/sync/nightly/variant/v1', payload: target },
      status: 400,
      code: 'unknown_connection',
    })),
    {
      name: 'POST /connections with the same ids (makes a separate dev connection)',
      request: { method: 'POST', url: '/connections', payload: { ...change, credentials: { type: 'NONE' } } },
      status: 201,
    },
    {
      name: "GET /records for the dev connection with the same ids (sees only dev's records)",
      request: getRecords,
      status: 200,
      body: { next_cursor: null, records: [] },
    },
    {
      name: 'PATCH /records/prune for the dev connection with the same ids (prunes nothing of prod)',
      request: prune,
      status: 200,
      body: { count: 0, has_more: false },
    },
  ]
  it.each(cases)('$name', async ({ request, status, code, body }) => {
    const res = await send(request, t.keys.dev)
    expect(res.statusCode, res.body).toBe(status)
    if (code) expect(res.json().error.code).toBe(code)
    if (body) expect(res.json()).toEqual(body)
    for (const secret of ['prod-api-key', '"owner":"prod"', 'PROD_ONLY', 'prod-value', 'prod-record']) {
      expect(res.body).not.toContain(secret)
    }
    if (status === 200 && request.url.startsWith('/connections')) {
      expect(res.json().connections.map((c: { connection_id: string }) => c.connection_id)).not.toContain(id)
    }
    expect(await prodState()).toEqual(before)
  })
})

describe('routes without a key', () => {
  it.each(['/health', '/ready', '/openapi.yaml'])(
    'GET %s needs no key and ignores a bad one',
    async (url) => {
      expect((await send({ method: 'GET', url })).statusCode).toBe(200)
      expect((await send({ method: 'GET', url }, 'not-a-key')).statusCode).toBe(200)
    },
  )

  it.each<[InjectOptions['method'], string]>([
    ['GET', '/nope'],
    ['POST', '/connections/a/b'],
    ['PUT', '/connections'],
    ['GET', '/records-and-more'],
  ])('%s %s is 404 not_found, key or not', async (method, url) => {
    for (const key of [undefined, 'not-a-key']) {
      const res = await send({ method, url }, key)
      expect(res.statusCode).toBe(404)
      expect(res.json().error).toMatchObject({ code: 'not_found', message: expect.any(String) })
    }
  })
})
