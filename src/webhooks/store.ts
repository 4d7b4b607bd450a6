import { randomBytes } from 'node:crypto'

import { sql } from 'kysely'

import { type Sealer, openJson, sealJson } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'
import { type DeliveryState, type DeliveryStateLeadingTo, deliveryStatesLeadingTo } from './states.ts'

export interface WebhookSettings {
  url: string
  secret: string
}

/** Sets the environment's webhook URL; keeps its signing secret unless a new one is given. */
export async function setWebhook(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
  url: string,
  secret?: string,
): Promise<WebhookSettings> {
  const existing = await getWebhook(db, sealer, environmentId)
  // 32 random bytes, hex: as strong as the HMAC key can use.
  const chosen = secret ?? existing?.secret ?? randomBytes(32).toString('hex')
  const sealed = sealJson(sealer, chosen)
  await db
    .insertInto('webhook_settings')
    .values({ environment_id: environmentId, url, secret: sealed })
    .onConflict((oc) =>
      oc.column('environment_id').doUpdateSet({ url, secret: sealed, updated_at: new Date() }),
    )
    .execute()
  return { url, secret: chosen }
}

export async function getWebhook(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
): Promise<WebhookSettings | undefined> {
  const row = await db
    .selectFrom('webhook_settings')
    .select(['url', 'secret'])
    .where('environment_id', '=', environmentId)
    .executeTakeFirst()
  return row && { url: row.url, secret: openJson<string>(sealer, row.secret) }
}

/** The environment's webhook URL alone: queueing a delivery needs no secret (it is signed when sent). */
export async function getWebhookUrl(db: Queryable, environmentId: number): Promise<string | undefined> {
  const row = await db
    .selectFrom('webhook_settings')
    .select('url')
    .where('environment_id', '=', environmentId)
    .executeTakeFirst()
  return row?.url
}

/** Stops sending webhooks; deliveries still waiting are marked failed rather than retried for hours. */
export async function removeWebhook(db: Queryable, environmentId: number): Promise<boolean> {
  await db
    .updateTable('webhook_deliveries')
    .set({ state: 'failed', last_error: 'The webhook URL was removed' })
    .where('environment_id', '=', environmentId)
    .where('state', 'in', deliveryStatesLeadingTo('failed'))
    .execute()
  const result = await db
    .deleteFrom('webhook_settings')
    .where('environment_id', '=', environmentId)
    .executeTakeFirst()
  return result.numDeletedRows > 0n
}

export async function enqueueDelivery(
  db: Queryable,
  delivery: { environmentId: number; runId: number; url: string; body: string },
): Promise<void> {
  await db
    .insertInto('webhook_deliveries')
    .values({
      environment_id: delivery.environmentId,
      run_id: delivery.runId,
      url: delivery.url,
      body: delivery.body,
    })
    .execute()
}

export interface ClaimedDelivery {
  id: number
  environmentId: number
  url: string
  body: string
  attempts: number
}

/**
 * Claims due deliveries by moving their next attempt past `leaseMs`: if this instance dies while
 * sending, they come due again elsewhere (at least once). SKIP LOCKED keeps instances apart.
 */
export async function claimDeliveries(
  db: Queryable,
  limit: number,
  leaseMs: number,
): Promise<ClaimedDelivery[]> {
  const { rows } = await sql<{
    id: number
    environment_id: number
    url: string
    body: string
    attempts: number
  }>`
    UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
           next_attempt_at = now() + ${leaseMs} * interval '1 millisecond'
    WHERE d.id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.environment_id, d.url, d.body, d.attempts`.execute(db)
  return rows.map((r) => ({
    id: r.id,
    environmentId: r.environment_id,
    url: r.url,
    body: r.body,
    attempts: r.attempts,
  }))
}

// A failed attempt with attempts left keeps the delivery pending; a failed one is requeued by hand.
const RETRY_FROM: DeliveryStateLeadingTo<'pending'> = 'pending'
const REQUEUE_FROM: DeliveryStateLeadingTo<'pending'> = 'failed'

/**
 * Records a successful attempt, unless the delivery left the states that lead to delivered meanwhile
 * (compare-and-set). Returns false for such a late report: nothing changes.
 */
export async function markDelivered(db: Queryable, id: number, status: number): Promise<boolean> {
  const result = await db
    .updateTable('webhook_deliveries')
    .set({ state: 'delivered', delivered_at: new Date(), last_status: status, last_error: null })
    .where('id', '=', id)
    .where('state', 'in', deliveryStatesLeadingTo('delivered'))
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/**
 * Schedules another attempt after `retryInMs`, or gives up (state failed) when null; either only
 * while the delivery is in a state that leads there (compare-and-set), so a late report cannot
 * overwrite a delivery that was delivered, or failed, meanwhile. Returns false for such a report.
 */
export async function markAttemptFailed(
  db: Queryable,
  id: number,
  failure: { status: number | null; error: string },
  retryInMs: number | null,
): Promise<boolean> {
  const from: readonly DeliveryState[] = retryInMs === null ? deliveryStatesLeadingTo('failed') : [RETRY_FROM]
  const result = await db
    .updateTable('webhook_deliveries')
    .set({
      last_status: failure.status,
      last_error: failure.error.slice(0, 1000),
      ...(retryInMs === null
        ? { state: 'failed' as const }
        : { next_attempt_at: sql<Date>`now() + ${retryInMs} * interval '1 millisecond'` }),
    })
    .where('id', '=', id)
    .where('state', 'in', [...from])
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

export interface DeliveryInfo {
  id: number
  runId: number | null
  url: string
  state: string
  attempts: number
  lastStatus: number | null
  lastError: string | null
  createdAt: Date
  deliveredAt: Date | null
}

export async function listDeliveries(
  db: Queryable,
  environmentId: number,
  filter: { state?: DeliveryState; limit: number },
): Promise<DeliveryInfo[]> {
  let query = db.selectFrom('webhook_deliveries').selectAll().where('environment_id', '=', environmentId)
  if (filter.state) query = query.where('state', '=', filter.state)
  const rows = await query.orderBy('id', 'desc').limit(filter.limit).execute()
  return rows.map((r) => ({
    id: r.id,
    runId: r.run_id,
    url: r.url,
    state: r.state,
    attempts: r.attempts,
    lastStatus: r.last_status,
    lastError: r.last_error,
    createdAt: r.created_at,
    deliveredAt: r.delivered_at,
  }))
}

/** Puts failed deliveries back in the queue (after fixing the receiver). */
export async function retryFailed(db: Queryable, environmentId: number): Promise<number> {
  const result = await db
    .updateTable('webhook_deliveries')
    .set({ state: 'pending', attempts: 0, next_attempt_at: new Date() })
    .where('environment_id', '=', environmentId)
    .where('state', '=', REQUEUE_FROM)
    .executeTakeFirst()
  return Number(result.numUpdatedRows)
}

/**
 * Deliveries not yet made (GET /metrics): all pending ones, and those whose attempt is due now
 * (the others wait out a retry's backoff). Reads the partial index on pending deliveries.
 */
export async function deliveryBacklog(db: Queryable): Promise<{ pending: number; due: number }> {
  const { rows } = await sql<{ pending: number; due: number }>`
    SELECT count(*)::int AS pending, (count(*) FILTER (WHERE next_attempt_at <= now()))::int AS due
    FROM webhook_deliveries WHERE state = 'pending'`.execute(db)
  return rows[0]!
}
