import { sql } from 'kysely'

import { openJson, type Sealer, sealJson } from '../crypto.ts'
import type { Queryable } from '../db/database.ts'

/** What a paired environment needs to talk to its Nango (secrets opened). */
export interface Pairing {
  environmentId: number
  url: string
  secretKey: string
  /** null: webhooks are verified with the secret key, as @nangohq/node does */
  webhookSecret: string | null
}

export interface ReconcileCounts {
  /** connections Nango listed */
  listed: number
  /** connections added here (a missed creation webhook) */
  added: number
  /** connections Nango no longer has, whose syncs were stopped */
  deleted: number
  /** connections missing from the listing that Nango still answers for (kept) */
  kept: number
}

export interface PairingStatus {
  environment: string
  url: string
  pairedAt: Date
  webhookSecret: boolean
  lastReconcile: {
    at: Date
    outcome: 'succeeded' | 'failed'
    error: string | null
    counts: Partial<ReconcileCounts> | null
  } | null
  lastWebhook: { at: Date; summary: string | null } | null
}

/**
 * Pairs (or pairs again) an environment, its first reconcile leased to the caller for `leaseMs`
 * (the pairing command runs it; if it dies, another process takes it once the lease ends) and the
 * next one due `intervalMs` later.
 */
export async function savePairing(
  db: Queryable,
  sealer: Sealer,
  pairing: Pairing,
  timing: { leaseMs: number; intervalMs: number },
): Promise<void> {
  const values = {
    url: pairing.url,
    secret_key: sealJson(sealer, pairing.secretKey),
    webhook_secret: pairing.webhookSecret === null ? null : sealJson(sealer, pairing.webhookSecret),
    paired_at: new Date(),
    reconcile_due_at: new Date(Date.now() + timing.intervalMs),
    reconcile_lease_until: new Date(Date.now() + timing.leaseMs),
  }
  await db
    .insertInto('nango_pairings')
    .values({ environment_id: pairing.environmentId, ...values })
    .onConflict((oc) => oc.column('environment_id').doUpdateSet(values))
    .execute()
}

export async function deletePairing(db: Queryable, environmentId: number): Promise<boolean> {
  const result = await db
    .deleteFrom('nango_pairings')
    .where('environment_id', '=', environmentId)
    .executeTakeFirst()
  return result.numDeletedRows > 0n
}

/**
 * The Nango an environment is paired with (URL and secrets), or undefined when it is not paired.
 * What reads connections or proxies calls through Nango starts here.
 */
export async function pairingOf(
  db: Queryable,
  sealer: Sealer,
  environmentId: number,
): Promise<Pairing | undefined> {
  const row = await db
    .selectFrom('nango_pairings')
    .select(['environment_id', 'url', 'secret_key', 'webhook_secret'])
    .where('environment_id', '=', environmentId)
    .executeTakeFirst()
  return (
    row && {
      environmentId: row.environment_id,
      url: row.url,
      secretKey: openJson<string>(sealer, row.secret_key),
      webhookSecret: row.webhook_secret === null ? null : openJson<string>(sealer, row.webhook_secret),
    }
  )
}

export async function pairingStatuses(db: Queryable, environmentId?: number): Promise<PairingStatus[]> {
  let query = db
    .selectFrom('nango_pairings as p')
    .innerJoin('environments as e', 'e.id', 'p.environment_id')
    .select([
      'e.name',
      'p.url',
      'p.paired_at',
      'p.webhook_secret',
      'p.last_reconcile_at',
      'p.last_reconcile_outcome',
      'p.last_reconcile_error',
      'p.last_reconcile_counts',
      'p.last_webhook_at',
      'p.last_webhook_summary',
    ])
    .orderBy('e.name')
  if (environmentId !== undefined) query = query.where('p.environment_id', '=', environmentId)
  const rows = await query.execute()
  return rows.map((r) => ({
    environment: r.name,
    url: r.url,
    pairedAt: r.paired_at,
    webhookSecret: r.webhook_secret !== null,
    lastReconcile:
      r.last_reconcile_at && r.last_reconcile_outcome
        ? {
            at: r.last_reconcile_at,
            outcome: r.last_reconcile_outcome,
            error: r.last_reconcile_error,
            counts: r.last_reconcile_counts,
          }
        : null,
    lastWebhook: r.last_webhook_at ? { at: r.last_webhook_at, summary: r.last_webhook_summary } : null,
  }))
}

/**
 * Claims the reconciles that are due and that no other process is running: FOR UPDATE SKIP LOCKED,
 * so two processes never claim the same one, then a lease of `leaseMs`, so none claims it while it
 * runs. The next one is due `intervalMs` later.
 */
export async function claimReconciles(
  db: Queryable,
  options: { intervalMs: number; leaseMs: number },
): Promise<number[]> {
  const rows = await sql<{ environment_id: number }>`
    UPDATE nango_pairings p
    SET reconcile_due_at = now() + make_interval(secs => ${options.intervalMs / 1000}),
        reconcile_lease_until = now() + make_interval(secs => ${options.leaseMs / 1000})
    WHERE p.environment_id IN (
      SELECT environment_id FROM nango_pairings
      WHERE reconcile_due_at <= now() AND (reconcile_lease_until IS NULL OR reconcile_lease_until < now())
      FOR UPDATE SKIP LOCKED)
    RETURNING p.environment_id`.execute(db)
  return rows.rows.map((r) => r.environment_id)
}

/** Ends a claimed reconcile: its outcome recorded, its lease released. */
export async function recordReconcile(
  db: Queryable,
  environmentId: number,
  outcome: { error: string | null; counts: ReconcileCounts },
): Promise<void> {
  await db
    .updateTable('nango_pairings')
    .set({
      last_reconcile_at: new Date(),
      last_reconcile_outcome: outcome.error === null ? 'succeeded' : 'failed',
      last_reconcile_error: outcome.error,
      last_reconcile_counts: JSON.stringify(outcome.counts),
      reconcile_lease_until: null,
    })
    .where('environment_id', '=', environmentId)
    .execute()
}

export async function recordWebhook(db: Queryable, environmentId: number, summary: string): Promise<void> {
  await db
    .updateTable('nango_pairings')
    .set({ last_webhook_at: new Date(), last_webhook_summary: summary })
    .where('environment_id', '=', environmentId)
    .execute()
}
