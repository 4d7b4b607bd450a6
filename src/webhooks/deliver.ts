import { createHash, createHmac } from 'node:crypto'

import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database, Queryable } from '../db/database.ts'
import type { Logger } from '../logger.ts'
import {
  claimDeliveries,
  enqueueDelivery,
  getWebhook,
  getWebhookUrl,
  markAttemptFailed,
  markDelivered,
} from './store.ts'

/** What a successful run's webhooks announce (runs/complete.ts fills it in). */
export interface SyncRunSummary {
  runId: number
  environmentId: number
  /** the connection's public id */
  connectionId: string
  providerConfigKey: string
  syncName: string
  variant: string
  type: 'full' | 'incremental'
  /** Per model of the run; a webhook goes out for each one that changed */
  counts: Record<string, { added: number; updated: number; deleted: number }>
  /** Start of the earliest run since the previous success (Nango: this run's start) */
  modifiedAfter: Date
}

/**
 * Nango's sync webhook body for one model of a run (packages/webhooks/lib/sync.ts), with its keys
 * in sorted order as Nango's stable stringify writes them, so signatures match byte for byte.
 */
export function syncWebhookBody(summary: SyncRunSummary, model: string): string {
  const counts = summary.counts[model] ?? { added: 0, updated: 0, deleted: 0 }
  // Usually this run's start; earlier when runs failed since the last success, so a consumer that
  // reads GET /records?modified_after= also gets what those runs wrote.
  const modifiedAfter = summary.modifiedAfter.toISOString()
  return JSON.stringify({
    connectionId: summary.connectionId,
    from: 'nango',
    model,
    modifiedAfter,
    providerConfigKey: summary.providerConfigKey,
    queryTimeStamp: modifiedAfter,
    responseResults: { added: counts.added, deleted: counts.deleted, updated: counts.updated },
    success: true,
    syncName: summary.syncName,
    syncType: summary.type === 'incremental' ? 'INCREMENTAL' : 'INITIAL',
    syncVariant: summary.variant,
    type: 'sync',
  })
}

/** Both of Nango's signature headers: the HMAC (what @nangohq/node verifies) and the legacy digest. */
export function signatureHeaders(secret: string, body: string): Record<string, string> {
  return {
    'X-Nango-Hmac-Sha256': createHmac('sha256', secret).update(body).digest('hex'),
    'X-Nango-Signature': createHash('sha256').update(`${secret}${body}`).digest('hex'),
  }
}

/**
 * After a successful run, in the transaction that records it: one webhook per model that changed,
 * to the environment's URL (none configured: nothing to send). Only the URL is read here: the body
 * is signed when it is delivered, with the secret of that moment.
 */
export async function queueSyncWebhooks(trx: Queryable, summary: SyncRunSummary): Promise<void> {
  const url = await getWebhookUrl(trx, summary.environmentId)
  if (!url) return
  for (const [model, c] of Object.entries(summary.counts)) {
    if (c.added + c.updated + c.deleted === 0) continue
    await enqueueDelivery(trx, {
      environmentId: summary.environmentId,
      runId: summary.runId,
      url,
      body: syncWebhookBody(summary, model),
    })
  }
}

export interface DeliveryOptions {
  /** Attempts before a delivery is marked failed */
  maxAttempts: number
  /** First retry delay; doubles per attempt up to an hour */
  baseDelayMs: number
  timeoutMs: number
}

// 10 attempts from 10 s doubling (capped at 1 h) retry for about 4 hours before giving up.
export const DEFAULT_DELIVERY: DeliveryOptions = { maxAttempts: 10, baseDelayMs: 10_000, timeoutMs: 10_000 }

/** One pass of the delivery loop: sends what is due, schedules retries. Returns how many were sent. */
export async function deliverDue(
  db: Kysely<Database>,
  sealer: Sealer,
  logger: Logger,
  options: DeliveryOptions = DEFAULT_DELIVERY,
): Promise<number> {
  const due = await claimDeliveries(db, 20, options.timeoutMs * 3)
  // Another deliverer finished it after this claim ran out, or the webhook was removed meanwhile.
  const late = (recorded: boolean, deliveryId: number) => {
    if (recorded) return
    logger.info({ deliveryId }, 'webhook delivery changed meanwhile; this attempt is not recorded')
  }
  await Promise.all(
    due.map(async (d) => {
      const settings = await getWebhook(db, sealer, d.environmentId)
      let status: number | null = null
      let error = ''
      try {
        if (!settings) throw new Error('The environment no longer has a webhook URL')
        const response = await fetch(d.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'syncstore',
            ...signatureHeaders(settings.secret, d.body),
          },
          body: d.body,
          signal: AbortSignal.timeout(options.timeoutMs),
        })
        status = response.status
        await response.body?.cancel()
        if (response.ok) return late(await markDelivered(db, d.id, status), d.id)
        error = `receiver answered ${status}`
      } catch (err) {
        error = (err as Error).message
      }
      const retryIn =
        d.attempts >= options.maxAttempts
          ? null
          : Math.min(3_600_000, options.baseDelayMs * 2 ** (d.attempts - 1))
      logger.warn({ deliveryId: d.id, attempt: d.attempts, error, retryIn }, 'webhook delivery failed')
      late(await markAttemptFailed(db, d.id, { status, error }, retryIn), d.id)
    }),
  )
  return due.length
}
