import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'

let t: TestApp
let nango: Nango

beforeAll(async () => {
  t = await startTestApp({ listen: true })
  nango = new Nango({ host: t.url, secretKey: t.keys.dev })
})
afterAll(() => t.close())

const importConnection = (body: Record<string, unknown>, key = t.keys.dev) =>
  t.app.inject({ method: 'POST', url: '/connections', headers: bearer(key), payload: body })

describe('POST /connections', () => {
  it('imports a connection and answers 201 with Nango’s full connection body', async () => {
    const res = await importConnection({
      provider_config_key: 'github',
      connection_id: 'import-1',
      metadata: { repo: 'a/b' },
      credentials: { type: 'OAUTH2', access_token: 'tok', refresh_token: 'ref' },
    })
    expect(res.statusCode).toBe(201)
    const body = res.json()
    expect(Object.keys(body)).toEqual([
      'id',
      'connection_id',
      'provider_config_key',
      'provider',
      'errors',
      'end_user',
      'tags',
      'metadata',
      'connection_config',
      'webhook_url_override',
      'created_at',
      'updated_at',
      'last_fetched_at',
      'credentials',
    ])
    expect(body).toMatchObject({
      connection_id: 'import-1',
      provider_config_key: 'github',
      metadata: { repo: 'a/b' },
      credentials: {
        type: 'OAUTH2',
        access_token: 'tok',
        refresh_token: 'ref',
        raw: { type: 'OAUTH2', access_token: 'tok', refresh_token: 'ref' },
      },
    })
    expect(body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  })

  it('overwrites an existing connection, resetting what was not sent', async () => {
    await importConnection({ provider_config_key: 'github', connection_id: 'over-1', metadata: { a: 1 } })
    const res = await importConnection({ provider_config_key: 'github', connection_id: 'over-1' })
    expect(res.statusCode).toBe(201)
    expect(res.json().metadata).toEqual({})
    const list = await nango.listConnections({ connectionId: 'over-1' })
    expect(list.connections).toHaveLength(1)
  })

  it('generates a connection id when none is given', async () => {
    const res = await importConnection({ provider_config_key: 'github' })
    expect(res.json().connection_id).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('rejects credentials that do not match their type, naming the field', async () => {
    const res = await importConnection({
      provider_config_key: 'github',
      connection_id: 'bad-creds',
      credentials: { type: 'API_KEY', apikey: 'x' },
    })
    expect(res.statusCode).toBe(400)
    const { error } = res.json()
    expect(error.code).toBe('invalid_body')
    expect(error.errors).toEqual(
      expect.arrayContaining([
        {
          code: 'invalid_type',
          message: 'Invalid input: expected string, received undefined',
          path: ['credentials', 'apiKey'],
        },
        { code: 'unrecognized_keys', message: 'Unrecognized key: "apikey"', path: ['credentials'] },
      ]),
    )
  })
})

describe('reading connections through @nangohq/node', () => {
  beforeAll(async () => {
    await importConnection({
      provider_config_key: 'hubspot',
      connection_id: 'read-1',
      metadata: { owner: 'x' },
      credentials: { type: 'OAUTH2', access_token: 'secret-token', refresh_token: 'secret-refresh' },
    })
  })

  it('lists connections without credentials, in Nango’s shape', async () => {
    const { connections } = await nango.listConnections({ integrationId: 'hubspot' })
    expect(connections).toHaveLength(1)
    const [c] = connections as unknown as Record<string, unknown>[]
    expect(Object.keys(c!)).toEqual([
      'id',
      'connection_id',
      'provider_config_key',
      'provider',
      'errors',
      'end_user',
      'tags',
      'metadata',
      'created',
    ])
    expect(c).toMatchObject({ connection_id: 'read-1', metadata: { owner: 'x' }, tags: {}, errors: [] })
    expect(c!.created).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00$/)
    expect(JSON.stringify(connections)).not.toContain('secret-token')
  })

  it('gets one connection with credentials, refresh tokens removed', async () => {
    const c = (await nango.getConnection('hubspot', 'read-1')) as unknown as Record<string, unknown>
    expect(c.credentials).toEqual({
      type: 'OAUTH2',
      access_token: 'secret-token',
      raw: { type: 'OAUTH2', access_token: 'secret-token' },
    })
    expect(c.created_at).toMatch(/\+00:00$/)
    const withRefresh = (await nango.getConnection('hubspot', 'read-1', false, true)) as unknown as {
      credentials: Record<string, unknown>
    }
    expect(withRefresh.credentials.refresh_token).toBe('secret-refresh')
  })

  it('hides credentials from a key without read_credentials', async () => {
    const key = await t.keyWith(['environment:connections:read'])
    const res = await t.app.inject({
      url: '/connections/read-1?provider_config_key=hubspot',
      headers: bearer(key),
    })
    expect(res.statusCode).toBe(200)
    expect(res.json().credentials).toEqual({})
    const refresh = await t.app.inject({
      url: '/connections/read-1?provider_config_key=hubspot&refresh_token=true',
      headers: bearer(key),
    })
    expect(refresh.statusCode).toBe(403)
    expect(refresh.json().error.code).toBe('forbidden')
  })

  it('answers 404 not_found for an unknown connection', async () => {
    const error = await nango.getConnection('hubspot', 'nope').catch((e: unknown) => e)
    expect((error as { response: { status: number; data: unknown } }).response.status).toBe(404)
    expect((error as { response: { data: unknown } }).response.data).toEqual({
      error: { code: 'not_found', message: 'Failed to find connection' },
    })
  })

  it('filters the list by connection id, search and tags', async () => {
    await importConnection({
      provider_config_key: 'tagged',
      connection_id: 'Tagged-Conn',
      tags: { team: 'blue' },
      end_user: { id: 'u1', email: 'ann@example.com', display_name: 'Ann' },
    })
    const bySearch = await nango.listConnections({ integrationId: 'tagged' })
    expect(bySearch.connections[0]!.tags).toEqual({
      end_user_id: 'u1',
      end_user_email: 'ann@example.com',
      end_user_display_name: 'Ann',
      team: 'blue',
    })
    const res = await t.app.inject({ url: '/connections?search=tagged-co', headers: bearer(t.keys.dev) })
    expect(res.json().connections.map((c: { connection_id: string }) => c.connection_id)).toEqual([
      'Tagged-Conn',
    ])
    const byTag = await nango.listConnections({ tags: { team: 'blue' } })
    expect(byTag.connections.map((c) => c.connection_id)).toEqual(['Tagged-Conn'])
    const noTag = await nango.listConnections({ tags: { team: 'red' } })
    expect(noTag.connections).toEqual([])
  })
})

describe('metadata', () => {
  beforeAll(async () => {
    for (const id of ['meta-1', 'meta-2']) {
      await importConnection({
        provider_config_key: 'meta',
        connection_id: id,
        metadata: { keep: true, n: 1 },
      })
    }
  })

  it('setMetadata replaces and updateMetadata merges shallowly', async () => {
    const set = await nango.setMetadata('meta', 'meta-1', { n: 2, nested: { a: 1 } })
    expect(set.status).toBe(201)
    expect(set.data).toEqual({
      metadata: { n: 2, nested: { a: 1 } },
      connection_id: 'meta-1',
      provider_config_key: 'meta',
    })
    let c = (await nango.getConnection('meta', 'meta-1')) as unknown as { metadata: unknown }
    expect(c.metadata).toEqual({ n: 2, nested: { a: 1 } })

    const update = await nango.updateMetadata('meta', 'meta-1', { nested: { b: 2 }, extra: 'x' })
    expect(update.status).toBe(200)
    c = (await nango.getConnection('meta', 'meta-1')) as unknown as { metadata: unknown }
    expect(c.metadata).toEqual({ n: 2, nested: { b: 2 }, extra: 'x' })
  })

  it('changes several connections at once, or none when one is unknown', async () => {
    await nango.setMetadata('meta', ['meta-1', 'meta-2'], { both: 1 })
    type Failure = { status: number; data: { error: { code: string; message: string } } }
    const error = (await nango
      .updateMetadata('meta', ['meta-1', 'missing', 'meta-2'], { both: 2 })
      .catch((e: { response: Failure }) => e.response)) as Failure
    expect(error.status).toBe(404)
    expect(error.data.error.code).toBe('unknown_connection')
    expect(error.data.error.message).toContain('No actions were taken')
    for (const id of ['meta-1', 'meta-2']) {
      const c = (await nango.getConnection('meta', id)) as unknown as { metadata: unknown }
      expect(c.metadata).toEqual({ both: 1 })
    }
  })
})

describe('DELETE /connections/{connectionId}', () => {
  it('deletes through the client, then answers 400 unknown_connection', async () => {
    await importConnection({ provider_config_key: 'del', connection_id: 'del-1' })
    const res = await nango.deleteConnection('del', 'del-1')
    expect(res.status).toBe(200)
    expect(res.data).toEqual({ success: true })
    const again = await t.app.inject({
      method: 'DELETE',
      url: '/connections/del-1?provider_config_key=del',
      headers: bearer(t.keys.dev),
    })
    expect(again.statusCode).toBe(400)
    expect(again.json().error.code).toBe('unknown_connection')
  })
})

describe('GET /environment-variables', () => {
  it('returns the environment’s variables through the client', async () => {
    const { setVariable } = await import('../../src/environments/variables-store.ts')
    await setVariable(t.db.kysely, t.sealer, t.envIds.dev, 'API_BASE', 'https://example.com')
    await setVariable(t.db.kysely, t.sealer, t.envIds.prod, 'PROD_ONLY', 'p')
    expect(await nango.getEnvironmentVariables()).toEqual([
      { name: 'API_BASE', value: 'https://example.com' },
    ])
  })
})
