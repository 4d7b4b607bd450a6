import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { deployFolders } from '../../src/deployments/deploy.ts'
import { readBundle } from '../../src/deployments/store.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createKey } from '../../src/keys/store.ts'
import {
  api,
  type JsonBody,
  startTestServer,
  syncStatusOf,
  type TestServer,
  waitForStatus,
} from '../helpers/server.ts'

/**
 * Nango's functions API (GET|DELETE /integrations/{uniqueKey}/functions[/{name}[/code]]) through
 * @nangohq/node, on the whole server, after deploying a folder with deployFolders.
 */

const CONTACT = { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] }
const DEAL = { type: 'object', properties: { id: { type: 'string' }, amount: { type: 'number' } } }

const FILES: Record<string, string> = {
  'package.json': '{"type":"module"}\n',
  'crm/syncs/contacts.ts': `
    import { createSync } from 'syncstore'
    export default createSync({
      description: 'Contacts', frequency: 'every hour',
      models: { Contact: ${JSON.stringify(CONTACT)} },
      async exec(nango) { await nango.batchSave([{ id: 'a' }, { id: 'b' }], 'Contact') },
    })`,
  'crm/syncs/deals.ts': `
    export default {
      description: 'Deals', frequency: 'every day', autoStart: false, trackDeletes: true,
      version: '2.0.0', scopes: ['deals.read'],
      endpoints: [{ method: 'GET', path: '/deals' }], webhookSubscriptions: ['deal.updated'],
      models: { Deal: ${JSON.stringify(DEAL)} },
      async exec() {},
    }`,
  // "_" in its name: a search for "_" must match it alone (LIKE's wildcard is escaped).
  'crm/syncs/notes_export.ts': `
    export default {
      description: 'Notes', frequency: '2h', autoStart: false,
      models: { Note: {}, NoteAuthor: {} },
      async exec() {},
    }`,
  'other/syncs/things.ts': `export default { description: 'Things', frequency: '2h', autoStart: false, models: { Thing: {} }, async exec() {} }`,
}

let t: TestServer
let nango: Nango
let dir: string
const db = () => t.database.db.kysely

async function deploy() {
  await deployFolders(db(), [dir], { source: dir, environments: ['dev'], deployedBy: 'test' })
}

beforeAll(async () => {
  t = await startTestServer({})
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-functions-'))
  for (const [file, source] of Object.entries(FILES)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true })
    await writeFile(path.join(dir, file), source)
  }
  await deploy()
  nango = new Nango({ host: t.url, secretKey: t.key })
})
afterAll(async () => {
  await t?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** What the database says was deployed, by name: the id and deployment time the API must show. */
async function deployed(name: string) {
  const row = await db()
    .selectFrom('sync_definitions')
    .select(['id', 'deployed_at', 'bundle_hash'])
    .where('environment_id', '=', t.envId)
    .where('integration', '=', 'crm')
    .where('name', '=', name)
    .executeTakeFirstOrThrow()
  return { id: Number(row.id), last_deployed: row.deployed_at.toISOString(), bundleHash: row.bundle_hash }
}

async function expected(name: 'contacts' | 'deals' | 'notes_export') {
  const { id, last_deployed } = await deployed(name)
  const meta = { id, enabled: true, last_deployed, source: 'repo' }
  switch (name) {
    case 'contacts':
      return {
        name,
        description: 'Contacts',
        type: 'sync',
        returns: ['Contact'],
        json_schema: { definitions: { Contact: CONTACT } },
        runs: 'every hour',
        auto_start: true,
        track_deletes: false,
        ...meta,
      }
    case 'deals':
      return {
        name,
        description: 'Deals',
        scopes: ['deals.read'],
        type: 'sync',
        returns: ['Deal'],
        json_schema: { definitions: { Deal: DEAL } },
        runs: 'every day',
        auto_start: false,
        track_deletes: true,
        ...meta,
        // beyond Nango's listing: the declared fields syncstore keeps
        version: '2.0.0',
        endpoints: [{ method: 'GET', path: '/deals' }],
        webhook_subscriptions: ['deal.updated'],
      }
    case 'notes_export':
      return {
        name,
        description: 'Notes',
        type: 'sync',
        returns: ['Note', 'NoteAuthor'],
        json_schema: { definitions: { Note: {}, NoteAuthor: {} } },
        runs: '2h',
        auto_start: false,
        track_deletes: false,
        ...meta,
      }
  }
}

/** The HTTP error a @nangohq/node call failed with. */
async function failure(call: Promise<unknown>): Promise<{ status: number; body: JsonBody }> {
  const error = (await call.then(
    () => {
      throw new Error('expected the call to fail')
    },
    (e: unknown) => e,
  )) as { response?: { status: number; data: unknown } }
  if (!error.response) throw error as Error
  return { status: error.response.status, body: error.response.data }
}

const notFound = (message: string) => ({ status: 404, body: { error: { code: 'not_found', message } } })

describe('GET /integrations/{uniqueKey}/functions', () => {
  it("lists the integration's deployed syncs by name, in Nango's shape", async () => {
    expect(await nango.listFunctions({ uniqueKey: 'crm' })).toEqual({
      data: [await expected('contacts'), await expected('deals'), await expected('notes_export')],
      pagination: { total: 3, page: 0, limit: 20 },
    })
    const other = await nango.listFunctions({ uniqueKey: 'other' })
    expect(other.data.map((f) => f.name)).toEqual(['things'])
  })

  it('filters by type and by part of the name, and pages', async () => {
    const names = async (query: Parameters<Nango['listFunctions']>[1]) => {
      const { data, pagination } = await nango.listFunctions({ uniqueKey: 'crm' }, query)
      return { names: data.map((f) => f.name), pagination }
    }
    expect(await names({ type: 'sync', search: ' DEAL ' })).toEqual({
      names: ['deals'],
      pagination: { total: 1, page: 0, limit: 20 },
    })
    expect((await names({ search: '_' })).names).toEqual(['notes_export'])
    expect((await names({ search: '%' })).names).toEqual([])
    expect(await names({ type: 'action' })).toEqual({
      names: [],
      pagination: { total: 0, page: 0, limit: 20 },
    })
    expect(await names({ type: 'on-event' })).toEqual({
      names: [],
      pagination: { total: 0, page: 0, limit: 20 },
    })
    expect(await names({ page: 1, limit: 2 })).toEqual({
      names: ['notes_export'],
      pagination: { total: 3, page: 1, limit: 2 },
    })
    // Past the end: nothing, and the total still counts every match.
    expect(await names({ page: 5, limit: 2 })).toEqual({
      names: [],
      pagination: { total: 3, page: 5, limit: 2 },
    })
  })

  it('answers 404 for an unknown integration, and 400 for a bad query', async () => {
    expect(await failure(nango.listFunctions({ uniqueKey: 'nope' }))).toEqual(
      notFound('Integration does not exist'),
    )
    for (const query of ['limit=0', 'limit=101', 'page=-1', 'page=x', 'type=job', 'search=%20', 'env=dev']) {
      const res = await api(t, 'GET', `/integrations/crm/functions?${query}`)
      expect([query, res.status, res.body.error.code]).toEqual([query, 400, 'invalid_query_params'])
    }
    const bad = await api(t, 'GET', `/integrations/${encodeURIComponent('bad/key')}/functions`)
    expect([bad.status, bad.body.error.code]).toEqual([400, 'invalid_uri_params'])
  })
})

describe('GET /integrations/{uniqueKey}/functions/{name}', () => {
  it('answers one function under data', async () => {
    expect(await nango.getFunction({ uniqueKey: 'crm', name: 'deals' })).toEqual({
      data: await expected('deals'),
    })
    expect(await nango.getFunction({ uniqueKey: 'crm', name: 'deals' }, { type: 'sync' })).toEqual({
      data: await expected('deals'),
    })
  })

  it('answers 404 for an unknown integration or function, or another type', async () => {
    expect(await failure(nango.getFunction({ uniqueKey: 'nope', name: 'deals' }))).toEqual(
      notFound('Integration does not exist'),
    )
    expect(await failure(nango.getFunction({ uniqueKey: 'crm', name: 'things' }))).toEqual(
      notFound('Function does not exist'),
    )
    expect(await failure(nango.getFunction({ uniqueKey: 'crm', name: 'deals' }, { type: 'action' }))).toEqual(
      notFound('Function does not exist'),
    )
    const res = await api(t, 'GET', '/integrations/crm/functions/deals?search=x')
    expect([res.status, res.body.error.code]).toEqual([400, 'invalid_query_params'])
  })
})

describe('GET /integrations/{uniqueKey}/functions/{name}/code', () => {
  it('answers the source file deployed, as Nango does (not the bundle that runs)', async () => {
    const code = FILES['crm/syncs/contacts.ts']
    expect(await readBundle(db(), (await deployed('contacts')).bundleHash)).not.toBe(code)
    expect(await nango.getFunctionCode({ uniqueKey: 'crm', name: 'contacts' })).toEqual({
      type: 'sync',
      code,
    })
    expect(await nango.getFunctionCode({ uniqueKey: 'crm', name: 'contacts' }, { type: 'sync' })).toEqual({
      type: 'sync',
      code,
    })
  })

  it("answers 404 with getCode's own messages", async () => {
    expect(await failure(nango.getFunctionCode({ uniqueKey: 'nope', name: 'contacts' }))).toEqual(
      notFound("Integration 'nope' not found"),
    )
    expect(await failure(nango.getFunctionCode({ uniqueKey: 'crm', name: 'missing' }))).toEqual(
      notFound("Function 'missing' not found for integration 'crm'"),
    )
    expect(
      await failure(nango.getFunctionCode({ uniqueKey: 'crm', name: 'contacts' }, { type: 'action' })),
    ).toEqual(notFound("Function 'contacts' not found for integration 'crm'"))
  })
})

describe('scopes and environments', () => {
  it("needs Nango's functions scopes", async () => {
    const readOnly = new Nango({
      host: t.url,
      secretKey: (await createKey(db(), t.envId, ['environment:functions:read'])).secret,
    })
    expect(await failure(readOnly.listFunctions({ uniqueKey: 'crm' }))).toEqual({
      status: 403,
      body: {
        error: { code: 'forbidden', message: 'Insufficient scope. Required: environment:functions:list' },
      },
    })
    expect((await readOnly.getFunction({ uniqueKey: 'crm', name: 'deals' })).data.name).toBe('deals')
    expect((await readOnly.getFunctionCode({ uniqueKey: 'crm', name: 'deals' })).type).toBe('sync')
    expect(
      await failure(readOnly.deleteFunction({ uniqueKey: 'crm', name: 'deals' }, { type: 'sync' })),
    ).toEqual({
      status: 403,
      body: {
        error: { code: 'forbidden', message: 'Insufficient scope. Required: environment:functions:delete' },
      },
    })
    const records = new Nango({
      host: t.url,
      secretKey: (await createKey(db(), t.envId, ['environment:records:read'])).secret,
    })
    expect((await failure(records.getFunctionCode({ uniqueKey: 'crm', name: 'deals' }))).status).toBe(403)
    const functions = new Nango({
      host: t.url,
      secretKey: (await createKey(db(), t.envId, ['environment:functions:*'])).secret,
    })
    expect((await functions.listFunctions({ uniqueKey: 'crm' })).pagination.total).toBe(3)
  })

  it("sees only the key's environment", async () => {
    const prod = await ensureEnvironment(db(), 'prod')
    const prodNango = new Nango({
      host: t.url,
      secretKey: (await createKey(db(), prod.id, ['environment:*'])).secret,
    })
    expect(await failure(prodNango.listFunctions({ uniqueKey: 'crm' }))).toEqual(
      notFound('Integration does not exist'),
    )
    expect(
      await failure(prodNango.deleteFunction({ uniqueKey: 'crm', name: 'deals' }, { type: 'sync' })),
    ).toEqual(notFound('Integration does not exist'))
  })
})

describe('DELETE /integrations/{uniqueKey}/functions/{name}', () => {
  const contacts = { pck: 'crm', connectionId: 'c1', name: 'contacts' }

  it('answers 400 without a type, 404 for an unknown integration or function; nothing changes', async () => {
    const before = await db().selectFrom('deployments').select('id').execute()
    const res = await api(t, 'DELETE', '/integrations/crm/functions/deals')
    expect([res.status, res.body.error.code]).toEqual([400, 'invalid_query_params'])
    const onEvent = await api(t, 'DELETE', '/integrations/crm/functions/deals?type=on-event')
    expect([onEvent.status, onEvent.body.error.code]).toEqual([400, 'invalid_query_params'])
    expect(
      await failure(nango.deleteFunction({ uniqueKey: 'nope', name: 'deals' }, { type: 'sync' })),
    ).toEqual(notFound('Integration does not exist'))
    expect(
      await failure(nango.deleteFunction({ uniqueKey: 'crm', name: 'missing' }, { type: 'sync' })),
    ).toEqual(notFound('Function does not exist'))
    expect(
      await failure(nango.deleteFunction({ uniqueKey: 'crm', name: 'deals' }, { type: 'action' })),
    ).toEqual(notFound('Function does not exist'))
    expect(await db().selectFrom('deployments').select('id').execute()).toEqual(before)
    expect((await nango.getFunction({ uniqueKey: 'crm', name: 'deals' })).data.name).toBe('deals')
  })

  it('removes the sync from the deployment: its schedules stop, its records stay', async () => {
    const created = await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: 'c1' })
    expect(created.status).toBe(201)
    await waitForStatus(t, contacts, (s) => s.status === 'SUCCESS' && s.recordCount.Contact === 2)

    expect(await nango.deleteFunction({ uniqueKey: 'crm', name: 'contacts' }, { type: 'sync' })).toEqual({
      data: { success: true },
    })

    expect((await nango.listFunctions({ uniqueKey: 'crm' })).data.map((f) => f.name)).toEqual([
      'deals',
      'notes_export',
    ])
    expect(await failure(nango.getFunction({ uniqueKey: 'crm', name: 'contacts' }))).toEqual(
      notFound('Function does not exist'),
    )
    const status = await syncStatusOf(t, 'crm', 'c1', 'contacts')
    expect(status).toMatchObject({
      status: 'STOPPED',
      nextScheduledSyncAt: null,
      recordCount: { Contact: 2 },
    })
    const schedules = await db()
      .selectFrom('schedules as x')
      .innerJoin('syncs as s', 's.id', 'x.sync_id')
      .select(['s.name', 'x.state'])
      .where('s.connection_pk', '=', await connectionPk('c1'))
      .orderBy('s.name')
      .execute()
    expect(schedules).toEqual([
      { name: 'contacts', state: 'DELETED' },
      { name: 'deals', state: 'PAUSED' },
      { name: 'notes_export', state: 'PAUSED' },
    ])
    const records = await nango.listRecords({
      providerConfigKey: 'crm',
      connectionId: 'c1',
      model: 'Contact',
    })
    expect(records.records.map((r) => r.id).sort()).toEqual(['a', 'b'])

    const deployment = await db()
      .selectFrom('deployments')
      .select(['deployed_by', 'source', 'summary'])
      .where('environment_id', '=', t.envId)
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow()
    expect(deployment).toEqual({
      deployed_by: expect.stringMatching(/^api key /),
      source: 'DELETE /integrations/crm/functions/contacts',
      summary: { integrations: [], added: [], changed: [], removed: ['crm/contacts'], refused: [] },
    })

    expect(
      await failure(nango.deleteFunction({ uniqueKey: 'crm', name: 'contacts' }, { type: 'sync' })),
    ).toEqual(notFound('Function does not exist'))
  })

  it('a deployment with the sync brings it back', async () => {
    await deploy()
    expect((await nango.getFunction({ uniqueKey: 'crm', name: 'contacts' })).data.name).toBe('contacts')
    await waitForStatus(t, contacts, (s) => s.status === 'SUCCESS' && s.nextScheduledSyncAt !== null)
  })
})

async function connectionPk(connectionId: string): Promise<number> {
  const row = await db()
    .selectFrom('connections')
    .select('id')
    .where('environment_id', '=', t.envId)
    .where('connection_id', '=', connectionId)
    .executeTakeFirstOrThrow()
  return row.id
}
