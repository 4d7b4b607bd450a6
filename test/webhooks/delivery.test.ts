import { randomUUID } from 'node:crypto'

import { Nango } from '@nangohq/node'
import { sql } from 'kysely'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { createSealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createLogger } from '../../src/logger.ts'
import { deliverDue, type DeliveryOptions } from '../../src/webhooks/deliver.ts'
import { enqueueDelivery, listDeliveries, setWebhook } from '../../src/webhooks/store.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { killAll, runCli } from '../helpers/process.ts'
import { startTestServer, waitFor } from '../helpers/server.ts'
import { type Receiver, startReceiver } from './receiver.ts'

/**
 * The delivery queue: retries with backoff, gives up after its attempts (visible in listings and
 * the CLI), reaches a receiver that was down at first, and survives a server restart.
 */

const SECRET = 'whsec-delivery-0123456789'
const sealer = createSealer(null) // the test server stores secrets in plain text too
const logger = createLogger('silent')
const nango = new Nango({ secretKey: randomUUID(), webhookSigningKey: SECRET })

let database: TestDatabase
let envId: number
const receivers: Receiver[] = []

beforeAll(async () => {
  database = await createTestDatabase()
  envId = (await ensureEnvironment(database.db.kysely, 'dev')).id
})
afterAll(async () => {
  await killAll()
  await Promise.all(receivers.map((r) => r.close()))
  await database.destroy()
})

const db = () => database.db.kysely
const receiver = async (port?: number) => {
  const r = await startReceiver(port)
  receivers.push(r)
  return r
}
const body = (n: number) =>
  JSON.stringify({ connectionId: 'c1', from: 'nango', model: 'Contact', n, type: 'sync' })

async function enqueue(url: string, runId: number, n: number): Promise<number> {
  await enqueueDelivery(db(), { environmentId: envId, runId, url, body: body(n) })
  const [latest] = await listDeliveries(db(), envId, { limit: 1 })
  return latest!.id
}

const row = (id: number) =>
  db().selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirstOrThrow()

/** Runs delivery passes until one sends something (bounded). */
const nextAttempt = (options: DeliveryOptions) =>
  waitFor('a due delivery', async () => (await deliverDue(db(), sealer, logger, options)) > 0, {
    timeoutMs: 20_000,
    intervalMs: 50,
  })

it('a receiver answering 500 is retried with growing delays, then marked failed after maxAttempts', async () => {
  const failing = await receiver()
  failing.answer = 500
  await setWebhook(db(), sealer, envId, failing.url, SECRET)
  const id = await enqueue(failing.url, 4242, 1)
  const options: DeliveryOptions = { maxAttempts: 3, baseDelayMs: 400, timeoutMs: 5_000 }

  const delays: number[] = []
  for (let attempt = 1; attempt <= 3; attempt++) {
    const before = Date.now()
    await nextAttempt(options)
    const after = Date.now()
    const r = await row(id)
    expect(r).toMatchObject({ attempts: attempt, last_status: 500, last_error: 'receiver answered 500' })
    expect(failing.received).toHaveLength(attempt)
    if (attempt < 3) {
      expect(r.state).toBe('pending')
      const expected = options.baseDelayMs * 2 ** (attempt - 1)
      // The next attempt is due `expected` ms after this one was made.
      expect(r.next_attempt_at.getTime()).toBeGreaterThanOrEqual(before + expected - 50)
      expect(r.next_attempt_at.getTime()).toBeLessThanOrEqual(after + expected + 50)
      delays.push(expected)
      // Not before then: a pass now sends nothing (unless this machine stalled past the delay).
      if (Date.now() < r.next_attempt_at.getTime() - 100) {
        expect(await deliverDue(db(), sealer, logger, options)).toBe(0)
      }
    } else {
      expect(r.state).toBe('failed')
    }
  }
  expect(delays).toEqual([400, 800])
  // Every attempt carried the same signed body.
  for (const { body: raw, headers } of failing.received) {
    expect(raw).toBe(body(1))
    expect(nango.verifyIncomingWebhookRequest(raw, headers)).toBe(true)
  }
  // Failed deliveries are done: no more passes send them.
  expect(await deliverDue(db(), sealer, logger, options)).toBe(0)
  const failed = await listDeliveries(db(), envId, { state: 'failed', limit: 10 })
  expect(failed).toEqual([
    expect.objectContaining({ id, runId: 4242, state: 'failed', attempts: 3, lastStatus: 500 }),
  ])
})

it('a receiver that is down at first gets the delivery at a later attempt', async () => {
  // A port that nothing listens on (yet).
  const probe = await receiver()
  const port = probe.port
  await probe.close()
  const url = `http://127.0.0.1:${port}/hooks`
  await setWebhook(db(), sealer, envId, url, SECRET)
  const id = await enqueue(url, 4243, 2)
  const options: DeliveryOptions = { maxAttempts: 5, baseDelayMs: 200, timeoutMs: 5_000 }

  await nextAttempt(options)
  expect(await row(id)).toMatchObject({ state: 'pending', attempts: 1, last_status: null })
  expect((await row(id)).last_error).toBeTruthy()

  const up = await receiver(port)
  await nextAttempt(options)
  expect(await row(id)).toMatchObject({ state: 'delivered', attempts: 2, last_status: 200, last_error: null })
  expect(up.received).toHaveLength(1)
  expect(up.received[0]!.body).toBe(body(2))
  expect(nango.verifyIncomingWebhookRequest(up.received[0]!.body, up.received[0]!.headers)).toBe(true)
})

it('deliveries queued while no server runs are delivered once a server starts on the same database', async () => {
  const live = await receiver()
  await setWebhook(db(), sealer, envId, live.url, SECRET)
  const first = await startTestServer({}, {}, { database })
  await first.close()

  // Queued with no server running (e.g. committed by a run just before the server went down).
  const id = await enqueue(live.url, 4244, 3)
  // Stale lease from a sender that died mid-send: due again once its lease is over.
  const stale = await enqueue(live.url, 4245, 4)
  await sql`UPDATE webhook_deliveries SET attempts = 1, next_attempt_at = now() - interval '1 second'
            WHERE id = ${stale}`.execute(db())
  expect(live.received).toHaveLength(0)

  const second = await startTestServer({}, {}, { database })
  try {
    await waitFor('both deliveries at the receiver', () => live.received.length >= 2, { timeoutMs: 20_000 })
  } finally {
    await second.close()
  }
  expect(live.received.map((r) => r.body).sort()).toEqual([body(3), body(4)])
  for (const r of live.received) expect(nango.verifyIncomingWebhookRequest(r.body, r.headers)).toBe(true)
  expect(await row(id)).toMatchObject({ state: 'delivered', attempts: 1 })
  expect(await row(stale)).toMatchObject({ state: 'delivered', attempts: 2 })
})

it('syncstore webhooks list --state failed shows the failed delivery', { timeout: 120_000 }, async () => {
  // The CLI opens the database itself; an embedded one only while no one else has it open.
  if (database.target.kind === 'embedded') await database.db.close()
  const env =
    database.target.kind === 'postgres'
      ? { DATABASE_URL: database.target.url }
      : { SYNCSTORE_DATA_DIR: database.target.dataDir }
  const table = await runCli(['webhooks', 'list', '--state', 'failed'], { ...env, LOG_LEVEL: 'silent' })
  expect(table.code, table.stderr).toBe(0)
  const lines = table.stdout.trimEnd().split('\n')
  expect(lines).toHaveLength(2)
  expect(lines[0]).toMatch(/^ID\s+RUN\s+STATE\s+ATTEMPTS\s+STATUS\s+CREATED\s+LAST ERROR$/)
  expect(lines[1]).toMatch(/^\d+\s+4242\s+failed\s+3\s+500\s+\S+\s+receiver answered 500$/)

  const json = await runCli(['webhooks', 'list', '--json'], { ...env, LOG_LEVEL: 'silent' })
  expect(json.code, json.stderr).toBe(0)
  const all = JSON.parse(json.stdout) as { runId: number; state: string }[]
  expect(all.map((d) => [d.runId, d.state])).toEqual([
    [4245, 'delivered'],
    [4244, 'delivered'],
    [4243, 'delivered'],
    [4242, 'failed'],
  ])
})
