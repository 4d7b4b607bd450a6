import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import { api, connect, type FakeApi, records, startApi, syncId, waitForRun } from '../runtime/harness.ts'

type Answer = { status?: number; body?: unknown; headers?: Record<string, string> }
/**
 * Sync functions written as Nango users write them, relying on what the provider catalogue knows:
 * GitHub's Link-header paging, Slack's cursor, Notion's version header and body cursor,
 * Salesforce's instance_url from the connection; integration.json names only the provider (and a
 * stand-in base URL). Rate limits: a 429 waits as the API says only when the call asked for retries.
 */

const sync = (body: string) => `
  import { createSync } from 'nango'
  import * as z from 'zod'
  const Item = z.object({ id: z.string(), name: z.string() })
  export default createSync({
    description: 'provider default', frequency: 'every day', autoStart: true, syncType: 'full',
    models: { Item },
    async exec(nango) { ${body} },
  })`

const savePages = (call: string) => `
  for await (const page of nango.paginate(${call})) {
    await nango.batchSave(page.map((x) => ({ id: String(x.id), name: String(x.name) })), 'Item')
  }`

const only = (provider: string, base?: string) =>
  JSON.stringify({ provider, ...(base ? { base_url: base } : {}) })

let stand: FakeApi
let t: TestServer
const limited = { count: 0, times: [] as number[] }

beforeAll(async () => {
  stand = await startApi((req): Answer => {
    // GitHub: pages chained by the Link header
    if (req.path === '/user/repos') {
      const page = Number(req.query.get('page') ?? '1')
      const items =
        page === 1
          ? [
              { id: 1, name: 'a' },
              { id: 2, name: 'b' },
            ]
          : [{ id: 3, name: 'c' }]
      const next = page === 1 ? `<${stand.url}/user/repos?page=2>; rel="next"` : undefined
      return { body: items, headers: next ? { link: next } : {} }
    }
    // Slack: response_metadata.next_cursor, empty on the last page
    if (req.path === '/conversations.list') {
      const cursor = req.query.get('cursor')
      return cursor === 'p2'
        ? {
            body: {
              ok: true,
              channels: [{ id: 'C2', name: 'random' }],
              response_metadata: { next_cursor: '' },
            },
          }
        : {
            body: {
              ok: true,
              channels: [{ id: 'C1', name: 'general' }],
              response_metadata: { next_cursor: 'p2' },
            },
          }
    }
    // Notion: a POST whose body carries start_cursor; the version header is required
    if (req.path === '/v1/search') {
      if (req.headers['notion-version'] !== '2022-06-28') {
        return { status: 400, body: { code: 'missing_version' } }
      }
      const body = JSON.parse(req.body || '{}') as { start_cursor?: string }
      return body.start_cursor === 'n2'
        ? { body: { results: [{ id: 'p2', name: 'second' }], next_cursor: null, has_more: false } }
        : { body: { results: [{ id: 'p1', name: 'first' }], next_cursor: 'n2', has_more: true } }
    }
    // Salesforce: the org's own host, from connection_config.instance_url
    if (req.path === '/services/data/v60.0/query') {
      return { body: { done: true, totalSize: 1, records: [{ Id: '001', Name: 'Acme' }] } }
    }
    // Rate limited once, asking for a 1 s wait
    if (req.path === '/limited') {
      limited.count += 1
      limited.times.push(Date.now())
      if (limited.count % 2 === 1) {
        return { status: 429, headers: { 'retry-after': '1' }, body: { error: 'slow' } }
      }
      return { body: { ok: true } }
    }
    return { status: 404, body: { error: `no ${req.path}` } }
  })
  const base = stand.url
  t = await startTestServer({
    'gh/integration.json': only('github', base),
    'gh/syncs/repos.ts': sync(savePages(`{ endpoint: '/user/repos' }`)),
    'sl/integration.json': only('slack', base),
    'sl/syncs/channels.ts': sync(
      savePages(`{ endpoint: 'conversations.list', paginate: { response_path: 'channels' } }`),
    ),
    'no/integration.json': only('notion', base),
    'no/syncs/pages.ts': sync(savePages(`{ endpoint: '/v1/search', method: 'POST', data: { query: '' } }`)),
    'sf/integration.json': only('salesforce'),
    'sf/syncs/accounts.ts': sync(`
      const res = await nango.get({ endpoint: '/services/data/v60.0/query', params: { q: 'SELECT Id, Name FROM Account' } })
      await nango.batchSave(res.data.records.map((r) => ({ id: r.Id, name: r.Name })), 'Item')`),
    'rl/integration.json': only('hubspot', base),
    'rl/syncs/limited.ts': sync(`
      const first = await nango.get({ endpoint: '/limited', retries: 2 })
      await nango.log('retried', { status: first.status })
      try {
        await nango.get({ endpoint: '/limited' })
      } catch (err) {
        await nango.log('not retried', { status: err.status })
      }`),
  })
})
afterAll(async () => {
  await t?.close()
  await stand?.close()
})

const oauth = { type: 'OAUTH2', access_token: 'tok-123456' }
const ids = async (pck: string) => [...(await records(t, pck, 'c1', 'Item')).keys()].sort()

it("GitHub: nango.paginate follows the Link header by the provider's default, with a bearer token", async () => {
  const { repos } = await connect(t, 'gh', 'c1', ['repos'], { credentials: oauth })
  expect(repos!.state, repos!.error ?? '').toBe('SUCCEEDED')
  expect(await ids('gh')).toEqual(['1', '2', '3'])
  const calls = stand.requests.filter((r) => r.path === '/user/repos')
  expect(calls.map((r) => r.query.get('page'))).toEqual([null, '2'])
  expect(calls[0]!.headers.authorization).toBe('Bearer tok-123456')
})

it("Slack: nango.paginate pages by response_metadata.next_cursor, the provider's cursor", async () => {
  const { channels } = await connect(t, 'sl', 'c1', ['channels'], { credentials: oauth })
  expect(channels!.state, channels!.error ?? '').toBe('SUCCEEDED')
  expect(await ids('sl')).toEqual(['C1', 'C2'])
  const cursors = stand.requests
    .filter((r) => r.path === '/conversations.list')
    .map((r) => r.query.get('cursor'))
  expect(cursors).toEqual([null, 'p2'])
})

it("Notion: every request carries the provider's notion-version header; the cursor goes in the POST body", async () => {
  const { pages } = await connect(t, 'no', 'c1', ['pages'], { credentials: oauth })
  expect(pages!.state, pages!.error ?? '').toBe('SUCCEEDED')
  expect(await ids('no')).toEqual(['p1', 'p2'])
  const bodies = stand.requests
    .filter((r) => r.path === '/v1/search')
    .map((r) => JSON.parse(r.body) as unknown)
  expect(bodies).toEqual([{ query: '' }, { query: '', start_cursor: 'n2' }])
})

it("Salesforce: the base URL is the connection's connection_config.instance_url; without it the run names the variable", async () => {
  const created = await api(t, 'POST', '/connections', {
    provider_config_key: 'sf',
    connection_id: 'c1',
    credentials: oauth,
    connection_config: { instance_url: stand.url },
  })
  expect(created.status).toBe(201)
  const run = await waitForRun(t, await syncId(t, 'sf', 'c1', 'accounts'))
  expect(run.state, run.error ?? '').toBe('SUCCEEDED')
  expect(await ids('sf')).toEqual(['001'])
  expect(stand.requests.find((r) => r.path === '/services/data/v60.0/query')!.query.get('q')).toBe(
    'SELECT Id, Name FROM Account',
  )

  const { accounts } = await connect(t, 'sf', 'no-instance', ['accounts'], { credentials: oauth })
  expect(accounts!.state).toBe('FAILED')
  expect(accounts!.error).toContain('${connectionConfig.instance_url}')
  expect(accounts!.error).toContain('salesforce')
})

it('a 429 waits for retry-after when the call asked for retries, and is returned at once when it did not', async () => {
  const { limited: run } = await connect(t, 'rl', 'c1', ['limited'], { credentials: oauth })
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  // retries: 2 -> 429, wait 1 s, 200; no retries -> 429 once
  expect(limited.count).toBe(3)
  expect(limited.times[1]! - limited.times[0]!).toBeGreaterThanOrEqual(950)
  const logs = await listRunLogs(t.database.db.kysely, run!.id)
  expect(logs.map((l) => [l.message, l.payload])).toEqual([
    ['retried', { status: 200 }],
    ['not retried', { status: 429 }],
  ])
})
