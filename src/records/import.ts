import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'

import type { Kysely } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { inTransaction } from '../db/transaction.ts'
import type { Dataset } from './datasets.ts'
import { RecordError } from './payload.ts'
import { batchSave } from './save.ts'

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

  const flush = async () => {
    if (batch.length === 0) return
    try {
      const result = await inTransaction(db, (trx) => batchSave(trx, sealer, ds, batch))
      summary.added += result.added.length
      summary.updated += result.updated.length
      summary.unchanged += result.unchanged.length
      summary.duplicates += result.duplicates.length
    } catch (err) {
      if (err instanceof RecordError) {
        const which = err.recordId === undefined ? '' : `record ${JSON.stringify(err.recordId)} `
        throw new ImportError(lineNumbers[err.index]!, which + err.reason, summary)
      }
      throw err
    }
    batch = []
    lineNumbers = []
    onBatch?.(summary)
  }

  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })
  let lineNumber = 0
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
  return summary
}
