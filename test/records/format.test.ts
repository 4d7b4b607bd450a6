import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { createSealer } from '../../src/crypto.ts'
import { PageWriter, type RecordText } from '../../src/records/format.ts'

const plain = createSealer(null)
const META = ',"_nango_metadata":{"last_action":"ADDED","cursor":"'

/** A row as Postgres renders it, for a record of `fields` (id first). */
const row = (id: number, fields: Record<string, unknown>): RecordText => ({
  json: JSON.stringify({ id: String(id), ...fields }),
  meta: META,
  cursor: Buffer.from(`t||${id}`).toString('base64'),
})

function expected(rows: RecordText[], count: number, hasMore: boolean) {
  const records = rows.slice(0, count).map((r) => ({
    ...(JSON.parse(r.json!) as object),
    _nango_metadata: { last_action: 'ADDED', cursor: r.cursor },
  }))
  return { next_cursor: hasMore ? rows[count - 1]!.cursor : null, records }
}

describe('PageWriter', () => {
  it('writes an empty page, and ignores the row of NULLs an empty page reads as', () => {
    const page = new PageWriter(100, plain)
    page.add({ json: null, meta: null, cursor: null }, true)
    expect(page.body().toString()).toBe('{"next_cursor":null,"records":[]}')
    expect(page.count).toBe(0)
    expect(page.hasMore).toBe(false)
  })

  it('stops at the limit or at the first row past the byte budget, and then names the next cursor', () => {
    const rows = [1, 2, 3].map((id) => row(id, { n: id }))
    const byLimit = new PageWriter(2, plain)
    for (const r of rows) byLimit.add(r, true)
    expect(JSON.parse(byLimit.body().toString())).toEqual(expected(rows, 2, true))

    const byBudget = new PageWriter(10, plain)
    byBudget.add(rows[0]!, true)
    byBudget.add(rows[1]!, false)
    byBudget.add(rows[2]!, true)
    expect(JSON.parse(byBudget.body().toString())).toEqual(expected(rows, 1, true))
  })

  it('opens sealed payloads', () => {
    const sealer = createSealer(Buffer.alloc(32, 7))
    const r = row(1, { secret: 'é' })
    const page = new PageWriter(10, sealer)
    page.add({ ...r, json: sealer.seal(r.json!) }, true)
    expect(JSON.parse(page.body().toString())).toEqual(expected([r], 1, false))
  })

  it('any sizes, across chunk boundaries and past a chunk, multi-byte text included, byte for byte', () => {
    const text = fc.oneof(fc.string({ maxLength: 50 }), fc.string({ unit: 'grapheme', maxLength: 400 }))
    const fields = fc.record({ s: text, pad: fc.nat({ max: 90_000 }) }).map(({ s, pad }) => ({
      s,
      pad: 'x'.repeat(pad % 7 === 0 ? pad : pad % 3000),
    }))
    fc.assert(
      fc.property(fc.array(fields, { maxLength: 60 }), fc.integer({ min: 1, max: 70 }), (all, limit) => {
        const rows = all.map((f, i) => row(i + 1, f))
        const page = new PageWriter(limit, plain)
        for (const r of rows) page.add(r, true)
        const count = Math.min(limit, rows.length)
        const body = page.body()
        const want = expected(rows, count, rows.length > limit)
        expect(body.toString()).toBe(
          `{"next_cursor":${JSON.stringify(want.next_cursor)},"records":[` +
            rows
              .slice(0, count)
              .map((r) => `${r.json!.slice(0, -1)}${r.meta}${r.cursor}"}}`)
              .join(',') +
            ']}',
        )
        expect(JSON.parse(body.toString())).toEqual(want)
      }),
      { numRuns: 60 },
    )
  })
})
