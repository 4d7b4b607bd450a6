import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import type { Logger } from '../logger.ts'
import { type NangoClient, nangoClient } from './client.ts'
import { stopDeletedUpstream, takeConnection } from './connections.ts'
import { claimReconciles, pairingOf, type ReconcileCounts, recordReconcile } from './store.ts'

// A reconcile that has not finished after 10 minutes is taken to have died with its process
// (each Nango call gives up after 10 s; a few thousand connections take well under this).
export const RECONCILE_LEASE_MS = 10 * 60_000

const key = (providerConfigKey: string, connectionId: string) =>
  JSON.stringify([providerConfigKey, connectionId])

/**
 * Makes an environment's connections match its Nango's: those Nango lists and this environment
 * lacks (a missed creation webhook) are read and added with their syncs; those here that the full
 * listing lacks are stopped if Nango then answers 404 for them. A listing that fails part-way
 * deletes nothing. Counts what it did in `counts`; throws what went wrong, after doing what it could.
 */
async function reconcileWith(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  nango: NangoClient,
  counts: ReconcileCounts,
  signal?: AbortSignal,
): Promise<void> {
  const listed = await nango.listConnections(signal)
  counts.listed = listed.length
  const here = await db
    .selectFrom('connections')
    .select(['id', 'provider_config_key', 'connection_id'])
    .where('environment_id', '=', environmentId)
    .where('deleted_upstream_at', 'is', null)
    .execute()
  const known = new Set(here.map((c) => key(c.provider_config_key, c.connection_id)))
  const upstream = new Set(listed.map((c) => key(c.provider_config_key, c.connection_id)))

  for (const listedConnection of listed) {
    if (known.has(key(listedConnection.provider_config_key, listedConnection.connection_id))) continue
    signal?.throwIfAborted()
    const connection = await nango.getConnection(
      listedConnection.provider_config_key,
      listedConnection.connection_id,
      signal,
    )
    // Deleted since it was listed: the next reconcile will not list it.
    if (!connection) continue
    await takeConnection(db, sealer, environmentId, connection)
    counts.added++
  }

  for (const connection of here) {
    if (upstream.has(key(connection.provider_config_key, connection.connection_id))) continue
    signal?.throwIfAborted()
    // Created since the listing, or listed elsewhere: only Nango's 404 says it is gone.
    if (await nango.getConnection(connection.provider_config_key, connection.connection_id, signal)) {
      counts.kept++
      continue
    }
    await stopDeletedUpstream(db, environmentId, connection.id)
    counts.deleted++
  }
}

/**
 * Reconciles the paired environments whose reconcile is due, each in one process at a time, and
 * records each outcome on its pairing.
 */
export async function reconcileDue(
  db: Kysely<Database>,
  sealer: Sealer,
  options: { intervalMs: number; signal?: AbortSignal; logger?: Logger },
): Promise<ReconcileOutcome[]> {
  const claimed = await claimReconciles(db, { intervalMs: options.intervalMs, leaseMs: RECONCILE_LEASE_MS })
  const outcomes = []
  for (const environmentId of claimed) {
    outcomes.push(await reconcileClaimed(db, sealer, environmentId, options))
  }
  return outcomes
}

export interface ReconcileOutcome {
  counts: ReconcileCounts
  error: string | null
}

/**
 * Reconciles an environment whose reconcile this process holds (claimed, or leased at pairing),
 * records the outcome and releases the lease.
 */
export async function reconcileClaimed(
  db: Kysely<Database>,
  sealer: Sealer,
  environmentId: number,
  options: { signal?: AbortSignal; logger?: Logger } = {},
): Promise<ReconcileOutcome> {
  const counts: ReconcileCounts = { listed: 0, added: 0, deleted: 0, kept: 0 }
  let error: string | null = null
  try {
    const pairing = await pairingOf(db, sealer, environmentId)
    if (!pairing) return { counts, error: 'not paired' }
    await reconcileWith(db, sealer, environmentId, nangoClient(pairing), counts, options.signal)
    if (counts.added + counts.deleted > 0) {
      options.logger?.info({ environmentId, ...counts }, 'nango reconcile')
    }
  } catch (err) {
    error = (err as Error).message
    options.logger?.warn({ err, environmentId }, 'nango reconcile failed')
  }
  await recordReconcile(db, environmentId, { error, counts })
  return { counts, error }
}
