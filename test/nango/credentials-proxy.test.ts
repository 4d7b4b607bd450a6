import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { savePairing } from '../../src/nango/store.ts'
import { proxyThroughNango } from '../../src/nango/proxy.ts'
import { proxyRequest } from '../../src/providers/proxy.ts'
import { type JsonBody, startTestServer, type TestServer } from '../helpers/server.ts'
import { api, type FakeApi, records, startApi, syncId, trigger, waitForRun } from '../runtime/harness.ts'
import { authWebhook, type NangoStandIn, postWebhook, startNangoStandIn } from './nango-api.ts'

/**
 * A paired environment's credentials and requests come from its Nango (SPEC 6.5): a sync written
 * for Nango (createSync from 'nango', a zod model) runs here on a connection that arrived by
 * Nango's creation webhook; its `nango.get` and `nango.paginate` go through the stand-in of Nango's
 * `/proxy` to a stand-in provider API, `paginate` takes its defaults from Nango's
 * `GET /providers/{provider}`, `nango.getToken()` is the token Nango holds, and nothing of the
 * credentials is stored here. Nango going down fails the run, naming it; the next run succeeds.
 */

const NANGO_KEY = 'nango-secret-key-of-dev'
const TICKETS = Array.from({ length: 5 }, (_, i) => ({ id: `t${i + 1}`, title: `Ticket ${i + 1}` }))

const SYNC = `
  import { createSync } from 'nango'
  import * as z from 'zod'

  const Ticket = z.object({
    id: z.string(),
    title: z.string(),
    token: z.string(),
    owner: z.string(),
    missing: z.number(),
    archived: z.boolean(),
  })

  export default createSync({
    description: 'tickets through Nango', version: '1.0.0', frequency: 'every day',
    autoStart: true, syncType: 'full', models: { Ticket },
    exec: async (nango) => {
      const token = await nango.getToken()
      const me = await nango.get({ endpoint: '/me', headers: { 'X-Trace': 'trace-1' } })
      let missing = 0
      try {
        await nango.get({ endpoint: '/missing', retries: 1 })
      } catch (err) {
        missing = err.response.status
      }
      const extra = { token, owner: me.data.name, missing }
      for await (const page of nango.paginate({ endpoint: '/tickets' })) {
        await nango.batchSave(page.map((t) => ({ ...t, ...extra, archived: false })), 'Ticket')
      }
      // A call's own paginate config wins over Nango's (limit 1 instead of 2).
      for await (const page of nango.paginate({ endpoint: '/archived', paginate: { limit: 1 } })) {
        await nango.batchSave(page.map((t) => ({ ...t, ...extra, archived: true })), 'Ticket')
      }
      // Its own type too (merged over Nango's: limit 2 stays): Link headers, which Nango passes back
      // on a streamed answer.
      const linked = { type: 'link', link_rel_in_response_header: 'next', response_path: 'items' }
      for await (const page of nango.paginate({ endpoint: '/linked', paginate: linked })) {
        await nango.batchSave(page.map((t) => ({ ...t, ...extra, archived: true })), 'Ticket')
      }
    },
  })`

let provider: FakeApi
let nango: NangoStandIn
let t: TestServer
let token = 'tok-1'

/** The provider's API: cursor pages of `limit` items, answered only to Nango's token. */
function tickets(all: typeof TICKETS, query: URLSearchParams) {
  const start = Number(query.get('cursor') ?? 0)
  const end = start + Number(query.get('limit') ?? 100)
  return { body: { items: all.slice(start, end), next: end < all.length ? String(end) : null } }
}

const connection = (credentials: Record<string, unknown>) => ({
  connection_id: 'c1',
  provider_config_key: 'tickets',
  provider: 'ticketing',
  metadata: { team: 'support' },
  credentials,
})

const oauth = (accessToken: string) => ({
  type: 'OAUTH2',
  access_token: accessToken,
  refresh_token: 'refresh-held-by-nango',
  expires_at: new Date(Date.now() + 3_600_000).toISOString(),
})

beforeAll(async () => {
  provider = await startApi((req) => {
    if (req.headers.authorization !== `Bearer ${token}`) return { status: 401, body: { error: 'bad token' } }
    if (req.path === '/me') return { body: { name: 'ada', trace: req.headers['x-trace'] ?? null } }
    if (req.path === '/tickets') return tickets(TICKETS, req.query)
    if (req.path === '/linked') {
      // Streamed (chunked), as large answers are: Nango's proxy passes its Link header back.
      const page = Number(req.query.get('page') ?? 1)
      const headers: Record<string, string> = { 'transfer-encoding': 'chunked' }
      if (page < 2) headers.link = `<${provider.url}/linked?page=${page + 1}>; rel="next"`
      return {
        body: { items: [{ id: `l${page}`, title: `Linked ${page}` }] },
        headers,
      }
    }
    if (req.path === '/archived') {
      return tickets(
        [
          { id: 'a1', title: 'Old' },
          { id: 'a2', title: 'Older' },
        ],
        req.query,
      )
    }
    return { status: 404, body: { error: 'not here' } }
  })
  nango = await startNangoStandIn(NANGO_KEY)
  nango.providers.set('ticketing', {
    auth_mode: 'OAUTH2',
    proxy: {
      base_url: provider.url,
      paginate: {
        type: 'cursor',
        cursor_path_in_response: 'next',
        cursor_name_in_request: 'cursor',
        limit_name_in_request: 'limit',
        response_path: 'items',
        limit: 2,
      },
    },
  })
  nango.put(connection(oauth(token)))
  t = await startTestServer({ 'tickets/syncs/tickets.ts': SYNC })
  // What `syncstore nango pair` stores (pairing.test.ts runs the command); no reconcile for an
  // hour: the connection arrives by its creation webhook.
  await savePairing(
    t.database.db.kysely,
    t.sealer,
    { environmentId: t.envId, url: nango.url, secretKey: NANGO_KEY, webhookSecret: null },
    { leaseMs: 0, intervalMs: 3_600_000 },
  )
})
afterAll(async () => {
  await t?.close()
  await nango?.close()
  await provider?.close()
})

const ticketRecords = async () => [...(await records(t, 'tickets', 'c1', 'Ticket')).values()]

describe('a paired environment’s credentials and requests go through Nango', { timeout: 120_000 }, () => {
  let sync: string

  it('a sync of a connection created by webhook pages and gets through Nango’s proxy', async () => {
    const res = await postWebhook(
      `${t.url}/webhooks/nango/dev`,
      authWebhook('creation', connection({})),
      NANGO_KEY,
    )
    expect(res.status).toBe(200)
    sync = await syncId(t, 'tickets', 'c1', 'tickets')
    const run = await waitForRun(t, sync)
    expect(run).toMatchObject({ state: 'SUCCEEDED', error: null })
    expect(run.result).toEqual({ Ticket: { added: 9, updated: 0, deleted: 0 } })

    const saved = await ticketRecords()
    expect(saved.map((r) => r.id).sort()).toEqual(['a1', 'a2', 'l1', 'l2', 't1', 't2', 't3', 't4', 't5'])
    // getToken is Nango's token; the 404 kept its status through Nango's proxy.
    expect(saved.find((r) => r.id === 't3')).toMatchObject({
      title: 'Ticket 3',
      token: 'tok-1',
      owner: 'ada',
      missing: 404,
      archived: false,
    })

    // Every API call came through Nango's proxy, with Nango's token and the call's own header.
    const calls = provider.requests.map((r) => `${r.method} ${r.path}?${r.query}`)
    expect(calls).toEqual([
      'GET /me?',
      'GET /missing?',
      'GET /tickets?limit=2',
      'GET /tickets?limit=2&cursor=2',
      'GET /tickets?limit=2&cursor=4',
      'GET /archived?limit=1',
      'GET /archived?limit=1&cursor=1',
      'GET /linked?limit=2',
      'GET /linked?page=2',
    ])
    expect(nango.proxied).toHaveLength(calls.length)
    expect(provider.requests[0]!.headers['x-trace']).toBe('trace-1')
    // Pagination from Nango's provider description, read once for the run; the credentials once too
    // (the token is good for an hour).
    const asked = nango.requests.filter((r) => !r.startsWith('GET /proxy') && !r.includes('/proxy/'))
    expect(asked.filter((r) => r.startsWith('GET /providers/ticketing'))).toHaveLength(1)
    expect(asked.filter((r) => r.includes('force_refresh=false&refresh_token=true'))).toHaveLength(1)
  })

  it('the HTTP /proxy route of a paired environment goes through Nango’s proxy too', async () => {
    const client = new Nango({ secretKey: t.key, host: t.url })
    const before = nango.proxied.length
    const me = await client.get({
      endpoint: '/me',
      connectionId: 'c1',
      providerConfigKey: 'tickets',
      headers: { 'X-Trace': 'trace-2' },
    })
    expect(me.data).toEqual({ name: 'ada', trace: 'trace-2' })
    // The API's error answer passes through with its status.
    const missing = await client
      .get({ endpoint: '/missing', connectionId: 'c1', providerConfigKey: 'tickets' })
      .then(
        () => undefined,
        (err: { response?: { status: number; data: unknown } }) => err.response,
      )
    expect(missing).toMatchObject({ status: 404, data: { error: 'not here' } })
    expect(nango.proxied.slice(before)).toEqual([`GET ${provider.url}/me`, `GET ${provider.url}/missing`])
  })

  it('stores no credentials here; GET /connections/{id} shows Nango’s', async () => {
    const row = await t.database.db.kysely
      .selectFrom('connections')
      .select(['credentials', 'metadata'])
      .where('connection_id', '=', 'c1')
      .executeTakeFirstOrThrow()
    expect(row.credentials).toBeNull()

    const plain = await api<JsonBody>(t, 'GET', '/connections/c1?provider_config_key=tickets')
    expect(plain.status).toBe(200)
    expect(plain.body.credentials).toMatchObject({ type: 'OAUTH2', access_token: 'tok-1' })
    expect(plain.body.credentials.refresh_token).toBeUndefined()
    expect(plain.body.metadata).toEqual({ team: 'support' })
    const full = await api<JsonBody>(
      t,
      'GET',
      '/connections/c1?provider_config_key=tickets&refresh_token=true&force_refresh=true',
    )
    expect(full.body.credentials.refresh_token).toBe('refresh-held-by-nango')
    expect(nango.requests.at(-1)).toContain('force_refresh=true')
  })

  it('Nango down fails the run, naming it; nothing is lost; the next run after it is back succeeds', async () => {
    await nango.stop()
    const failed = await trigger(t, 'tickets', 'c1', 'tickets')
    expect(failed.state).toBe('FAILED')
    expect(failed.error).toContain(`Nango is unreachable at ${nango.url} (ECONNREFUSED)`)
    expect(await ticketRecords()).toHaveLength(9)
    const down = await api<JsonBody>(t, 'GET', '/connections/c1?provider_config_key=tickets')
    expect(down.status).toBe(503)
    expect(down.body.error).toMatchObject({ code: 'nango_unavailable' })
    expect(down.body.error.message).toContain(`Nango is unreachable at ${nango.url}`)

    // Back, and the token Nango holds has changed meanwhile (Nango refreshed it).
    token = 'tok-2'
    nango.put(connection(oauth(token)))
    await nango.restart()
    const next = await trigger(t, 'tickets', 'c1', 'tickets')
    expect(next).toMatchObject({ state: 'SUCCEEDED', error: null })
    const saved = await ticketRecords()
    expect(saved).toHaveLength(9)
    expect(saved.every((r) => r.token === 'tok-2')).toBe(true)
  })

  it('Nango answering 5xx fails the run with Nango’s URL and status; then it succeeds again', async () => {
    nango.failAll = 503
    let failed
    try {
      failed = await trigger(t, 'tickets', 'c1', 'tickets')
    } finally {
      nango.failAll = null
    }
    expect(failed.state).toBe('FAILED')
    expect(failed.error).toContain(
      `Nango at ${nango.url} answered 503 to GET /connections/c1 (Nango is failing), ` +
        `reading the credentials of connection 'c1' of integration 'tickets'`,
    )
    expect(await trigger(t, 'tickets', 'c1', 'tickets')).toMatchObject({ state: 'SUCCEEDED' })
  })

  it('measures one proxied call through Nango’s stand-in vs a direct one (p50 of 200 each)', async () => {
    const config = { endpoint: '/me', method: 'GET' }
    const deadline = Date.now() + 60_000
    const direct = () =>
      proxyRequest(config, {
        provider: { proxy: { base_url: provider.url } },
        providerName: 'ticketing',
        connection: { credentials: oauth(token), connectionConfig: {}, metadata: null },
        deadline,
      })
    const proxied = () =>
      proxyThroughNango(config, {
        pairing: { url: nango.url, secretKey: NANGO_KEY },
        providerConfigKey: 'tickets',
        connectionId: 'c1',
        deadline,
      })
    const p50 = async (call: () => Promise<{ data: unknown }>) => {
      const times: number[] = []
      for (let i = 0; i < 20; i++) await call()
      for (let i = 0; i < 200; i++) {
        const started = process.hrtime.bigint()
        const { data } = await call()
        times.push(Number(process.hrtime.bigint() - started) / 1000)
        expect(data).toMatchObject({ name: 'ada' })
      }
      times.sort((a, b) => a - b)
      return (times[99]! + times[100]!) / 2
    }
    const directUs = await p50(direct)
    const proxiedUs = await p50(proxied)
    console.log(
      `one call: direct p50 ${directUs.toFixed(0)} µs, through Nango's stand-in /proxy p50 ${proxiedUs.toFixed(0)} µs ` +
        `(+${(proxiedUs - directUs).toFixed(0)} µs, same local API, 200 calls each)`,
    )
    expect(proxiedUs).toBeGreaterThan(0)
  })
})
