import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'

import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import type { Dataset } from './datasets.ts'
import { type PreparedRecord, RecordError } from './payload.ts'
import { prepareRecords, savePrepared } from './save.ts'

// Matches Nango's persist chunks: big enough to amortise the transaction, small enough that a
// batch of 1 KB records stays around 1 MB in memory and in one statement.
export const IMPORT_BATCH_SIZE = 1000

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
 * Two batches overlap: while one is written, the next is read and checked (prepareRecords), so
 * the import's CPU and Postgres' work side by side. Writes stay one at a time, in file order, and
 * nothing is left writing when the import returns or throws.
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
    let prepared: PreparedRecord[]
    try {
      prepared = prepareRecords(batch, sealer)
    } catch (err) {
      if (!(err instanceof RecordError)) throw err
      const which = err.recordId === undefined ? '' : `record ${JSON.stringify(err.recordId)} `
      throw new ImportError(numbers[err.index]!, which + err.reason, summary)
    }
    batch = []
    lineNumbers = []
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
      lineNumbers.push(lineNumber)
      if (batch.length >= IMPORT_BATCH_SIZE) await flush()
    }
    await flush()
  } finally {
    // The batch being written finishes first (an ImportError's summary is this same object, so it
    // counts that batch); should it fail, its error is the earlier one and wins.
    await writing
  }
  return summary
}
