import type { Kysely, Transaction } from 'kysely'

import type { Database } from './database.ts'
import { withRetries } from './errors.ts'

/**
 * Runs `fn` in one transaction, and again in a new one when Postgres says the failure is retryable
 * (withRetries). The caller owns the transaction: stores take it as their first argument and never
 * open one, so what must commit together (a run's lease check and its write) does. `fn` may run
 * more than once, so it must have no effects outside the database.
 */
export function inTransaction<T>(
  db: Kysely<Database>,
  fn: (trx: Transaction<Database>) => Promise<T>,
  options?: { outageMs?: number },
): Promise<T> {
  return withRetries(() => db.transaction().execute(fn), options)
}
