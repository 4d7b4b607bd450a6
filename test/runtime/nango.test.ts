import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import {
  api,
  connect,
  type FakeApi,
  integrationJson,
  records,
  startApi,
  status,
  syncId,
  trigger,
  waitForRun,
} from './harness.ts'

/**
 * The four kinds of sync users write, against a small external API on loopback: a full sync that
 * pages, an incremental one with a checkpoint, one with delete tracking, and a variant that reads
 * its parameters from connection metadata.
 */

// The external API's data, changed by the tests between runs.
const tickets = Array.from({ length: 25 }, (_, i) => ({ id: `T${i + 1}`, title: `ticket ${i + 1}` }))
const contacts = [
  { id: 'c1', name: 'Ada', updated_at: '2024-01-01T00:00:00.000Z' },
  { id: 'c2', name: 'Grace', updated_at: '2024-01-02T00:00:00.000Z' },
]
let users = [
  { id: 'u1', email: 'a@example.com' },
  { id: 'u2', email: 'b@example.com' },
  { id: 'u3', email: 'c@example.com' },
]
const repos: Record<string, { id: string; name: string }[]> = {
  acme: [
    { id: 'r1', name: 'acme/api' },
    { id: 'r2', name: 'acme/web' },
  ],
  globex: [{ id: 'r9', name: 'globex/plan' }],
}

const PAGE = 10

const model = (required: string[]) =>
  JSON.stringify({
    type: 'object',
    properties: Object.fromEntries(required.map((k) => [k, { type: 'string' }])),
    required,
  })

const files = (base: string): Record<string, string> => ({
  'tracker/integration.json': integrationJson(base),
  'tracker/syncs/tickets.ts': `
    import { createSync } from 'syncstore'
    export default createSync({
      description: 'Every ticket, page by page', frequency: 'every hour',
      models: { Ticket: ${model(['id', 'title'])} },
      async exec(nango) {
        let page = 1
        while (page) {
          const res = await nango.get({ endpoint: '/tickets', params: { page, per_page: ${PAGE} } })
          await nango.batchSave(res.data.items, 'Ticket')
          page = res.data.next_page
        }
      },
    })`,
  'crm/integration.json': integrationJson(base),
  'crm/syncs/contacts.ts': `
    import { createSync, type NangoSync } from 'syncstore'
    interface Contact { id: string; name: string; updated_at: string }
    export default createSync({
      description: 'Contacts changed since the last run', frequency: 'every hour', syncType: 'incremental',
      models: { Contact: ${model(['id', 'name', 'updated_at'])} },
      async exec(nango: NangoSync) {
        const checkpoint = await nango.getCheckpoint<{ updatedAfter: string }>()
        await nango.log('starting', { lastSyncDate: nango.lastSyncDate?.toISOString() ?? null, checkpoint })
        const res = await nango.get<{ items: Contact[] }>({
          endpoint: '/contacts',
          params: { updated_after: checkpoint?.updatedAfter },
        })
        await nango.batchSave(res.data.items, 'Contact')
        const last = res.data.items.at(-1)
        if (last) await nango.saveCheckpoint({ updatedAfter: new Date(last.updated_at) })
      },
    })`,
  'directory/integration.json': integrationJson(base),
  'directory/syncs/users.ts': `
    import { createSync } from 'syncstore'
    export default createSync({
      description: 'Users, with deletions detected', frequency: 'every hour',
      models: { User: ${model(['id', 'email'])} },
      async exec(nango) {
        await nango.trackDeletesStart('User')
        const res = await nango.get({ endpoint: '/users' })
        await nango.batchSave(res.data, 'User')
        const { deletedKeys } = await nango.trackDeletesEnd('User')
        await nango.log('deleted', { deletedKeys })
      },
    })`,
  'forge/integration.json': integrationJson(base),
  'forge/syncs/repos.ts': `
    import { createSync } from 'syncstore'
    export default createSync({
      description: "An organisation's repositories; each variant names its organisation in the metadata",
      frequency: 'every hour',
      models: { Repo: ${model(['id', 'name'])} },
      async exec(nango) {
        const metadata = await nango.getMetadata<Record<string, { org: string }>>()
        const { org } = metadata[nango.variant]
        const res = await nango.get({ endpoint: '/orgs/' + org + '/repos' })
        await nango.batchSave(res.data, 'Repo')
      },
    })`,
})

let external: FakeApi
let t: TestServer

beforeAll(async () => {
  external = await startApi(({ path, query }) => {
    if (path === '/tickets') {
      const page = Number(query.get('page'))
      const size = Number(query.get('per_page'))
      const items = tickets.slice((page - 1) * size, page * size)
      return { body: { items, next_page: page * size < tickets.length ? page + 1 : null } }
    }
    if (path === '/contacts') {
      const after = query.get('updated_after')
      return { body: { items: contacts.filter((c) => !after || c.updated_at > after) } }
    }
    if (path === '/users') return { body: users }
    const org = /^\/orgs\/(\w+)\/repos$/.exec(path)?.[1]
    if (org && repos[org]) return { body: repos[org] }
    return { status: 404, body: { error: 'not found' } }
  })
  t = await startTestServer(files(external.url))
})
afterAll(async () => {
  await t?.close()
  await external?.close()
})

const requestsTo = (path: string) => external.requests.filter((r) => r.path === path)

it('a full sync pages through the API and saves every page', async () => {
  const { tickets: run } = await connect(t, 'tracker', 'acme', ['tickets'])
  expect(run!.state, run!.error ?? '').toBe('SUCCEEDED')
  expect(requestsTo('/tickets').map((r) => r.query.get('page'))).toEqual(['1', '2', '3'])
  const saved = await records(t, 'tracker', 'acme', 'Ticket')
  expect([...saved.keys()].sort()).toEqual(tickets.map((x) => x.id).sort())
  expect(saved.get('T7')).toMatchObject({ title: 'ticket 7', _nango_metadata: { last_action: 'ADDED' } })
  expect(await status(t, 'tracker', 'acme', 'tickets')).toMatchObject({
    status: 'SUCCESS',
    recordCount: { Ticket: 25 },
    latestResult: { Ticket: { added: 25, updated: 0, deleted: 0 } },
  })

  // A second full run: an edited ticket counts as updated, the rest are unchanged.
  tickets[0]!.title = 'renamed'
  const second = await trigger(t, 'tracker', 'acme', 'tickets')
  expect(second.result).toEqual({ Ticket: { added: 0, updated: 1, deleted: 0 } })
  expect((await records(t, 'tracker', 'acme', 'Ticket')).get('T1')).toMatchObject({
    title: 'renamed',
    _nango_metadata: { last_action: 'UPDATED' },
  })

  // reset + emptyCache: the records are dropped before exec, so this run adds every one again.
  const emptied = await trigger(t, 'tracker', 'acme', 'tickets', 'base', { reset: true, emptyCache: true })
  expect(emptied.result).toEqual({ Ticket: { added: 25, updated: 0, deleted: 0 } })
  expect((await records(t, 'tracker', 'acme', 'Ticket')).get('T1')!._nango_metadata.last_action).toBe('ADDED')
})

it('an incremental sync resumes from its checkpoint, with lastSyncDate set after the first run', async () => {
  const { contacts: first } = await connect(t, 'crm', 'acme', ['contacts'])
  expect(first!.state, first!.error ?? '').toBe('SUCCEEDED')
  expect(first!.type).toBe('full')
  const firstLog = (await listRunLogs(t.database.db.kysely, first!.id))[0]!
  expect(firstLog.payload).toEqual({ lastSyncDate: null, checkpoint: null })
  expect(requestsTo('/contacts')[0]!.query.has('updated_after')).toBe(false)
  expect((await status(t, 'crm', 'acme', 'contacts')).checkpoint).toEqual({
    updatedAfter: '2024-01-02T00:00:00.000Z',
  })

  contacts.push({ id: 'c3', name: 'Linus', updated_at: '2024-01-03T00:00:00.000Z' })
  const second = await trigger(t, 'crm', 'acme', 'contacts')
  expect(second.state, second.error ?? '').toBe('SUCCEEDED')
  expect(second.type).toBe('incremental')
  const secondLog = (await listRunLogs(t.database.db.kysely, second.id))[0]!
  expect(secondLog.payload).toEqual({
    lastSyncDate: first!.started_at!.toISOString(),
    checkpoint: { updatedAfter: '2024-01-02T00:00:00.000Z' },
  })
  expect(requestsTo('/contacts')[1]!.query.get('updated_after')).toBe('2024-01-02T00:00:00.000Z')
  expect(second.result).toEqual({ Contact: { added: 1, updated: 0, deleted: 0 } })
  expect([...(await records(t, 'crm', 'acme', 'Contact')).keys()].sort()).toEqual(['c1', 'c2', 'c3'])
  const s = await status(t, 'crm', 'acme', 'contacts')
  expect(s).toMatchObject({ type: 'INCREMENTAL', checkpoint: { updatedAfter: '2024-01-03T00:00:00.000Z' } })

  // reset: no checkpoint and no lastSyncDate; the run is full again and fetches everything.
  const reset = await trigger(t, 'crm', 'acme', 'contacts', 'base', { reset: true })
  expect(reset.type).toBe('full')
  expect((await listRunLogs(t.database.db.kysely, reset.id))[0]!.payload).toEqual({
    lastSyncDate: null,
    checkpoint: null,
  })
  expect(requestsTo('/contacts')[2]!.query.has('updated_after')).toBe(false)
})

it('a sync with delete tracking marks records that vanished from the API as DELETED', async () => {
  const { users: first } = await connect(t, 'directory', 'acme', ['users'])
  expect(first!.result).toEqual({ User: { added: 3, updated: 0, deleted: 0 } })

  users = users.filter((u) => u.id !== 'u2')
  const second = await trigger(t, 'directory', 'acme', 'users')
  expect(second.state, second.error ?? '').toBe('SUCCEEDED')
  expect(second.result).toEqual({ User: { added: 0, updated: 0, deleted: 1 } })
  expect((await listRunLogs(t.database.db.kysely, second.id))[0]!.payload).toEqual({ deletedKeys: ['u2'] })
  const stored = await records(t, 'directory', 'acme', 'User')
  expect(stored.get('u2')!._nango_metadata).toMatchObject({ last_action: 'DELETED' })
  expect(stored.get('u2')!._nango_metadata.deleted_at).not.toBeNull()
  expect(stored.get('u1')!._nango_metadata).toMatchObject({ last_action: 'ADDED', deleted_at: null })
  expect((await status(t, 'directory', 'acme', 'users')).recordCount).toEqual({ User: 2 })

  // Back in the API: added again.
  users.push({ id: 'u2', email: 'b@example.com' })
  expect((await trigger(t, 'directory', 'acme', 'users')).result).toEqual({
    User: { added: 1, updated: 0, deleted: 0 },
  })
})

it('a variant reads its parameters from the metadata and saves into its own records', async () => {
  const metadata = { base: { org: 'acme' }, globex: { org: 'globex' } }
  const { repos: base } = await connect(t, 'forge', 'acme', ['repos'], { metadata })
  expect(base!.state, base!.error ?? '').toBe('SUCCEEDED')

  const created = await api(t, 'POST', '/sync/repos/variant/globex', {
    provider_config_key: 'forge',
    connection_id: 'acme',
  })
  expect(created.status).toBe(200)
  const variantRun = await waitForRun(t, await syncId(t, 'forge', 'acme', 'repos', 'globex'))
  expect(variantRun.state, variantRun.error ?? '').toBe('SUCCEEDED')
  expect(requestsTo('/orgs/globex/repos')).toHaveLength(1)

  expect([...(await records(t, 'forge', 'acme', 'Repo')).keys()].sort()).toEqual(['r1', 'r2'])
  const own = await records(t, 'forge', 'acme', 'Repo', 'globex')
  expect([...own.values()].map((r) => r.name)).toEqual(['globex/plan'])
  expect(await status(t, 'forge', 'acme', 'repos', 'globex')).toMatchObject({
    variant: 'globex',
    status: 'SUCCESS',
    recordCount: { Repo: 1 },
  })
})
