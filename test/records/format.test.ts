import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { createSealer } from '../../src/crypto.ts'
import { type Row, TextRow } from '../../src/db/rows.ts'
import { WireRow } from '../../src/db/wire.ts'
import { encodeCursor } from '../../src/records/cursor.ts'
import { PageWriter, recycleBody } from '../../src/records/format.ts'

const plain = createSealer(null)
const T1 = '"2024-03-27T15:10:27.123456+00:00"'
const T2 = '"2024-03-28T09:00:00+00:00"'
const T3 = '"2024-03-29T23:59:59.5+00:00"'

/** A record's columns as the page statement sends them (format.ts' RecordColumn) */
interface RecordRow {
  json: string | null
  id: string | null
  modifiedAt: string | null
  firstSeenAt: string | null
  deletedAt: string | null
  prunedAt: string | null
}

const columns = (r: RecordRow) => [r.json, r.id, r.modifiedAt, r.firstSeenAt, r.deletedAt, r.prunedAt]

/** The row as strings (the embedded database's driver) */
function textRow(r: RecordRow): Row {
  const row = new TextRow()
  row.values = columns(r)
  return row
}

/** The row as a DataRow message (Postgres' protocol), read in place at an offset into a larger buffer */
function wireRow(r: RecordRow): Row {
  const values = columns(r).map((v) => (v === null ? null : Buffer.from(v)))
  const parts = [Buffer.from('junk'), Buffer.alloc(2)]
  parts[1]!.writeInt16BE(values.length)
  for (const value of values) {
    const length = Buffer.alloc(4)
    length.writeInt32BE(value === null ? -1 : value.length)
    parts.push(length, ...(value ? [value] : []))
  }
  const row = new WireRow()
  row.read(Buffer.concat([...parts, Buffer.from('more junk')]), 4)
  return row
}

/** A row as Postgres sends it, for a record of `fields` (id first), added at T1 unless `times` say otherwise. */
const row = (
  id: number | string,
  fields: Record<string, unknown>,
  times: Partial<Omit<RecordRow, 'json' | 'id'>> = {},
): RecordRow => ({
  json: JSON.stringify({ id: String(id), ...fields }),
  id: String(id),
  modifiedAt: T1,
  firstSeenAt: null,
  deletedAt: null,
  prunedAt: null,
  ...times,
})

/** The record GET /records returns for a row, built without PageWriter's code. */
function record(r: RecordRow) {
  const time = (t: string | null) => (t === null ? null : (JSON.parse(t) as string))
  return {
    ...(JSON.parse(r.json!) as object),
    _nango_metadata: {
      first_seen_at: time(r.firstSeenAt ?? r.modifiedAt),
      last_modified_at: time(r.modifiedAt),
      last_action: r.deletedAt ? 'DELETED' : r.firstSeenAt ? 'UPDATED' : 'ADDED',
      deleted_at: time(r.deletedAt),
      pruned_at: time(r.prunedAt),
      cursor: encodeCursor(time(r.modifiedAt)!, r.id!),
    },
  }
}

function expected(rows: RecordRow[], count: number, hasMore: boolean) {
  const records = rows.slice(0, count).map(record)
  return { next_cursor: hasMore ? records[count - 1]!._nango_metadata.cursor : null, records }
}

describe('PageWriter', () => {
  it('writes an empty page, and ignores the row of NULLs an empty page reads as', () => {
    const page = new PageWriter(100, plain)
    const empty = {
      json: null,
      id: null,
      modifiedAt: null,
      firstSeenAt: null,
      deletedAt: null,
      prunedAt: null,
    }
    page.add(textRow(empty), true)
    page.add(wireRow(empty), true)
    expect(page.body().toString()).toBe('{"next_cursor":null,"records":[]}')
    expect(page.count).toBe(0)
    expect(page.hasMore).toBe(false)
  })

  it("writes Nango's metadata in Nango's key order, for each kind of record", () => {
    const rows = [
      row(1, { n: 1 }),
      row(2, { n: 2 }, { firstSeenAt: T2, modifiedAt: T3 }),
      row(3, {}, { modifiedAt: T2, deletedAt: T2 }),
      row(4, {}, { modifiedAt: T2, prunedAt: T3 }),
    ]
    const page = new PageWriter(10, plain)
    for (const r of rows) page.add(wireRow(r), true)
    const body = page.body().toString()
    expect(body).toContain(
      '{"id":"2","n":2,"_nango_metadata":{"first_seen_at":"2024-03-28T09:00:00+00:00",' +
        '"last_modified_at":"2024-03-29T23:59:59.5+00:00","last_action":"UPDATED","deleted_at":null,' +
        `"pruned_at":null,"cursor":"${encodeCursor('2024-03-29T23:59:59.5+00:00', 2)}"}}`,
    )
    expect(JSON.parse(body)).toEqual(expected(rows, 4, false))
  })

  it('stops at the limit or at the first row past the byte budget, and then names the next cursor', () => {
    const rows = [1, 2, 3].map((id) => row(id, { n: id }))
    const byLimit = new PageWriter(2, plain)
    for (const r of rows) byLimit.add(textRow(r), true)
    expect(JSON.parse(byLimit.body().toString())).toEqual(expected(rows, 2, true))

    const byBudget = new PageWriter(10, plain)
    byBudget.add(wireRow(rows[0]!), true)
    byBudget.add(wireRow(rows[1]!), false)
    byBudget.add(wireRow(rows[2]!), true)
    expect(JSON.parse(byBudget.body().toString())).toEqual(expected(rows, 1, true))
  })

  it.each([
    ['strings', textRow],
    ['protocol messages', wireRow],
  ])('opens sealed payloads, and copies plain ones beside them (%s)', (_, as) => {
    const sealer = createSealer(Buffer.alloc(32, 7))
    const rows = [row(1, { secret: 'é' }), row(2, { plain: 'ü' })]
    const page = new PageWriter(10, sealer)
    page.add(as({ ...rows[0]!, json: sealer.seal(rows[0]!.json!) }), true)
    page.add(as(rows[1]!), true)
    expect(JSON.parse(page.body().toString())).toEqual(expected(rows, 2, false))
  })

  it('reuses a large body handed back once, and never hands one buffer to two bodies at once', () => {
    const large = (n: number) => {
      const page = new PageWriter(100, plain)
      for (let id = 1; id <= 50; id++) page.add(wireRow(row(id, { n, pad: 'x'.repeat(1000) })), true)
      return page.body()
    }
    const first = large(1)
    expect(first.length).toBeGreaterThan(32 * 1024)
    recycleBody(first)
    recycleBody(first)
    const second = large(2)
    const third = large(3)
    expect(second.buffer).toBe(first.buffer)
    expect(third.buffer).not.toBe(second.buffer)
    // Each body holds its own page, whole
    expect(JSON.parse(second.toString()).records[49].n).toBe(2)
    expect(JSON.parse(third.toString()).records[0].n).toBe(3)
    recycleBody(Buffer.alloc(64 * 1024))
    recycleBody(second)
    recycleBody(third)
  })

  it('any sizes, ids and runs of timestamps, across chunk boundaries and past a chunk, byte for byte', () => {
    const text = fc.oneof(fc.string({ maxLength: 50 }), fc.string({ unit: 'grapheme', maxLength: 400 }))
    const time = fc.constantFrom(T1, T2, T3)
    const anyRow = fc
      .record({
        s: text,
        pad: fc.nat({ max: 90_000 }),
        // Every length of id, so every cursor length modulo 3 (base64 padding)
        id: fc.bigInt({ min: 1n, max: 2n ** 53n - 1n }),
        modifiedAt: time,
        firstSeenAt: fc.option(time),
        deletedAt: fc.option(time),
        prunedAt: fc.option(time),
      })
      .map(({ s, pad, id, ...times }) =>
        row(id.toString(), { s, pad: 'x'.repeat(pad % 7 === 0 ? pad : pad % 3000) }, times),
      )
    fc.assert(
      fc.property(
        fc.array(anyRow, { maxLength: 60 }),
        fc.integer({ min: 1, max: 70 }),
        fc.boolean(),
        (rows, limit, wire) => {
          const page = new PageWriter(limit, plain)
          for (const r of rows) page.add(wire ? wireRow(r) : textRow(r), true)
          const count = Math.min(limit, rows.length)
          const body = page.body()
          const want = expected(rows, count, rows.length > limit)
          // Byte for byte what JSON.stringify writes of the payload followed by the metadata
          expect(body.toString()).toBe(
            `{"next_cursor":${JSON.stringify(want.next_cursor)},"records":[` +
              want.records
                .map(
                  ({ _nango_metadata: meta }, i) =>
                    `${rows[i]!.json!.slice(0, -1)},"_nango_metadata":${JSON.stringify(meta)}}`,
                )
                .join(',') +
              ']}',
          )
          expect(JSON.parse(body.toString())).toEqual(want)
        },
      ),
      { numRuns: 80 },
    )
  })
})
