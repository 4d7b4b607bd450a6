import type { Kysely, Transaction } from 'kysely'

import type { Database } from '../../src/db/database.ts'
import { inTransaction } from '../../src/db/transaction.ts'
import * as deletes from '../../src/records/delete.ts'
import * as prune from '../../src/records/prune.ts'
import * as save from '../../src/records/save.ts'
import * as update from '../../src/records/update.ts'

/**
 * The record stores write in a transaction their caller owns (a route, a run's handler, the CLI
 * import). Tests write as those callers do: each call in a transaction of its own, retried the same way.
 */

type Rest<F> = F extends (trx: Transaction<Database>, ...rest: infer R) => unknown ? R : never

export const batchSave = (db: Kysely<Database>, ...args: Rest<typeof save.batchSave>) =>
  inTransaction(db, (trx) => save.batchSave(trx, ...args))

export const batchUpdate = (db: Kysely<Database>, ...args: Rest<typeof update.batchUpdate>) =>
  inTransaction(db, (trx) => update.batchUpdate(trx, ...args))

export const batchDelete = (db: Kysely<Database>, ...args: Rest<typeof deletes.batchDelete>) =>
  inTransaction(db, (trx) => deletes.batchDelete(trx, ...args))

export const trackDeletesStart = (db: Kysely<Database>, ...args: Rest<typeof deletes.trackDeletesStart>) =>
  inTransaction(db, (trx) => deletes.trackDeletesStart(trx, ...args))

export const trackDeletesEnd = (db: Kysely<Database>, ...args: Rest<typeof deletes.trackDeletesEnd>) =>
  inTransaction(db, (trx) => deletes.trackDeletesEnd(trx, ...args))

export const pruneRecords = (db: Kysely<Database>, ...args: Rest<typeof prune.pruneRecords>) =>
  inTransaction(db, (trx) => prune.pruneRecords(trx, ...args))
