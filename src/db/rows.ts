import { CompiledQuery, type Kysely } from 'kysely'

import type { Database } from './database.ts'

/**
 * Runs a statement whose columns are all text and hands each row to `onRow` as its columns' values
 * (null for NULL), as the row arrives: a large result is never held whole, so its values die young
 * (V8 copies every young object still alive at a scavenge, and a held 1 MB page is copied many
 * times over). Text columns only, so that both drivers hand over the same values without parsing
 * them. An exception from `onRow` stops the rows and rejects once the statement is over.
 */
export type EachRow = (
  sql: string,
  parameters: readonly unknown[],
  onRow: (row: readonly (string | null)[]) => void,
) => Promise<void>

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
      for (const row of rows) onRow(Object.values(row as object) as (string | null)[])
    },
  }
}
