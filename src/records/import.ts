import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { setImmediate as nextTurn } from 'node:timers/promises'

import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import type { Dataset } from './datasets.ts'
import { type PreparedRecord, prepareRecord, RecordError } from './payload.ts'
import { savePrepared } from './save.ts'

// A batch is one transaction: its lock, its upsert, its commit (an fsync). 2,000 records a batch
// imported 100,000 1 KB records in 5.6 s where 1,000 took 6.2-6.5 s and 4,000 5.8-6.1 s; the byte
// bound keeps a batch of large records to a few MiB in memory and in one statement.
export const IMPORT_BATCH_SIZE = 2000
/** JSON text (UTF-16 units, bytes for ASCII) after which a batch is written, however few its records. */
export const IMPORT_BATCH_BYTES = 2 * 1024 * 1024
/**
 * Records checked between two turns of the event loop. Checking a batch at once held the loop for
 * 10-20 ms, and every reply Postgres sent meanwhile (the current batch's BEGIN, lock, commit)
 * waited that long: 100,000 records took 6.8-7.1 s instead of 6.2-6.5 s at 1,000 a batch.
 */
const PREPARE_SLICE = 100

export interface ImportSummary {
  lines: number
  added: number
  updated: number
  unchanged: number
  duplicates: number
}

export class ImportError extends Error {
  constructor(
    readonly line: number,
    message: string,
    readonly imported: ImportSummary,
  ) {
    super(`line ${line}: ${message}`)
    this.name = 'ImportError'
  }
}

/**
 * Streams an NDJSON file (one record per line, blank lines skipped) into batchSave, batch by
 * batch. A bad line stops the import with its line number; nothing from its batch is written,
 * earlier batches stay (each is its own transaction).
 *
 * Two batches overlap: while one is written, the next is read and checked (prepareRecord), so
 * the import's CPU and Postgres' work side by side; the checking yields to the event loop every
 * PREPARE_SLICE records so the batch being written never waits for it. Writes stay one at a time,
 * in file order, and nothing is left writing when the import returns or throws.
 */
export async function importRecords(
  db: Kysely<Database>,
  sealer: Sealer,
  ds: Dataset,
  file: string,
  onBatch?: (summary: ImportSummary) => void,
): Promise<ImportSummary> {
  const summary: ImportSummary = { lines: 0, added: 0, updated: 0, unchanged: 0, duplicates: 0 }
  let batch: unknown[] = []
  let batchBytes = 0
  let lineNumbers: number[] = []
  let writing: Promise<void> = Promise.resolve()

  const write = async (prepared: PreparedRecord[]) => {
    const result = await inTransaction(db, (trx) => savePrepared(trx, sealer, ds, prepared))
    summary.added += result.added.length
    summary.updated += result.updated.length
    summary.unchanged += result.unchanged.length
    summary.duplicates += result.duplicates.length
    onBatch?.(summary)
  }

  const flush = async () => {
    if (batch.length === 0) return
    const numbers = lineNumbers
    const values = batch
    batch = []
    batchBytes = 0
    lineNumbers = []
    const prepared: PreparedRecord[] = []
    try {
      for (let index = 0; index < values.length; index++) {
        if (index > 0 && index % PREPARE_SLICE === 0) await nextTurn()
        prepared.push(prepareRecord(values[index], index, sealer))
      }
    } catch (err) {
      if (!(err instanceof RecordError)) throw err
      const which = err.recordId === undefined ? '' : `record ${JSON.stringify(err.recordId)} `
      throw new ImportError(numbers[err.index]!, which + err.reason, summary)
    }
    await writing
    writing = write(prepared)
    // Awaited by the next flush or at the end; until then a failure must not count as unhandled.
    writing.catch(() => {})
  }

  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })
  let lineNumber = 0
  try {
    for await (const line of lines) {
      lineNumber++
      if (line.trim() === '') continue
      let value: unknown
      try {
        value = JSON.parse(line)
      } catch (err) {
        throw new ImportError(lineNumber, `not valid JSON: ${(err as Error).message}`, summary)
      }
      summary.lines++
      batch.push(value)
      batchBytes += line.length
      lineNumbers.push(lineNumber)
      if (batch.length >= IMPORT_BATCH_SIZE || batchBytes >= IMPORT_BATCH_BYTES) await flush()
    }
    await flush()
  } finally {
    // The batch being written finishes first (an ImportError's summary is this same object, so it
    // counts that batch); should it fail, its error is the earlier one and wins.
    await writing
  }
  return summary
}
