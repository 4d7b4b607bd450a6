import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'
import { connect, records, type RunRow } from './harness.ts'

/**
 * SYNCSTORE_RECORD_VALIDATION: `warn` (the default, as Nango's production runner, which does not
 * reject) saves a record that breaks its model and logs the violation with the record's id;
 * `strict` fails the batch (test/runtime/sdk.test.ts has its details); `off` does not check.
 */

const FILES = {
  'shop/syncs/orders.ts': `
    import { createSync } from 'nango'
    import * as z from 'zod'
    export default createSync({
      description: 'An API that sends null where the model says string', frequency: 'every hour',
      models: { Order: z.object({ id: z.string(), total: z.number(), note: z.string() }) },
      async exec(nango) {
        await nango.batchSave([
          { id: 'o1', total: 10, note: 'fine' },
          { id: 'o2', total: 20, note: null },
        ], 'Order')
      },
    })`,
}

const servers: Partial<Record<'warn' | 'strict' | 'off', TestServer>> = {}
const runs: Partial<Record<'warn' | 'strict' | 'off', RunRow>> = {}

// One server at a time: three starting workers at once on a loaded 2-core CI machine once made a
// run miss its 2 s heartbeat timeout.
beforeAll(async () => {
  for (const mode of ['warn', 'strict', 'off'] as const) {
    const t = await startTestServer(FILES, mode === 'warn' ? {} : { SYNCSTORE_RECORD_VALIDATION: mode })
    servers[mode] = t
    runs[mode] = (await connect(t, 'shop', 'conn-1', ['orders'])).orders
  }
})
afterAll(() => Promise.all(Object.values(servers).map((t) => t.close())))

const logsOf = (mode: 'warn' | 'strict' | 'off') =>
  listRunLogs(servers[mode]!.database.db.kysely, runs[mode]!.id)

it('warn (default): the record is saved and the violation logged with its id', async () => {
  expect(runs.warn).toMatchObject({ state: 'SUCCEEDED', result: { Order: { added: 2 } } })
  expect((await records(servers.warn!, 'shop', 'conn-1', 'Order')).get('o2')).toMatchObject({ note: null })
  const logs = await logsOf('warn')
  expect(logs).toHaveLength(1)
  expect(logs[0]).toMatchObject({
    level: 'warn',
    message: 'Invalid Order record o2: /note must be string (saved anyway)',
  })
  expect(logs[0]!.payload).toMatchObject({ model: 'Order', id: 'o2' })
})

it('strict: the batch fails, nothing of it written, the error names the id and the violation', async () => {
  expect(runs.strict).toMatchObject({
    state: 'FAILED',
    error: 'Error: Invalid Order record o2: /note must be string',
  })
  expect((await records(servers.strict!, 'shop', 'conn-1', 'Order')).size).toBe(0)
})

it('off: saved, nothing logged', async () => {
  expect(runs.off).toMatchObject({ state: 'SUCCEEDED', result: { Order: { added: 2 } } })
  expect(await logsOf('off')).toEqual([])
})
