import { CompiledQuery, type Kysely } from 'kysely'

import type { Database } from './database.ts'

/**
 * A row of a statement whose columns are all text, valid only during the `onRow` call it is
 * passed to. Columns are read by position; a value can be copied out as its UTF-8 bytes without
 * becoming a string (from Postgres, straight from the protocol message: src/db/wire.ts).
 */
export interface Row {
  /** The column's text; null for NULL */
  text(column: number): string | null
  /** The column's size in UTF-8 bytes; -1 for NULL */
  byteLength(column: number): number
  /** The column's first byte; -1 for NULL or empty */
  firstByte(column: number): number
  /** Writes the column's UTF-8 bytes (not NULL) into `target` at `at`, which has room; returns their count. */
  copy(column: number, target: Buffer, at: number): number
}

/**
 * Runs a statement whose columns are all text and hands each row to `onRow` as it arrives: a large
 * result is never held whole, so its values die young (V8 copies every young object still alive
 * at a scavenge, and a held 1 MB page is copied many times over). Text columns only, so that both
 * drivers hand over the same values without parsing them. An exception from `onRow` stops the
 * rows and rejects once the statement is over.
 */
export type EachRow = (
  sql: string,
  parameters: readonly unknown[],
  onRow: (row: Row) => void,
) => Promise<void>

/** A Row over values already decoded into strings (drivers other than WireClient). */
export class TextRow implements Row {
  values: readonly (string | null)[] = []

  text(column: number): string | null {
    return this.values[column] ?? null
  }

  byteLength(column: number): number {
    const value = this.values[column] ?? null
    return value === null ? -1 : Buffer.byteLength(value)
  }

  firstByte(column: number): number {
    const value = this.values[column] ?? null
    if (!value) return -1
    const unit = value.charCodeAt(0)
    return unit < 0x80 ? unit : Buffer.from(value.slice(0, 2))[0]!
  }

  copy(column: number, target: Buffer, at: number): number {
    return target.write(this.values[column]!, at, 'utf8')
  }
}

/** A database to read rows from one by one; `Db` is one, `rowsVia` makes one of any Kysely. */
export interface RowReader {
  readonly kysely: Kysely<Database>
  readonly eachRow: EachRow
}

/**
 * EachRow over any Kysely (the embedded database, a transaction's caller): the rows come all at
 * once, then go to `onRow` in order. For callers that read a few rows, or cannot stream.
 */
export function rowsVia(kysely: Kysely<Database>): RowReader {
  return {
    kysely,
    eachRow: async (sql, parameters, onRow) => {
      const { rows } = await kysely.executeQuery(CompiledQuery.raw(sql, [...parameters]))
      const row = new TextRow()
      for (const values of rows) {
        row.values = Object.values(values as object) as (string | null)[]
        onRow(row)
      }
    },
  }
}
