import { createHash, randomUUID } from 'node:crypto'

import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { listDeliveries, setWebhook } from '../../src/webhooks/store.ts'
import { startTestServer, type TestServer, waitFor } from '../helpers/server.ts'
import {
  api,
  connect,
  type FakeApi,
  integrationJson,
  type RunRow,
  startApi,
  syncId,
  trigger,
  waitForRun,
} from '../runtime/harness.ts'
import { type Receiver, sortedJson, startReceiver } from './receiver.ts'

/**
 * Sync webhooks end to end: a run that changed records sends one signed POST per changed model,
 * in Nango's body and signature, which @nangohq/node verifies; a run that changed nothing sends none.
 */

const SECRET = 'whsec-test-0123456789abcdef'

const data = {
  contacts: [
    { id: 'c1', name: 'Ada' },
    { id: 'c2', name: 'Grace' },
  ],
  companies: [{ id: 'k1', name: 'Analytical Engines Ltd' }],
  deleted: [] as string[],
}

const SYNC = `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'CRM export', frequency: 'every hour', syncType: 'incremental',
    models: {
      Contact: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' } }, required: ['id'] },
      Company: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' } }, required: ['id'] },
      Deal: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
    },
    async exec(nango) {
      const { data } = await nango.get({ endpoint: '/export' })
      await nango.batchSave(data.contacts, 'Contact')
      await nango.batchSave(data.companies, 'Company')
      if (data.deleted.length > 0) await nango.batchDelete(data.deleted.map((id) => ({ id })), 'Contact')
    },
  })`

let external: FakeApi
let receiver: Receiver
let t: TestServer
let first: RunRow

beforeAll(async () => {
  receiver = await startReceiver()
  external = await startApi(() => ({ body: data }))
  t = await startTestServer({
    'crm/integration.json': integrationJson(external.url),
    'crm/syncs/contacts.ts': SYNC,
  })
  await setWebhook(t.database.db.kysely, t.sealer, t.envId, receiver.url, SECRET)
  first = (await connect(t, 'crm', 'c1', ['contacts'])).contacts!
})
afterAll(async () => {
  await t?.close()
  await external?.close()
  await receiver?.close()
})

type Body = Record<string, unknown> & { model: string; responseResults: Record<string, number> }
const bodies = (from = 0) =>
  receiver.received
    .slice(from)
    .map((r) => JSON.parse(r.body) as Body)
    .sort((a, b) => a.model.localeCompare(b.model))
const received = (count: number) =>
  waitFor(`${count} webhooks at the receiver`, () => receiver.received.length >= count, { timeoutMs: 20_000 })

it("after a run that changed records, one POST per changed model with Nango's body", async () => {
  expect(first.state, first.error ?? '').toBe('SUCCEEDED')
  await received(2)
  const startedAt = first.started_at!.toISOString()
  const common = {
    from: 'nango',
    type: 'sync',
    connectionId: 'c1',
    providerConfigKey: 'crm',
    syncName: 'contacts',
    syncVariant: 'base',
    success: true,
    modifiedAfter: startedAt,
    queryTimeStamp: startedAt,
    syncType: 'INITIAL',
  }
  // Deal was not touched: no webhook for it.
  expect(bodies()).toEqual([
    { ...common, model: 'Company', responseResults: { added: 1, updated: 0, deleted: 0 } },
    { ...common, model: 'Contact', responseResults: { added: 2, updated: 0, deleted: 0 } },
  ])
  for (const { body, headers } of receiver.received) {
    // Serialised with sorted keys and no whitespace, as Nango's stable stringify writes it.
    expect(body).toBe(sortedJson(JSON.parse(body)))
    expect(headers['content-type']).toBe('application/json')
  }
  // What a user follows up with: the records modified since modifiedAfter.
  const res = await fetch(`${t.url}/records?model=Contact&modified_after=${encodeURIComponent(startedAt)}`, {
    headers: { authorization: `Bearer ${t.key}`, 'provider-config-key': 'crm', 'connection-id': 'c1' },
  })
  expect(((await res.json()) as { records: unknown[] }).records).toHaveLength(2)
})

it('is signed so that @nangohq/node verifyIncomingWebhookRequest accepts it, and rejects a tampered one', () => {
  const nango = new Nango({ secretKey: randomUUID(), webhookSigningKey: SECRET })
  const other = new Nango({ secretKey: randomUUID(), webhookSigningKey: 'some-other-secret-value' })
  for (const { body, headers } of receiver.received) {
    expect(nango.verifyIncomingWebhookRequest(body, headers)).toBe(true)
    expect(other.verifyIncomingWebhookRequest(body, headers)).toBe(false)
    const tampered = body.replace(/"added":\d+/, '"added":999')
    expect(tampered).not.toBe(body)
    expect(nango.verifyIncomingWebhookRequest(tampered, headers)).toBe(false)
    // The legacy header: sha256(secret + body).
    expect(headers['x-nango-signature']).toBe(createHash('sha256').update(`${SECRET}${body}`).digest('hex'))
  }
  const unsigned = { ...receiver.received[0]!.headers, 'x-nango-hmac-sha256': undefined }
  expect(nango.verifyIncomingWebhookRequest(receiver.received[0]!.body, unsigned)).toBe(false)
})

it('a run that changed nothing sends nothing', async () => {
  const run = await trigger(t, 'crm', 'c1', 'contacts')
  expect(run.state, run.error ?? '').toBe('SUCCEEDED')
  expect(run.result).toEqual({
    Contact: { added: 0, updated: 0, deleted: 0 },
    Company: { added: 0, updated: 0, deleted: 0 },
    Deal: { added: 0, updated: 0, deleted: 0 },
  })
  // Deliveries are queued in the transaction that records the run's success: none now means none ever.
  const deliveries = await waitFor('the first two deliveries marked delivered', async () => {
    const all = await listDeliveries(t.database.db.kysely, t.envId, { limit: 100 })
    return all.every((d) => d.state === 'delivered') && all
  })
  expect(deliveries.filter((d) => d.runId === run.id)).toEqual([])
  expect(deliveries.map((d) => [d.runId, d.attempts])).toEqual([
    [first.id, 1],
    [first.id, 1],
  ])
  expect(receiver.received).toHaveLength(2)
})

it('a later incremental run reports its own counts: updates and deletes of one model', async () => {
  data.contacts = [{ id: 'c1', name: 'Ada Lovelace' }]
  data.deleted = ['c2']
  const run = await trigger(t, 'crm', 'c1', 'contacts')
  expect(run.state, run.error ?? '').toBe('SUCCEEDED')
  expect(run.type).toBe('incremental')
  await received(3)
  expect(bodies(2)).toEqual([
    expect.objectContaining({
      model: 'Contact',
      syncType: 'INCREMENTAL',
      modifiedAfter: run.started_at!.toISOString(),
      responseResults: { added: 0, updated: 1, deleted: 1 },
    }),
  ])
})

it("a variant's webhooks name the variant and the base model", async () => {
  const created = await api(t, 'POST', '/sync/contacts/variant/eu', {
    provider_config_key: 'crm',
    connection_id: 'c1',
  })
  expect(created.status).toBe(200)
  const run = await waitForRun(t, await syncId(t, 'crm', 'c1', 'contacts', 'eu'))
  expect(run.state, run.error ?? '').toBe('SUCCEEDED')
  await received(5)
  expect(bodies(3).map((b) => [b.model, b.syncVariant, b.responseResults])).toEqual([
    ['Company', 'eu', { added: 1, updated: 0, deleted: 0 }],
    ['Contact', 'eu', { added: 1, updated: 0, deleted: 0 }],
  ])
})
