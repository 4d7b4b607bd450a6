import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createKey } from '../../src/keys/store.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import { api, connect, type FakeApi, records, startApi } from '../runtime/harness.ts'

type Answer = { status?: number; body?: unknown; headers?: Record<string, string> }
/**
 * SYNCSTORE_PROVIDERS_FILE (a providers.yaml of the team's own: a new provider, one that aliases it,
 * and GitHub replaced) drives both a sync's requests and Nango's HTTP proxy, `ALL /proxy/*`, as
 * `@nangohq/node` calls it.
 */

let stand: FakeApi
let t: TestServer
let dir: string
let nango: Nango
let flaky = 0

const providersYaml = (base: string) => `
# Our CRM, reached at the customer's own host
standin-crm:
    display_name: Stand-in CRM
    auth_mode: API_KEY
    proxy:
        base_url: \${connectionConfig.api_url}/v2
        headers:
            x-api-key: \${apiKey}
            x-tenant: \${metadata.tenant}
        paginate:
            type: offset
            offset_name_in_request: skip
            response_path: items
standin-crm-eu:
    alias: standin-crm
    display_name: Stand-in CRM (EU)
# GitHub through our gateway, replacing the built-in entry
github:
    display_name: GitHub via gateway
    auth_mode: OAUTH2
    proxy:
        base_url: ${base}/gh
        headers:
            x-gateway: 'yes'
`

const contacts = `
  import { createSync } from 'nango'
  import * as z from 'zod'
  export default createSync({
    description: 'contacts', frequency: 'every day', autoStart: true, syncType: 'full',
    models: { Contact: z.object({ id: z.string() }) },
    async exec(nango) {
      for await (const page of nango.paginate({ endpoint: '/contacts' })) {
        await nango.batchSave(page, 'Contact')
      }
    },
  })`

beforeAll(async () => {
  stand = await startApi((req): Answer => {
    if (req.path === '/v2/contacts') {
      const skip = Number(req.query.get('skip'))
      const all = [{ id: 'k1' }, { id: 'k2' }, { id: 'k3' }]
      return { body: { items: all.slice(skip, skip + 2) } }
    }
    if (req.path === '/gh/user') {
      return { body: { login: 'octo' }, headers: { 'x-request-id': 'req-9', 'x-secret': 's' } }
    }
    if (req.path === '/gh/repos' && req.method === 'POST') {
      return { status: 201, body: { created: JSON.parse(req.body) as unknown } }
    }
    if (req.path === '/gh/flaky') {
      flaky += 1
      return flaky % 2 === 1
        ? { status: 429, headers: { 'retry-after': '1' }, body: { m: 'slow' } }
        : { body: { ok: 1 } }
    }
    return { status: 404, body: { message: 'Not Found' }, headers: { 'x-github-request-id': 'gh-1' } }
  })
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-providers-'))
  const file = path.join(dir, 'providers.yaml')
  await writeFile(file, providersYaml(stand.url))
  t = await startTestServer(
    {
      'crm/integration.json': JSON.stringify({ provider: 'standin-crm-eu' }),
      'crm/syncs/contacts.ts': contacts,
    },
    { SYNCSTORE_PROVIDERS_FILE: file },
  )
  nango = new Nango({ secretKey: t.key, host: t.url })
  expect((await api(t, 'POST', '/integrations', { unique_key: 'gh', provider: 'github' })).status).toBe(200)
  const imported = await api(t, 'POST', '/connections', {
    provider_config_key: 'gh',
    connection_id: 'c1',
    credentials: { type: 'OAUTH2', access_token: 'gho-token-1' },
  })
  expect(imported.status).toBe(201)
})
afterAll(async () => {
  await t?.close()
  await stand?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** The axios error a @nangohq/node call failed with */
async function rejection(call: Promise<unknown>) {
  try {
    await call
  } catch (err) {
    return err as { response: { status: number; data: unknown; headers: Record<string, string> } }
  }
  throw new Error('expected the call to fail')
}

const seen = (p: string) => stand.requests.filter((r) => r.path === p)

it("a sync uses the file's provider (through its alias): base URL and headers from the connection, offset paging", async () => {
  const { contacts: run } = await connect(t, 'crm', 'c1', ['contacts'], {
    credentials: { type: 'API_KEY', apiKey: 'crm-key-1' },
    metadata: { tenant: 'acme' },
    ...{ connection_config: { api_url: stand.url } },
  } as never)
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  expect([...(await records(t, 'crm', 'c1', 'Contact')).keys()].sort()).toEqual(['k1', 'k2', 'k3'])
  const calls = seen('/v2/contacts')
  expect(calls.map((r) => r.query.get('skip'))).toEqual(['0', '2', '3'])
  expect(calls[0]!.headers['x-api-key']).toBe('crm-key-1')
  expect(calls[0]!.headers['x-tenant']).toBe('acme')
  // The provider sends the key its own way: no Authorization header besides
  expect(calls[0]!.headers.authorization).toBeUndefined()
})

it('GET /proxy through @nangohq/node: path, query and Nango-Proxy-* headers forwarded, with the credentials', async () => {
  const res = await nango.get({
    endpoint: '/user',
    providerConfigKey: 'gh',
    connectionId: 'c1',
    params: { page: '2' },
    headers: { 'X-Trace': 't-1' },
  })
  expect(res.status).toBe(200)
  expect(res.data).toEqual({ login: 'octo' })
  // Nango answers a success with the content type and request ids only
  expect(res.headers['x-request-id']).toBe('req-9')
  expect(res.headers['x-secret']).toBeUndefined()
  const [call] = seen('/gh/user')
  expect(call!.query.get('page')).toBe('2')
  expect(call!.headers.authorization).toBe('Bearer gho-token-1')
  expect(call!.headers['x-gateway']).toBe('yes')
  expect(call!.headers['x-trace']).toBe('t-1')
})

it("POST /proxy sends the body on; the API's error answer comes back as it was", async () => {
  const created = await nango.post({
    endpoint: '/repos',
    providerConfigKey: 'gh',
    connectionId: 'c1',
    data: { name: 'new-repo' },
  })
  expect(created.status).toBe(201)
  expect(created.data).toEqual({ created: { name: 'new-repo' } })

  const failed = await rejection(
    nango.get({ endpoint: '/nothing', providerConfigKey: 'gh', connectionId: 'c1' }),
  )
  expect(failed.response.status).toBe(404)
  expect(failed.response.data).toEqual({ message: 'Not Found' })
  expect(failed.response.headers['x-github-request-id']).toBe('gh-1')
})

it('Retries: a 429 waits for retry-after and is tried again; without it the 429 is the answer', async () => {
  const started = Date.now()
  const ok = await nango.get({ endpoint: '/flaky', providerConfigKey: 'gh', connectionId: 'c1', retries: 2 })
  expect(ok.data).toEqual({ ok: 1 })
  expect(Date.now() - started).toBeGreaterThanOrEqual(950)
  expect(flaky).toBe(2)
  const limited = await rejection(
    nango.get({ endpoint: '/flaky', providerConfigKey: 'gh', connectionId: 'c1' }),
  )
  expect(limited.response.status).toBe(429)
  expect(flaky).toBe(3)
})

it("answers Nango's errors: bad headers, unknown integration or connection, a template the connection cannot fill", async () => {
  const raw = (headers: Record<string, string>) =>
    fetch(`${t.url}/proxy/user`, { headers: { authorization: `Bearer ${t.key}`, ...headers } }).then(
      async (r) => ({
        status: r.status,
        body: (await r.json()) as { error: { code: string; message: string } },
      }),
    )
  const noHeaders = await raw({})
  expect(noHeaders.status).toBe(400)
  expect(noHeaders.body.error.code).toBe('invalid_headers')
  expect(noHeaders.body.error.message).toContain('connection-id')

  const badRetries = await raw({ 'provider-config-key': 'gh', 'connection-id': 'c1', retries: 'many' })
  expect(badRetries.body.error.code).toBe('invalid_headers')

  const unknown = await raw({ 'provider-config-key': 'nope', 'connection-id': 'c1' })
  expect(unknown).toMatchObject({ status: 404, body: { error: { code: 'unknown_provider_config' } } })

  const noConnection = await raw({ 'provider-config-key': 'gh', 'connection-id': 'ghost' })
  expect(noConnection).toMatchObject({ status: 400, body: { error: { code: 'unknown_connection' } } })

  // A crm connection without connection_config.api_url: the base URL cannot be built
  await api(t, 'POST', '/connections', {
    provider_config_key: 'crm',
    connection_id: 'bare',
    credentials: { type: 'API_KEY', apiKey: 'k' },
  })
  const missing = await raw({ 'provider-config-key': 'crm', 'connection-id': 'bare' })
  expect(missing.status).toBe(400)
  expect(missing.body.error.code).toBe('missing_template_variable')
  expect(missing.body.error.message).toContain('${connectionConfig.api_url}')

  // The proxy scope is needed
  const { secret } = await createKey(t.database.db.kysely, t.envId, ['environment:records:read'])
  const forbidden = await fetch(`${t.url}/proxy/user`, {
    headers: { authorization: `Bearer ${secret}`, 'provider-config-key': 'gh', 'connection-id': 'c1' },
  })
  expect(forbidden.status).toBe(403)
})
