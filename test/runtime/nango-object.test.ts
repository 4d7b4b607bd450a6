import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import {
  api,
  connect,
  type FakeApi,
  integrationJson,
  records,
  type RunRow,
  startApi,
  trigger,
} from './harness.ts'

/**
 * The members of the `nango` object beyond records and checkpoints, with Nango's semantics, run
 * through the whole server against a small API on loopback: paginate (cursor, link, offset; the
 * integration's default and a call's own), retries, a failed request's status and response,
 * endpoints, baseUrlOverride, responseType, metadata, listRecords / getRecordsByIds, merging
 * strategies, getToken, getIntegration, provider, log levels, ActionError and zodValidateInput.
 */

// Any record with a string id.
const MODEL = JSON.stringify({ type: 'object', properties: { id: { type: 'string' } }, required: ['id'] })
const ITEMS = Array.from({ length: 45 }, (_, i) => ({ id: `i${i + 1}` }))

const sync = (models: string[], body: string, extra = '') => `
  import { createSync } from 'nango'
  import * as z from 'zod'
  export default createSync({
    description: 'test', frequency: 'every day', ${extra}
    models: { ${models.map((m) => `${m}: ${MODEL}`).join(', ')} },
    async exec(nango) { ${body} },
  })`

const save = (what: string) => `await nango.batchSave([{ id: 'out', ...(${what}) }], 'Report')`

const files = (base: string): Record<string, string> => ({
  'pages/integration.json': integrationJson(base, {
    provider: 'pager',
    pagination: {
      type: 'cursor',
      cursor_path_in_response: 'meta.next',
      cursor_name_in_request: 'cursor',
      response_path: 'items',
      limit: 10,
      limit_name_in_request: 'per_page',
    },
  }),
  // The integration's default, with the call's own params kept
  'pages/syncs/cursor.ts': sync(
    ['Item'],
    `for await (const page of nango.paginate({ endpoint: 'cursor-items', params: { filter: 'all' } })) {
       await nango.batchSave(page, 'Item')
     }`,
  ),
  // A call's own type over the default; Link header with absolute URLs
  'pages/syncs/link.ts': sync(
    ['Item'],
    `for await (const page of nango.paginate({ endpoint: '/link-items', paginate: { type: 'link', link_rel_in_response_header: 'next', response_path: 'data', limit: 20 } })) {
       await nango.batchSave(page, 'Item')
     }`,
  ),
  // Offset by page number, in the body of a POST
  'pages/syncs/offset.ts': sync(
    ['Item'],
    `for await (const page of nango.paginate({ endpoint: '/offset-items', method: 'POST', data: { q: 'x' },
         paginate: { type: 'offset', offset_name_in_request: 'page.number', offset_start_value: 1,
                     offset_calculation_method: 'per-page', response_path: 'results', limit: 10, limit_name_in_request: 'page.size',
                     on_page: async ({ nextPageParam, response }) => { await nango.log('page', { at: nextPageParam, status: response.status }) } } })) {
       await nango.batchSave(page, 'Item')
     }`,
  ),
  // One integration per test: a connection runs every sync of its integration
  'calls/integration.json': integrationJson(base),
  'calls/syncs/http.ts': sync(
    ['Report'],
    `let missing
     try { await nango.get({ endpoint: 'missing' }) } catch (err) {
       missing = { status: err.status, responseStatus: err.response.status, data: err.response.data,
                   why: err.response.headers['x-why'], isError: err instanceof Error }
     }
     const flaky = await nango.get({ endpoint: '/flaky', retries: 3 })
     let gaveUp
     try { await nango.post({ endpoint: '/down', retries: 1 }) } catch (err) { gaveUp = err.status }
     const override = await nango.get({ endpoint: 'where', baseUrlOverride: '${base}/v2' })
     const text = await nango.get({ endpoint: '/where', responseType: 'text' })
     const bytes = await nango.get({ endpoint: '/where', responseType: 'arraybuffer' })
     ${save(`{ missing, flaky: flaky.data, gaveUp, override: override.data, text: text.data, bytes: bytes.data.length }`)}`,
  ),
  'state/integration.json': integrationJson(base, { provider: 'callsapi' }),
  'state/syncs/state.ts': sync(
    ['Report'],
    `await nango.setMetadata({ a: 1, b: 1 })
     await nango.updateMetadata({ b: 2, c: 3 })
     const metadata = await nango.getMetadata()
     const token = await nango.getToken()
     const integration = await nango.getIntegration()
     await nango.log('a debug line', { level: 'debug' })
     await nango.log('an info line')
     await nango.log('a warning', { why: 'x' }, { level: 'warn' })
     await nango.log('an error', { level: 'error' })
     await nango.log('verbose is debug', { level: 'verbose' })
     ${save(`{ metadata, token, provider: nango.provider, integration: { unique_key: integration.unique_key, provider: integration.provider } }`)}`,
  ),
  // listRecords and getRecordsByIds read back what an earlier run saved (150: two pages)
  'readback/integration.json': integrationJson(base),
  'readback/syncs/readback.ts': sync(
    ['Item', 'Report'],
    `const checkpoint = await nango.getCheckpoint()
     if (!checkpoint) {
       await nango.batchSave(Array.from({ length: 150 }, (_, i) => ({ id: String(i + 1), n: i + 1 })), 'Item')
       await nango.saveCheckpoint({ saved: true })
       return
     }
     let listed = 0
     for await (const record of nango.listRecords('Item')) listed += record._nango_metadata ? 1 : 0
     const found = await nango.getRecordsByIds([3, '150', 'nope'], 'Item')
     ${save(`{ listed, keys: [...found.keys()], n: found.get(3)?.n }`)}`,
  ),
  'failing/integration.json': integrationJson(base),
  'failing/syncs/invalid-input.ts': sync(
    ['Report'],
    `const schema = z.object({ name: z.string() })
     const ok = await nango.zodValidateInput({ zodSchema: schema, input: { name: 'ada' } })
     await nango.log('valid', { data: ok.data })
     await nango.zodValidateInput({ zodSchema: schema, input: { name: 7 } })`,
  ),
  'failing/syncs/action-error.ts': sync(
    ['Report'],
    `if (!(new nango.ActionError({}) instanceof Error)) throw new Error('not an Error')
     throw new nango.ActionError({ message: 'The account has no access', code: 'no_access' })`,
  ),
  // ignore_if_modified_after: after `merge` sets it, what `other` writes to the same model is kept
  'merge/integration.json': integrationJson(base),
  'merge/syncs/merge.ts': sync(
    ['Shared'],
    `await nango.setMergingStrategy({ strategy: 'ignore_if_modified_after' }, 'Shared')
     await nango.setMergingStrategy({ strategy: 'override' }, 'Shared')
     await nango.batchSave([{ id: 'a', by: 'merge-1' }], 'Shared')
     await nango.get({ endpoint: '/poke' })
     for (let i = 0; i < 200; i++) {
       const a = (await nango.getRecordsByIds(['a'], 'Shared')).get('a')
       if (a.by === 'other') break
       await new Promise((resolve) => setTimeout(resolve, 50))
     }
     await nango.batchSave([{ id: 'a', by: 'merge-2' }, { id: 'b', by: 'merge-2' }], 'Shared')`,
  ),
  'merge/syncs/other.ts': sync(
    ['Shared'],
    `await nango.batchSave([{ id: 'a', by: 'other' }], 'Shared')`,
    'autoStart: false,',
  ),
})

let external: FakeApi
type Answer = { status?: number; body?: unknown; headers?: Record<string, string> }
let t: TestServer
let flakyCalls = 0
let downCalls = 0
/** The run `/poke` triggered: the test awaits it, so nothing polls the database after the server closes. */
let poked: Promise<RunRow> | undefined

beforeAll(async () => {
  external = await startApi(({ method, path, query, body }): Answer => {
    if (path === '/cursor-items') {
      const from = Number(query.get('cursor') ?? 0)
      const size = Number(query.get('per_page'))
      const next = from + size < ITEMS.length ? String(from + size) : ''
      return { body: { items: ITEMS.slice(from, from + size), meta: { next } } }
    }
    if (path === '/link-items') {
      const page = Number(query.get('page') ?? 1)
      const headers: Record<string, string> =
        page < 3
          ? {
              link: `<${external.url}/link-items?page=${page + 1}>; rel="next", <${external.url}/link-items?page=3>; rel="last"`,
            }
          : {}
      return { body: { data: ITEMS.slice((page - 1) * 20, page * 20) }, headers }
    }
    if (path === '/offset-items' && method === 'POST') {
      const { q, page } = JSON.parse(body) as { q: string; page: { number: number; size: number } }
      if (q !== 'x') return { status: 400 }
      return { body: { results: ITEMS.slice((page.number - 1) * page.size, page.number * page.size) } }
    }
    if (path === '/flaky') {
      flakyCalls += 1
      if (flakyCalls === 1) {
        return { status: 429, headers: { 'retry-after': '0' }, body: { error: 'slow down' } }
      }
      if (flakyCalls === 2) return { status: 503, body: { error: 'busy' } }
      return { body: { ok: true, attempts: flakyCalls } }
    }
    if (path === '/down') {
      downCalls += 1
      return { status: 502, body: { error: 'down' } }
    }
    if (path === '/where') return { body: { at: 'v1' } }
    if (path === '/v2/where') return { body: { at: 'v2' } }
    if (path === '/poke') {
      poked = trigger(t, 'merge', 'conn-merge', 'other')
      // Awaited by the test; until then a failure must not count as unhandled.
      poked.catch(() => {})
      return { body: {} }
    }
    return { status: 404, body: { error: 'not found' }, headers: { 'x-why': 'no such thing' } }
  })
  t = await startTestServer(files(external.url))
})
afterAll(async () => {
  await t?.close()
  await external?.close()
})

const report = async (pck: string, connection: string) =>
  (await records(t, pck, connection, 'Report')).get('out') as Record<string, unknown> | undefined

it('paginates by cursor (the integration default), link (absolute URLs in the Link header) and offset (in the body)', async () => {
  const runs = await connect(t, 'pages', 'conn-pages', ['cursor', 'link', 'offset'])
  for (const run of Object.values(runs)) expect(run).toMatchObject({ state: 'SUCCEEDED' })
  // The three syncs save the same 45 items to one dataset
  expect((await records(t, 'pages', 'conn-pages', 'Item')).size).toBe(45)

  const cursorCalls = external.requests.filter((r) => r.path === '/cursor-items')
  // 10 a page: 5 pages, the last with an empty cursor
  expect(cursorCalls.map((r) => r.query.get('cursor'))).toEqual([null, '10', '20', '30', '40'])
  expect(cursorCalls.every((r) => r.query.get('filter') === 'all' && r.query.get('per_page') === '10')).toBe(
    true,
  )

  const linkCalls = external.requests.filter((r) => r.path === '/link-items')
  expect(linkCalls.map((r) => r.query.get('page'))).toEqual([null, '2', '3'])
  // The call's limit is sent under the default's limit_name_in_request
  expect(linkCalls[0]!.query.get('per_page')).toBe('20')

  const offsetCalls = external.requests.filter((r) => r.path === '/offset-items')
  expect(offsetCalls.map((r) => JSON.parse(r.body))).toEqual([
    { q: 'x', page: { number: 1, size: 10 } },
    { q: 'x', page: { number: 2, size: 10 } },
    { q: 'x', page: { number: 3, size: 10 } },
    { q: 'x', page: { number: 4, size: 10 } },
    { q: 'x', page: { number: 5, size: 10 } },
  ])
  // on_page after each full page (the short last one ends the paging)
  const logs = await listRunLogs(t.database.db.kysely, runs.offset!.id)
  expect(logs.map((l) => l.payload)).toEqual([1, 2, 3, 4].map((at) => ({ at, status: 200 })))
})

it("keeps a failed request's status and response, retries 429 and 5xx, takes endpoints with or without a slash, baseUrlOverride and responseType", async () => {
  const { http } = await connect(t, 'calls', 'conn-http', ['http'])
  expect(http).toMatchObject({ state: 'SUCCEEDED' })
  expect(await report('calls', 'conn-http')).toMatchObject({
    missing: {
      status: 404,
      responseStatus: 404,
      data: { error: 'not found' },
      why: 'no such thing',
      isError: true,
    },
    flaky: { ok: true, attempts: 3 },
    gaveUp: 502,
    override: { at: 'v2' },
    text: '{"at":"v1"}',
    bytes: 11,
  })
  expect(downCalls).toBe(2)
})

it('sets and merges metadata, gets the token, the integration and the provider, and logs at levels', async () => {
  const { state } = await connect(t, 'state', 'conn-state', ['state'], {
    credentials: { type: 'OAUTH2', access_token: 'tok-1' },
    metadata: { old: true },
  })
  expect(state).toMatchObject({ state: 'SUCCEEDED' })
  const out = await report('state', 'conn-state')
  expect(out).toMatchObject({
    metadata: { a: 1, b: 2, c: 3 },
    token: 'tok-1',
    provider: 'callsapi',
    integration: { unique_key: 'state', provider: 'callsapi' },
  })
  expect((out!.metadata as Record<string, unknown>).old).toBeUndefined()
  const connection = await api<{ metadata: unknown }>(
    t,
    'GET',
    '/connections/conn-state?provider_config_key=state',
  )
  expect(connection.body.metadata).toEqual({ a: 1, b: 2, c: 3 })

  const logs = await listRunLogs(t.database.db.kysely, state!.id)
  expect(logs.map((l) => [l.level, l.message])).toEqual([
    ['debug', 'a debug line'],
    ['info', 'an info line'],
    ['warn', 'a warning'],
    ['error', 'an error'],
    ['debug', 'verbose is debug'],
  ])
  expect(logs[2]!.payload).toEqual({ why: 'x' })
})

it('reads back earlier records with listRecords and getRecordsByIds', async () => {
  const { readback } = await connect(t, 'readback', 'conn-read', ['readback'])
  expect(readback).toMatchObject({ state: 'SUCCEEDED' })
  expect(await trigger(t, 'readback', 'conn-read', 'readback')).toMatchObject({ state: 'SUCCEEDED' })
  // The ids come back as the function gave them; an unknown one is left out
  expect(await report('readback', 'conn-read')).toMatchObject({ listed: 150, keys: [3, '150'], n: 3 })
})

it('fails a run with an ActionError message; zodValidateInput logs each problem and throws one', async () => {
  const runs = await connect(t, 'failing', 'conn-fail', ['invalid-input', 'action-error'])
  expect(runs['action-error']).toMatchObject({ state: 'FAILED', error: 'The account has no access' })
  expect(runs['invalid-input']).toMatchObject({ state: 'FAILED', error: 'Invalid input provided' })
  const logs = await listRunLogs(t.database.db.kysely, runs['invalid-input']!.id)
  expect(logs[0]).toMatchObject({ level: 'info', message: 'valid', payload: { data: { name: 'ada' } } })
  expect(logs[1]).toMatchObject({ level: 'error' })
  expect(logs[1]!.message).toMatch(/^Invalid input provided: .* at path name$/)
})

it('ignore_if_modified_after keeps what another sync wrote after it was set; a second strategy is skipped', async () => {
  const { merge } = await connect(t, 'merge', 'conn-merge', ['merge'])
  expect(merge).toMatchObject({ state: 'SUCCEEDED' })
  const shared = await records(t, 'merge', 'conn-merge', 'Shared')
  expect(shared.get('a')).toMatchObject({ by: 'other' })
  expect(shared.get('b')).toMatchObject({ by: 'merge-2' })
  const logs = await listRunLogs(t.database.db.kysely, merge!.id)
  expect(logs.map((l) => l.message)).toEqual([
    "Merging strategy set to 'ignore_if_modified_after' for model Shared.",
    'Merging strategy for model Shared is already set. Skipping',
  ])
  expect(poked).toBeDefined()
  const other = await poked!
  expect(other.state).toBe('SUCCEEDED')
})
