import { sql, type Transaction } from 'kysely'

import type { Database } from '../db/database.ts'

export class RunLostError extends Error {
  override name = 'RunLostError'
}

/**
 * Refuses a write unless the run still holds its lease. FOR SHARE keeps the run row from being
 * cancelled or expired until the write commits, so a variant deletion or an expiry is either seen
 * here (and the write refused) or waits for the write and then removes it with everything else.
 */
export async function assertHoldsRun(
  trx: Transaction<Database>,
  run: { id: number; lease: string },
): Promise<void> {
  const { rows } =
    await sql`SELECT 1 FROM runs WHERE id = ${run.id} AND lease = ${run.lease} AND state = 'STARTED'
                             FOR SHARE`.execute(trx)
  if (rows.length === 0) throw new RunLostError('This run was cancelled or expired; it can no longer write')
}
