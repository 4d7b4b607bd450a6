import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createKey } from '../../src/keys/store.ts'
import { api, startTestServer, type TestServer } from '../helpers/server.ts'

/** The /sync routes' errors and scopes, as Nango answers them (reference/nango-sync.md sections 1 and 2). */

let t: TestServer
let nango: Nango
beforeAll(async () => {
  t = await startTestServer({
    'crm/syncs/contacts.ts': `
      export default {
        description: 'Contacts', frequency: 'every hour', autoStart: false,
        models: { Contact: { type: 'object' } },
        async exec() {},
      }`,
  })
  nango = new Nango({ host: t.url, secretKey: t.key })
  const created = await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: 'c1' })
  expect(created.status).toBe(201)
  await nango.createSyncVariant({
    provider_config_key: 'crm',
    connection_id: 'c1',
    name: 'contacts',
    variant: 'v1',
  })
})
afterAll(() => t?.close())

const err = (status: number, code: string, message?: string | RegExp) => ({
  status,
  body: {
    error: expect.objectContaining({
      code,
      ...(message === undefined
        ? {}
        : { message: typeof message === 'string' ? message : expect.stringMatching(message) }),
    }),
  },
})
const variant = (method: 'POST' | 'DELETE', name: string, v: string, body: Record<string, unknown> = {}) =>
  api(t, method, `/sync/${name}/variant/${v}`, { provider_config_key: 'crm', connection_id: 'c1', ...body })
const frequency = (body: Record<string, unknown>) =>
  api(t, 'PUT', '/sync/update-connection-frequency', {
    sync_name: 'contacts',
    provider_config_key: 'crm',
    connection_id: 'c1',
    frequency: 'every hour',
    ...body,
  })

describe('trigger, pause and start', () => {
  for (const route of ['/sync/trigger', '/sync/pause', '/sync/start']) {
    it(`${route}: unknown integration, connection and sync`, async () => {
      const call = (body: Record<string, unknown>) => api(t, 'POST', route, { syncs: ['contacts'], ...body })
      expect(await call({ provider_config_key: 'nope', connection_id: 'c1' })).toEqual(
        err(400, 'unknown_provider_config', /^There is no Provider Configuration matching this key/),
      )
      expect(await call({ provider_config_key: 'crm', connection_id: 'ghost' })).toEqual(
        err(
          404,
          'unknown_connection',
          /^No connection matching the provided params of 'connection_id' and 'provider_config_key'/,
        ),
      )
      for (const syncs of [
        ['nope'],
        ['contacts', 'nope'],
        ['contacts::v9'],
        [{ name: 'contacts', variant: 'v9' }],
      ]) {
        expect(await call({ provider_config_key: 'crm', connection_id: 'c1', syncs })).toEqual(
          err(400, 'no_syncs_found', 'No syncs found given the inputs.'),
        )
      }
      // Without a connection: none of the names matches on any connection.
      expect(await call({ provider_config_key: 'crm', syncs: ['nope'] })).toEqual(err(400, 'no_syncs_found'))
    })
  }

  it('the client sees the same errors', async () => {
    await expect(nango.triggerSync('nope', ['contacts'], 'c1')).rejects.toMatchObject({
      response: { status: 400, data: { error: { code: 'unknown_provider_config' } } },
    })
    await expect(nango.pauseSync('crm', ['contacts'], 'ghost')).rejects.toMatchObject({
      response: { status: 404, data: { error: { code: 'unknown_connection' } } },
    })
    await expect(nango.startSync('crm', ['nope'], 'c1')).rejects.toMatchObject({
      response: { status: 400, data: { error: { code: 'no_syncs_found' } } },
    })
  })

  it('trigger: provider_config_key is required, and opts cannot be mixed with the deprecated modes', async () => {
    expect(await api(t, 'POST', '/sync/trigger', { syncs: ['contacts'], connection_id: 'c1' })).toEqual(
      err(
        400,
        'missing_provider_config_key',
        'Missing provider_config_key. Provide it in the body or headers.',
      ),
    )
    const message = 'Cannot use opts with deprecated sync_mode/full_resync parameters'
    for (const legacy of [{ sync_mode: 'full_refresh' }, { full_resync: false }]) {
      const body = {
        syncs: ['contacts'],
        provider_config_key: 'crm',
        connection_id: 'c1',
        opts: { reset: true },
        ...legacy,
      }
      expect(await api(t, 'POST', '/sync/trigger', body)).toEqual(err(400, 'invalid_body', message))
    }
  })
})

describe('status', () => {
  it('an unknown connection is 400 "Connection not found"; unknown integrations and syncs are just absent', async () => {
    const status = (query: string) => api(t, 'GET', `/sync/status?${query}`)
    expect(await status('syncs=*&provider_config_key=crm&connection_id=ghost')).toEqual(
      err(400, 'invalid_body', 'Connection not found'),
    )
    expect(await status('syncs=*&provider_config_key=nope')).toEqual({ status: 200, body: { syncs: [] } })
    const some = await status('syncs=nope,contacts::v1&provider_config_key=crm&connection_id=c1')
    expect(some.status).toBe(200)
    expect(some.body.syncs.map((s: { variant: string }) => s.variant)).toEqual(['v1'])
  })
})

describe('variants', () => {
  it('base is protected, whatever its case', async () => {
    for (const name of ['base', 'BASE', 'Base']) {
      expect(await variant('POST', 'contacts', name)).toEqual(
        err(400, 'invalid_variant', `Variant name "${name}" is protected.`),
      )
      expect(await variant('DELETE', 'contacts', name)).toEqual(
        err(400, 'invalid_variant', `Cannot delete protected variant "${name}".`),
      )
    }
  })

  it('an existing variant, an unknown one, an unknown sync or connection', async () => {
    expect(await variant('POST', 'contacts', 'v1')).toEqual(err(400, 'sync_variant_already_exists'))
    expect(await variant('DELETE', 'contacts', 'v9')).toEqual(err(404, 'not_found'))
    expect(await variant('POST', 'nope', 'v2')).toEqual(err(400, 'unknown_sync'))
    expect(await variant('POST', 'contacts', 'v2', { connection_id: 'ghost' })).toEqual(
      err(400, 'unknown_connection'),
    )
    expect(await variant('DELETE', 'contacts', 'v1', { connection_id: 'ghost' })).toEqual(
      err(400, 'unknown_connection'),
    )
    expect(await variant('POST', 'contacts', 'v2', { provider_config_key: 'nope' })).toEqual(
      err(400, 'unknown_connection'),
    )
    // Nothing was created or deleted by those.
    const { syncs } = await nango.syncStatus('crm', '*', 'c1')
    expect(syncs.map((s) => (s as unknown as { variant: string }).variant)).toEqual(['base', 'v1'])
  })
})

describe('update-connection-frequency', () => {
  it('an interval under 30 s, over a year or not one is invalid; unknown connection and sync', async () => {
    // A huge interval would overflow the schedule's bigint or its next due time: 400, not 500.
    for (const value of ['every 10 seconds', '29s', 'every 366 days', 'every 99999999999999999999 days']) {
      expect(await frequency({ frequency: value })).toEqual(
        err(400, 'invalid_body', 'Sync interval is invalid'),
      )
    }
    expect((await frequency({ frequency: 'sometimes' })).body.error.code).toBe('invalid_body')
    expect(await frequency({ connection_id: 'ghost' })).toEqual(err(400, 'unknown_connection'))
    expect(await frequency({ provider_config_key: 'nope' })).toEqual(err(400, 'unknown_connection'))
    expect(await frequency({ sync_name: 'nope' })).toEqual(err(400, 'unknown_sync'))
    expect(await frequency({ sync_variant: 'v9' })).toEqual(err(400, 'unknown_sync'))
    await expect(
      nango.updateSyncConnectionFrequency('crm', 'contacts', 'c1', 'every 10 seconds'),
    ).rejects.toMatchObject({
      response: {
        status: 400,
        data: { error: { code: 'invalid_body', message: 'Sync interval is invalid' } },
      },
    })
  })
})

describe('scopes', () => {
  const routes: [string, string, string, unknown?][] = [
    [
      'environment:syncs:execute',
      'POST',
      '/sync/trigger',
      { syncs: [], provider_config_key: 'crm', connection_id: 'c1' },
    ],
    [
      'environment:syncs:execute',
      'POST',
      '/sync/pause',
      { syncs: [], provider_config_key: 'crm', connection_id: 'c1' },
    ],
    [
      'environment:syncs:execute',
      'POST',
      '/sync/start',
      { syncs: [], provider_config_key: 'crm', connection_id: 'c1' },
    ],
    ['environment:syncs:read', 'GET', '/sync/status?syncs=*&provider_config_key=crm'],
    [
      'environment:syncs:update',
      'PUT',
      '/sync/update-connection-frequency',
      { sync_name: 'contacts', provider_config_key: 'crm', connection_id: 'c1', frequency: null },
    ],
    [
      'environment:syncs:variant:create',
      'POST',
      '/sync/contacts/variant/v5',
      { provider_config_key: 'crm', connection_id: 'c1' },
    ],
    [
      'environment:syncs:variant:delete',
      'DELETE',
      '/sync/contacts/variant/v5',
      { provider_config_key: 'crm', connection_id: 'c1' },
    ],
    ['environment:integrations:list', 'GET', '/integrations'],
  ]

  it('each route answers 403 without its scope, and works with only that scope', async () => {
    const env = t.envId
    const other = (await createKey(t.database.db.kysely, env, ['environment:records:read'])).secret
    for (const [scope, method, url, body] of routes) {
      const denied = await api(t, method, url, body, other)
      expect({ url, ...denied }).toEqual({
        url,
        ...err(403, 'forbidden', new RegExp(`^Insufficient scope\\. Required( one of)?: ${scope}\\b`)),
      })
      const only = (await createKey(t.database.db.kysely, env, [scope])).secret
      const allowed = await api(t, method, url, body, only)
      expect({ url, status: allowed.status }).toEqual({ url, status: 200 })
    }
    // A prefix wildcard grants the sub-scopes.
    const syncs = (await createKey(t.database.db.kysely, env, ['environment:syncs:*'])).secret
    expect((await variant('POST', 'contacts', 'v6')).status).toBe(200)
    expect(
      (
        await api(
          t,
          'DELETE',
          '/sync/contacts/variant/v6',
          { provider_config_key: 'crm', connection_id: 'c1' },
          syncs,
        )
      ).status,
    ).toBe(200)
  })
})
