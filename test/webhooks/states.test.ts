import http from 'node:http'
import type { AddressInfo } from 'node:net'

import { sql } from 'kysely'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createSealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createLogger } from '../../src/logger.ts'
import { deliverDue, type DeliveryOptions } from '../../src/webhooks/deliver.ts'
import {
  enqueueDelivery,
  listDeliveries,
  markAttemptFailed,
  markDelivered,
  removeWebhook,
  setWebhook,
} from '../../src/webhooks/store.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { waitFor } from '../helpers/server.ts'

/**
 * Delivery states change by compare-and-set (src/webhooks/states.ts): a late report, from a
 * deliverer whose claim ran out or that answers after the webhook was removed, changes nothing.
 */

const sealer = createSealer(null)
const logger = createLogger('silent')
const options: DeliveryOptions = { maxAttempts: 5, baseDelayMs: 200, timeoutMs: 5_000 }

let database: TestDatabase
const db = () => database.db.kysely

beforeAll(async () => {
  database = await createTestDatabase()
})
afterAll(async () => {
  await database.destroy()
})

async function environment(): Promise<number> {
  return (await ensureEnvironment(db(), `env-${Math.random().toString(36).slice(2)}`)).id
}

async function enqueue(environmentId: number, url: string): Promise<number> {
  await enqueueDelivery(db(), { environmentId, runId: 77, url, body: '{"n":1}' })
  const [latest] = await listDeliveries(db(), environmentId, { limit: 1 })
  return latest!.id
}

const row = (id: number) =>
  db().selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirstOrThrow()

it('a deliverer whose claim ran out cannot overwrite the delivery another one completed', async () => {
  // The first request is held until released, then answered 500; later ones get 200 at once.
  let release: () => void = () => undefined
  let requests = 0
  const server = http.createServer((req, res) => {
    req.resume().on('end', () => {
      if (++requests > 1) return res.writeHead(200).end()
      release = () => res.writeHead(500).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`
    const envId = await environment()
    await setWebhook(db(), sealer, envId, url, 'whsec-states')
    const id = await enqueue(envId, url)

    const first = deliverDue(db(), sealer, logger, options)
    await waitFor('the first attempt at the receiver', () => requests === 1)
    // Its claim runs out while the receiver holds it: another deliverer claims and delivers.
    await sql`UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second' WHERE id = ${id}`.execute(
      db(),
    )
    expect(await deliverDue(db(), sealer, logger, options)).toBe(1)
    expect(await row(id)).toMatchObject({
      state: 'delivered',
      attempts: 2,
      last_status: 200,
      last_error: null,
    })

    // The first deliverer's 500 arrives late: it would schedule a retry, and is refused.
    release()
    expect(await first).toBe(1)
    expect(await row(id)).toMatchObject({
      state: 'delivered',
      attempts: 2,
      last_status: 200,
      last_error: null,
    })
  } finally {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
})

it('delivered is final: a late failure, retry or give-up, changes nothing', async () => {
  const envId = await environment()
  const id = await enqueue(envId, 'http://127.0.0.1:9/late')
  expect(await markDelivered(db(), id, 204)).toBe(true)
  const delivered = await row(id)

  expect(await markAttemptFailed(db(), id, { status: 500, error: 'late' }, 1000)).toBe(false)
  expect(await markAttemptFailed(db(), id, { status: 500, error: 'late' }, null)).toBe(false)
  expect(await markDelivered(db(), id, 200)).toBe(false)
  expect(await row(id)).toEqual(delivered)
})

it('a delivery failed because its webhook was removed is not marked delivered or rescheduled by a late report', async () => {
  const envId = await environment()
  await setWebhook(db(), sealer, envId, 'http://127.0.0.1:9/gone', 'whsec-states')
  const id = await enqueue(envId, 'http://127.0.0.1:9/gone')
  await removeWebhook(db(), envId)
  const failed = await row(id)
  expect(failed).toMatchObject({ state: 'failed', last_error: 'The webhook URL was removed' })

  expect(await markDelivered(db(), id, 200)).toBe(false)
  expect(await markAttemptFailed(db(), id, { status: null, error: 'late' }, 1000)).toBe(false)
  expect(await row(id)).toEqual(failed)
})
