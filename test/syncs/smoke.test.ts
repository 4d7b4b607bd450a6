import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { startTestServer, type TestServer } from '../helpers/server.ts'

let t: TestServer
beforeAll(async () => {
  t = await startTestServer({
    'acme/syncs/tickets.ts': `
      import { createSync } from 'syncstore'
      export default createSync({
        description: 'tickets', frequency: 'every hour', models: { Ticket: { type: 'object' } },
        async exec(nango) {
          await nango.batchSave([{ id: 1, title: 'a' }, { id: 2, title: 'b' }], 'Ticket')
          await nango.log('saved two')
        },
      })`,
  })
})
afterAll(() => t.close())

it('runs a sync for a new connection and shows it in status', async () => {
  const nango = new Nango({ host: t.url, secretKey: t.key })
  const res = await fetch(`${t.url}/connections`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ provider_config_key: 'acme', connection_id: 'c1' }),
  })
  expect(res.status).toBe(201)
  let status
  for (let i = 0; i < 100; i++) {
    status = (await nango.syncStatus('acme', '*', 'c1')).syncs[0]
    if (status?.status === 'SUCCESS' && status.latestResult) break
    await new Promise((r) => setTimeout(r, 100))
  }
  expect(status).toMatchObject({ name: 'tickets', status: 'SUCCESS', recordCount: { Ticket: 2 } })
  const records = await nango.listRecords({ providerConfigKey: 'acme', connectionId: 'c1', model: 'Ticket' })
  expect(records.records.map((r) => r.id)).toEqual(['1', '2'])
  await nango.triggerSync('acme', ['tickets'], 'c1')
})
