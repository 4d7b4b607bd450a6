import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { sqlState } from '../../src/db/errors.ts'
import type { Row } from '../../src/db/rows.ts'
import { createTestDatabase, type TestDatabase, testDatabaseKind } from '../helpers/database.ts'

/**
 * Db.eachRow: rows as they arrive (on Postgres straight from the protocol messages, src/db/wire.ts),
 * and a connection that goes on working after a statement failed among its rows or its reader threw.
 * One connection in the pool, so every statement here runs on the same one.
 */

let t: TestDatabase
beforeAll(async () => {
  t = await createTestDatabase({ poolMax: 1 })
})
afterAll(() => t.destroy())

const values = (row: Row, width: number) => Array.from({ length: width }, (_, c) => row.text(c))

describe('eachRow', () => {
  it('hands each column as text, as UTF-8 bytes and as its first byte, NULL as null', async () => {
    const rows: unknown[] = []
    await t.db.eachRow(
      `SELECT g::text, CASE WHEN g % 2 = 0 THEN repeat('é', g) END, '{"a":' || g || '}'
       FROM generate_series(1, 4) g`,
      [],
      (row) => {
        const bytes = Buffer.alloc(Math.max(0, row.byteLength(1)))
        if (row.byteLength(1) >= 0) expect(row.copy(1, bytes, 0)).toBe(bytes.length)
        rows.push([values(row, 3), row.byteLength(1), bytes.toString(), row.firstByte(1), row.firstByte(2)])
      },
    )
    expect(rows).toEqual([
      [['1', null, '{"a":1}'], -1, '', -1, 0x7b],
      [['2', 'éé', '{"a":2}'], 4, 'éé', 0xc3, 0x7b],
      [['3', null, '{"a":3}'], -1, '', -1, 0x7b],
      [['4', 'éééé', '{"a":4}'], 8, 'éééé', 0xc3, 0x7b],
    ])
  })

  it('rejects a statement that fails among its rows with its SQLSTATE, and the connection reads on', async () => {
    const seen: string[] = []
    const failing = t.db.eachRow(
      `SELECT (100 / (50 - g))::text FROM generate_series(1, 100) g`,
      [],
      (row) => void seen.push(row.text(0)!),
    )
    await expect(failing).rejects.toSatisfy((err) => sqlState(err) === '22012')
    // Postgres sends the rows before the failing one; the embedded database fails the whole statement.
    if (testDatabaseKind === 'postgres') expect(seen.length).toBeGreaterThan(0)
    const after: (string | null)[][] = []
    await t.db.eachRow(`SELECT 'next', g::text FROM generate_series(1, 3) g`, [], (row) => {
      after.push(values(row, 2))
    })
    expect(after).toEqual([
      ['next', '1'],
      ['next', '2'],
      ['next', '3'],
    ])
    expect(await t.db.kysely.selectNoFrom((eb) => eb.lit(7).as('n')).executeTakeFirst()).toEqual({ n: 7 })
  })

  it("rejects with its reader's error once the statement is over, and the connection reads on", async () => {
    let calls = 0
    const boom = new Error('reader failed')
    const failing = t.db.eachRow(`SELECT g::text FROM generate_series(1, 1000) g`, [], () => {
      calls++
      if (calls === 3) throw boom
    })
    await expect(failing).rejects.toBe(boom)
    expect(calls).toBe(3)
    let last: string | null = null
    await t.db.eachRow(`SELECT g::text FROM generate_series(1, 500) g`, [], (row) => {
      last = row.text(0)
    })
    expect(last).toBe('500')
    expect(await t.db.kysely.selectNoFrom((eb) => eb.lit(8).as('n')).executeTakeFirst()).toEqual({ n: 8 })
  })
})
