import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import { connect, type FakeApi, integrationJson, startApi } from './harness.ts'

/**
 * nango.proxy / nango.get / nango.post from a sync function: requests go to the integration's
 * base_url with the connection's credentials, 429 and 5xx answers are retried with backoff when the
 * call asks for retries (Nango's default is none), and a
 * request that keeps failing ends in an error the function can catch.
 */

// A sync that calls the API once and logs what came back.
const whoami = `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'Who am I', frequency: 'every hour', models: { Me: { type: 'object' } },
    async exec(nango) {
      const res = await nango.get({ endpoint: '/whoami', params: { from: nango.providerConfigKey } })
      await nango.log('me', res.data)
    },
  })`

const flaky = `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'Calls an API that is having a bad day', frequency: 'every hour',
    models: { Order: { type: 'object' } },
    async exec(nango) {
      const orders = await nango.get({ endpoint: '/orders', retries: 3 })
      await nango.log('orders', { status: orders.status, data: orders.data })
      const created = await nango.post({ endpoint: '/orders', data: { item: 'book' }, headers: { 'x-request-id': 'r-1' } })
      await nango.log('created', created.data)
      for (const endpoint of ['/down', '/missing']) {
        try {
          await nango.get({ endpoint, retries: 3 })
          await nango.log(endpoint + ': no error')
        } catch (err) {
          await nango.log((err as Error).message, { level: 'error' })
        }
      }
      // Nango's retryOn: statuses retried besides 429 and 5xx (workable's templates send [404, 429]).
      try {
        await nango.get({ endpoint: '/gone', retries: 2, retryOn: [404] })
      } catch (err) {
        await nango.log((err as Error).message, { level: 'error' })
      }
    },
  })`

let external: FakeApi
let t: TestServer
let ordersCalls = 0

beforeAll(async () => {
  external = await startApi((req) => {
    if (req.path === '/whoami') return { body: { ok: true } }
    if (req.path === '/orders' && req.method === 'GET') {
      ordersCalls += 1
      // Rate limited (asks for no wait), then unavailable, then fine.
      if (ordersCalls === 1) {
        return { status: 429, headers: { 'retry-after': '0' }, body: { error: 'slow down' } }
      }
      if (ordersCalls === 2) return { status: 503, body: { error: 'unavailable' } }
      return { body: [{ id: 'o1' }] }
    }
    if (req.path === '/orders' && req.method === 'POST') {
      return {
        status: 201,
        body: { received: JSON.parse(req.body), contentType: req.headers['content-type'] },
      }
    }
    if (req.path === '/down') return { status: 503, body: { error: 'still down' } }
    return { status: 404, body: { error: 'no such thing' } }
  })
  const base = external.url
  t = await startTestServer({
    'shop/integration.json': integrationJson(base),
    'shop/syncs/orders.ts': flaky,
    'keyed/integration.json': integrationJson(base),
    'keyed/syncs/whoami.ts': whoami,
    'oauth/integration.json': integrationJson(base),
    'oauth/syncs/whoami.ts': whoami,
    'basic/integration.json': integrationJson(base),
    'basic/syncs/whoami.ts': whoami,
    'custom-header/integration.json': integrationJson(base, {
      auth: { in: 'header', name: 'X-Api-Key', format: 'Token {apiKey}' },
    }),
    'custom-header/syncs/whoami.ts': whoami,
    'custom-query/integration.json': integrationJson(base, { auth: { in: 'query', name: 'api_token' } }),
    'custom-query/syncs/whoami.ts': whoami,
  })
})
afterAll(async () => {
  await t?.close()
  await external?.close()
})

const calls = (method: string, path: string) =>
  external.requests.filter((r) => r.method === method && r.path === path)

it('retries a 429 and a 503, then succeeds; gives up on a 5xx after its retries; retries a 4xx only when retryOn names it', async () => {
  const { orders } = await connect(t, 'shop', 'c1', ['orders'], {
    credentials: { type: 'API_KEY', apiKey: 'shop-key-0001' },
  })
  expect(orders!.state, orders!.error ?? '').toBe('SUCCEEDED')
  const logs = await listRunLogs(t.database.db.kysely, orders!.id)

  expect(calls('GET', '/orders')).toHaveLength(3)
  expect(logs[0]).toMatchObject({ message: 'orders', payload: { status: 200, data: [{ id: 'o1' }] } })

  const [post] = calls('POST', '/orders')
  expect(post!.headers['x-request-id']).toBe('r-1')
  expect(logs[1]).toMatchObject({
    message: 'created',
    payload: { received: { item: 'book' }, contentType: 'application/json' },
  })

  // retries: 3 after the first attempt, then the error reaches the function.
  expect(calls('GET', '/down')).toHaveLength(4)
  expect(logs[2]).toMatchObject({ level: 'error' })
  expect(logs[2]!.message).toMatch(/^proxy GET \/down answered 503: .*still down/)

  expect(calls('GET', '/missing')).toHaveLength(1)
  expect(logs[3]!.message).toMatch(/^proxy GET \/missing answered 404/)

  expect(calls('GET', '/gone')).toHaveLength(3)
  expect(logs[4]!.message).toMatch(/^proxy GET \/gone answered 404/)
})

const whoamiRequest = (pck: string) => {
  const found = external.requests.filter((r) => r.path === '/whoami' && r.query.get('from') === pck)
  expect(found).toHaveLength(1)
  return found[0]!
}

it('sends an API key as Authorization: Bearer', async () => {
  const { whoami: run } = await connect(t, 'keyed', 'c1', ['whoami'], {
    credentials: { type: 'API_KEY', apiKey: 'api-key-12345678' },
  })
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  expect(whoamiRequest('keyed').headers.authorization).toBe('Bearer api-key-12345678')
})

it('sends an OAuth2 access token as Authorization: Bearer', async () => {
  const { whoami: run } = await connect(t, 'oauth', 'c1', ['whoami'], {
    credentials: { type: 'OAUTH2', access_token: 'oauth-token-abcdef', refresh_token: 'refresh-me' },
  })
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  expect(whoamiRequest('oauth').headers.authorization).toBe('Bearer oauth-token-abcdef')
})

it('sends basic credentials as Authorization: Basic', async () => {
  const { whoami: run } = await connect(t, 'basic', 'c1', ['whoami'], {
    credentials: { type: 'BASIC', username: 'ada', password: 'lovelace' },
  })
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  expect(whoamiRequest('basic').headers.authorization).toBe(`Basic ${btoa('ada:lovelace')}`)
})

it('follows integration.json "auth" when given: a header of its own', async () => {
  const { whoami: run } = await connect(t, 'custom-header', 'c1', ['whoami'], {
    credentials: { type: 'API_KEY', apiKey: 'custom-key-0001' },
  })
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  const request = whoamiRequest('custom-header')
  expect(request.headers['x-api-key']).toBe('Token custom-key-0001')
  expect(request.headers.authorization).toBeUndefined()
})

it('follows integration.json "auth" when given: a query parameter', async () => {
  const { whoami: run } = await connect(t, 'custom-query', 'c1', ['whoami'], {
    credentials: { type: 'OAUTH2', access_token: 'query-token-0001' },
  })
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  const request = whoamiRequest('custom-query')
  expect(request.query.get('api_token')).toBe('query-token-0001')
  expect(request.headers.authorization).toBeUndefined()
})
