import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { deployFolders } from '../../src/deployments/deploy.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'

/**
 * Nango's integrations API (GET|POST /integrations, GET|PATCH|DELETE /integrations/{uniqueKey})
 * through @nangohq/node, on the production app.
 */

let t: TestApp
let nango: Nango
let dir: string

const OAUTH2 = {
  type: 'OAUTH2',
  client_id: 'client-1',
  client_secret: 'secret-1',
  scopes: 'read,write',
} as const

/** A folder with one integration (`crm`, with an integration.json) and one sync. */
async function deployCrm() {
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-integrations-'))
  const files: Record<string, string> = {
    'package.json': '{"type":"module"}\n',
    'crm/integration.json': JSON.stringify({ provider: 'hubspot', base_url: 'http://127.0.0.1:1' }),
    'crm/syncs/contacts.ts': `export default { description: 'Contacts', frequency: 'every hour',
      models: { Contact: { type: 'object' } }, async exec() {} }`,
  }
  for (const [file, source] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true })
    await writeFile(path.join(dir, file), source)
  }
  await deployFolders(t.db.kysely, [dir], { source: dir, environments: ['dev'], deployedBy: 'test' })
}

beforeAll(async () => {
  t = await startTestApp({ listen: true })
  nango = new Nango({ host: t.url, secretKey: t.keys.dev })
  await deployCrm()
})
afterAll(async () => {
  await t?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** An HTTP error's status and body, from a call through @nangohq/node. */
async function failure(call: Promise<unknown>): Promise<{ status: number; body: Record<string, unknown> }> {
  const err = (await call.then(
    () => expect.fail('expected an HTTP error'),
    (e: unknown) => e,
  )) as { response?: { status: number; data: Record<string, unknown> } }
  expect(err.response).toBeDefined()
  return { status: err.response!.status, body: err.response!.data }
}

const inject = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, key: string, payload?: object) =>
  t.app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) })

const importConnection = async (pck: string, connectionId: string) => {
  const res = await inject('POST', '/connections', t.keys.dev, {
    provider_config_key: pck,
    connection_id: connectionId,
  })
  expect(res.statusCode).toBe(201)
}

async function rowOf(uniqueKey: string, envId = t.envIds.dev) {
  return t.db.kysely
    .selectFrom('integrations')
    .selectAll()
    .where('environment_id', '=', envId)
    .where('unique_key', '=', uniqueKey)
    .executeTakeFirst()
}

describe('POST /integrations', () => {
  it('creates an integration and answers with Nango’s shape, never its credentials', async () => {
    const res = await nango.createIntegration({
      unique_key: 'gh-main',
      provider: 'github',
      display_name: 'GitHub (main)',
      credentials: OAUTH2,
    })
    expect(Object.keys(res.data)).toEqual([
      'unique_key',
      'provider',
      'display_name',
      'logo',
      'forward_webhooks',
      'created_at',
      'updated_at',
    ])
    expect(res.data).toMatchObject({
      unique_key: 'gh-main',
      provider: 'github',
      display_name: 'GitHub (main)',
      logo: `${t.config.publicUrl}/images/template-logos/github.svg`,
      forward_webhooks: true,
    })
    expect(res.data.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(await rowOf('gh-main')).toMatchObject({ created_by: 'api', config: {} })
  })

  it('takes any provider name in Nango’s pattern, and shows it as the display name by default', async () => {
    const res = await nango.createIntegration({
      unique_key: 'cal:team@1',
      provider: 'google-calendar',
      forward_webhooks: false,
    })
    expect(res.data).toMatchObject({
      unique_key: 'cal:team@1',
      provider: 'google-calendar',
      display_name: 'google-calendar',
      forward_webhooks: false,
    })
    expect((await rowOf('cal:team@1'))?.credentials).toBeNull()
  })

  it('refuses a unique key the environment already has (400, path uniqueKey), not another environment’s', async () => {
    await nango.createIntegration({ unique_key: 'dup', provider: 'slack', display_name: 'first' })
    const { status, body } = await failure(nango.createIntegration({ unique_key: 'dup', provider: 'notion' }))
    expect(status).toBe(400)
    expect(body).toEqual({
      error: {
        code: 'invalid_body',
        message: 'Unique key already exists',
        errors: [{ code: 'invalid_string', message: 'Unique key already exists', path: ['uniqueKey'] }],
      },
    })
    expect(await rowOf('dup')).toMatchObject({ provider: 'slack', display_name: 'first' })
    // A deployed integration's key is taken too.
    expect((await failure(nango.createIntegration({ unique_key: 'crm', provider: 'x' }))).status).toBe(400)
    const prod = new Nango({ host: t.url, secretKey: t.keys.prod })
    expect((await prod.createIntegration({ unique_key: 'dup', provider: 'notion' })).data.provider).toBe(
      'notion',
    )
  })

  it.each([
    ['a provider outside the pattern', { unique_key: 'p1', provider: 'git hub' }, ['provider']],
    ['a unique key outside the pattern', { unique_key: 'a/b', provider: 'github' }, ['unique_key']],
    ['no provider', { unique_key: 'p2' }, ['provider']],
    ['an empty display name', { unique_key: 'p3', provider: 'github', display_name: '' }, ['display_name']],
    ['an unknown field', { unique_key: 'p4', provider: 'github', custom: { a: 'b' } }, []],
    [
      'OAuth credentials without a secret',
      { unique_key: 'p5', provider: 'github', credentials: { type: 'OAUTH2', client_id: 'x' } },
      ['credentials', 'client_secret'],
    ],
    [
      'scopes that are not a comma-separated list',
      { unique_key: 'p6', provider: 'github', credentials: { ...OAUTH2, scopes: 'a, b' } },
      ['credentials', 'scopes'],
    ],
    [
      'an unknown credentials type',
      { unique_key: 'p7', provider: 'github', credentials: { type: 'API_KEY', client_id: 'x' } },
      ['credentials'],
    ],
  ])('refuses %s with 400 invalid_body and writes nothing', async (_, body, where) => {
    const res = await inject('POST', '/integrations', t.keys.dev, body)
    expect(res.statusCode).toBe(400)
    const { error } = res.json()
    expect(error.code).toBe('invalid_body')
    if (where.length > 0) expect(error.errors.map((e: { path: string[] }) => e.path)).toContainEqual(where)
    expect(await rowOf((body as { unique_key: string }).unique_key)).toBeUndefined()
  })

  it('refuses a query string (400 invalid_query_params)', async () => {
    const res = await inject('POST', '/integrations?x=1', t.keys.dev, { unique_key: 'q', provider: 'github' })
    expect(res.statusCode).toBe(400)
    expect(res.json().error.code).toBe('invalid_query_params')
  })
})

describe('GET /integrations', () => {
  it('lists API-created and deployed integrations alike, without credentials', async () => {
    const { configs } = await nango.listIntegrations()
    const byKey = new Map(configs.map((c) => [c.unique_key, c as unknown as Record<string, unknown>]))
    expect(byKey.get('gh-main')).toMatchObject({
      provider: 'github',
      display_name: 'GitHub (main)',
      syncs: [],
    })
    expect(byKey.get('crm')).toMatchObject({
      provider: 'hubspot',
      syncs: [expect.objectContaining({ name: 'contacts', models: ['Contact'] })],
    })
    for (const config of byKey.values()) {
      expect(config).not.toHaveProperty('credentials')
      expect(JSON.stringify(config)).not.toContain('secret-1')
    }
    // Nango's order: provider, then unique key.
    const providers = configs.map((c) => c.provider)
    expect(providers).toEqual([...providers].sort((a, b) => a.localeCompare(b)))
  })
})

describe('GET /integrations/{uniqueKey}', () => {
  it('answers Nango’s shape without credentials unless asked', async () => {
    const { data } = await nango.getIntegration({ uniqueKey: 'gh-main' })
    expect(data).toMatchObject({ unique_key: 'gh-main', provider: 'github', display_name: 'GitHub (main)' })
    expect(data).not.toHaveProperty('credentials')
    expect(data).not.toHaveProperty('webhook_url')
  })

  it('includes the credentials and the webhook url when asked, with the scope', async () => {
    const withCredentials = await nango.getIntegration({ uniqueKey: 'gh-main' }, { include: ['credentials'] })
    expect(withCredentials.data.credentials).toEqual(OAUTH2)
    const withWebhook = await nango.getIntegration({ uniqueKey: 'gh-main' }, { include: ['webhook'] })
    expect(withWebhook.data).toMatchObject({ webhook_url: null })
    expect(withWebhook.data).not.toHaveProperty('credentials')
    // Both, as repeated parameters (the client itself sends only the last one of a list).
    const both = await inject('GET', '/integrations/gh-main?include=webhook&include=credentials', t.keys.dev)
    expect(both.json().data).toMatchObject({ webhook_url: null, credentials: OAUTH2 })
    // null for an integration without credentials.
    const none = await nango.getIntegration({ uniqueKey: 'cal:team@1' }, { include: ['credentials'] })
    expect(none.data.credentials).toBeNull()
  })

  it('leaves credentials out for a key without read_credentials, as Nango does', async () => {
    const readOnly = new Nango({
      host: t.url,
      secretKey: await t.keyWith(['environment:integrations:read']),
    })
    const { data } = await readOnly.getIntegration({ uniqueKey: 'gh-main' }, { include: ['credentials'] })
    expect(data).not.toHaveProperty('credentials')
    expect(JSON.stringify(data)).not.toContain('secret-1')

    const credentialsOnly = new Nango({
      host: t.url,
      secretKey: await t.keyWith(['environment:integrations:read_credentials']),
    })
    const full = await credentialsOnly.getIntegration({ uniqueKey: 'gh-main' }, { include: ['credentials'] })
    expect(full.data.credentials).toEqual(OAUTH2)
  })

  it('answers 404 not_found for an unknown key, and 400 for a bad include', async () => {
    const { status, body } = await failure(nango.getIntegration({ uniqueKey: 'nope' }))
    expect(status).toBe(404)
    expect(body).toEqual({ error: { code: 'not_found', message: 'Integration "nope" does not exist' } })
    const bad = await inject('GET', '/integrations/gh-main?include=secrets', t.keys.dev)
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error.code).toBe('invalid_query_params')
  })

  it('finds nothing of another environment', async () => {
    const prod = new Nango({ host: t.url, secretKey: t.keys.prod })
    await prod.createIntegration({ unique_key: 'prod-only', provider: 'github', credentials: OAUTH2 })
    expect((await failure(nango.getIntegration({ uniqueKey: 'prod-only' }))).status).toBe(404)
    expect((await failure(nango.deleteIntegration('prod-only'))).status).toBe(404)
    expect(await rowOf('prod-only', t.envIds.prod)).toBeDefined()
  })
})

describe('PATCH /integrations/{uniqueKey}', () => {
  it('changes what is sent and keeps the rest', async () => {
    await nango.createIntegration({ unique_key: 'patch-me', provider: 'github', credentials: OAUTH2 })
    const before = await rowOf('patch-me')
    const { data } = await nango.updateIntegration({ uniqueKey: 'patch-me' }, { display_name: 'Renamed' })
    expect(data).toMatchObject({ unique_key: 'patch-me', provider: 'github', display_name: 'Renamed' })
    expect(new Date(data.updated_at).getTime()).toBeGreaterThanOrEqual(before!.updated_at.getTime())
    const kept = await nango.getIntegration({ uniqueKey: 'patch-me' }, { include: ['credentials'] })
    expect(kept.data).toMatchObject({ forward_webhooks: true, credentials: OAUTH2 })
  })

  it('replaces the credentials whole', async () => {
    const next = { type: 'OAUTH2', client_id: 'client-2', client_secret: 'secret-2' } as const
    await nango.updateIntegration({ uniqueKey: 'patch-me' }, { credentials: next, forward_webhooks: false })
    const { data } = await nango.getIntegration({ uniqueKey: 'patch-me' }, { include: ['credentials'] })
    expect(data).toMatchObject({ forward_webhooks: false, credentials: next })
  })

  it('never touches a deployed integration’s integration.json', async () => {
    const config = (await rowOf('crm'))!.config
    expect(config).toMatchObject({ base_url: 'http://127.0.0.1:1' })
    await nango.updateIntegration({ uniqueKey: 'crm' }, { display_name: 'CRM', credentials: OAUTH2 })
    expect(await rowOf('crm')).toMatchObject({ display_name: 'CRM', config, created_by: 'deploy' })
  })

  it('renames a key nothing uses yet', async () => {
    await nango.createIntegration({ unique_key: 'old-name', provider: 'github', credentials: OAUTH2 })
    const { data } = await nango.updateIntegration({ uniqueKey: 'old-name' }, { unique_key: 'new-name' })
    expect(data.unique_key).toBe('new-name')
    expect(await rowOf('old-name')).toBeUndefined()
    const moved = await nango.getIntegration({ uniqueKey: 'new-name' }, { include: ['credentials'] })
    expect(moved.data.credentials).toEqual(OAUTH2)
  })

  it.each([
    [
      'a key another integration has',
      'new-name',
      'gh-main',
      'uniqueKey is already used by another integration',
    ],
    [
      'a key connections use',
      'with-connection',
      'free-1',
      "Can't rename an integration with active connections",
    ],
    ['a key with deployed syncs', 'crm', 'free-2', "Can't rename an integration with deployed functions"],
  ])('refuses to rename to or from %s (400 invalid_body)', async (_, from, to, message) => {
    if (from === 'with-connection') {
      await nango.createIntegration({ unique_key: from, provider: 'github' })
      await importConnection(from, 'c-1')
    }
    const { status, body } = await failure(nango.updateIntegration({ uniqueKey: from }, { unique_key: to }))
    expect(status).toBe(400)
    expect(body).toEqual({ error: { code: 'invalid_body', message } })
    expect(await rowOf(from)).toBeDefined()
  })

  it('answers 404 for an unknown key and 400 for a bad body', async () => {
    const missing = await failure(nango.updateIntegration({ uniqueKey: 'nope' }, { display_name: 'x' }))
    expect(missing).toEqual({
      status: 404,
      body: { error: { code: 'not_found', message: 'Integration "nope" does not exist' } },
    })
    const bad = await inject('PATCH', '/integrations/gh-main', t.keys.dev, { provider: 'slack' })
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error.code).toBe('invalid_body')
    expect(await rowOf('gh-main')).toMatchObject({ provider: 'github' })
  })
})

describe('DELETE /integrations/{uniqueKey}', () => {
  it('deletes an integration with its connections and deployed syncs, in one go', async () => {
    await importConnection('crm', 'crm-a')
    await importConnection('crm', 'crm-b')
    await importConnection('gh-main', 'gh-a')
    const syncsBefore = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM syncs s JOIN connections c ON c.id = s.connection_pk
      WHERE c.provider_config_key = 'crm' AND c.environment_id = ${t.envIds.dev}`.execute(t.db.kysely)
    expect(syncsBefore.rows[0]!.n).toBe(2)

    const res = await nango.deleteIntegration('crm')
    expect(res.status).toBe(200)
    expect(res.data).toEqual({ success: true })

    expect(await rowOf('crm')).toBeUndefined()
    const { connections } = await nango.listConnections()
    expect(connections.map((c) => c.connection_id).sort()).toEqual(['c-1', 'gh-a'])
    const definitions = await t.db.kysely
      .selectFrom('sync_definitions')
      .select('name')
      .where('environment_id', '=', t.envIds.dev)
      .where('integration', '=', 'crm')
      .execute()
    expect(definitions).toEqual([])
    const orphans = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM syncs s LEFT JOIN connections c ON c.id = s.connection_pk
      WHERE c.id IS NULL`.execute(t.db.kysely)
    expect(orphans.rows[0]!.n).toBe(0)
    const deployment = await t.db.kysely
      .selectFrom('deployments')
      .select(['source', 'summary'])
      .where('environment_id', '=', t.envIds.dev)
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow()
    expect(deployment).toMatchObject({
      source: 'DELETE /integrations/crm',
      summary: { integrations: ['crm'], removed: ['crm/contacts'] },
    })
  })

  it('answers 404 not_found for an unknown key', async () => {
    const { status, body } = await failure(nango.deleteIntegration('crm'))
    expect(status).toBe(404)
    expect(body).toEqual({ error: { code: 'not_found', message: 'Integration does not exist' } })
  })
})

describe('scopes', () => {
  it.each([
    ['GET', '/integrations', 'environment:integrations:list'],
    ['GET', '/integrations/gh-main', 'environment:integrations:read'],
    ['POST', '/integrations', 'environment:integrations:create'],
    ['PATCH', '/integrations/gh-main', 'environment:integrations:update'],
    ['DELETE', '/integrations/gh-main', 'environment:integrations:delete'],
  ] as const)('%s %s needs %s', async (method, url, scope) => {
    const body =
      method === 'POST' ? { unique_key: 'scoped', provider: 'github' } : method === 'PATCH' ? {} : undefined
    const other = await t.keyWith(['environment:connections:*'])
    const refused = await inject(method, url, other, body)
    expect(refused.statusCode).toBe(403)
    expect(refused.json().error.code).toBe('forbidden')
    const allowed = await inject(method, url, await t.keyWith([scope]), body)
    expect(allowed.statusCode).toBe(200)
  })
})

describe('with SYNCSTORE_ENCRYPTION_KEY', () => {
  let sealed: TestApp
  beforeAll(async () => {
    sealed = await startTestApp({ env: { SYNCSTORE_ENCRYPTION_KEY: randomBytes(32).toString('base64') } })
  })
  afterAll(() => sealed?.close())

  it('stores the credentials encrypted and answers them in plaintext', async () => {
    const secret = {
      type: 'OAUTH2',
      client_id: 'id-PLAINTEXT-5e1',
      client_secret: 'secret-PLAINTEXT-c3f',
      scopes: 'x',
    }
    const created = await sealed.app.inject({
      method: 'POST',
      url: '/integrations',
      headers: bearer(sealed.keys.dev),
      payload: { unique_key: 'sealed', provider: 'github', credentials: secret },
    })
    expect(created.statusCode).toBe(200)
    const { rows } = await sql<Record<string, unknown>>`
      SELECT * FROM integrations WHERE unique_key = 'sealed'`.execute(sealed.db.kysely)
    expect(rows).toHaveLength(1)
    const raw = JSON.stringify(rows[0])
    expect(raw).not.toContain('PLAINTEXT')
    expect(rows[0]!.credentials).toMatch(/^enc:v1:/)
    const read = await sealed.app.inject({
      url: '/integrations/sealed?include=credentials',
      headers: bearer(sealed.keys.dev),
    })
    expect(read.json().data.credentials).toEqual(secret)
  })
})
