import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { Framer, type RowTap, WireRow } from '../../src/db/wire.ts'

/** A protocol message: its type, its length (counting itself), its body */
function message(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5)
  header.write(type, 0, 'latin1')
  header.writeUInt32BE(4 + body.length, 1)
  return Buffer.concat([header, body])
}

function dataRow(values: (string | null)[]): Buffer {
  const parts = [Buffer.alloc(2)]
  parts[0]!.writeInt16BE(values.length)
  for (const value of values) {
    const length = Buffer.alloc(4)
    const bytes = value === null ? null : Buffer.from(value)
    length.writeInt32BE(bytes === null ? -1 : bytes.length)
    parts.push(length, ...(bytes ? [bytes] : []))
  }
  return message('D', Buffer.concat(parts))
}

describe('Framer', () => {
  it('hands tapped DataRows over in place and everything else on in order, however the data is split and whether or not its buffer is reused', () => {
    const value = fc.option(fc.string({ unit: 'grapheme', maxLength: 300 }), { freq: 4 })
    const item = fc.oneof(
      fc.array(value, { maxLength: 5 }).map((values) => ({ row: values })),
      fc.string({ maxLength: 40 }).map((text) => ({ other: message('C', Buffer.from(text)) })),
    )
    fc.assert(
      fc.property(
        fc.array(item, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.boolean(),
        fc.boolean(),
        (items, cuts, tapped, reused) => {
          const stream = Buffer.concat(items.map((i) => ('row' in i ? dataRow(i.row) : i.other)))
          const rows: { values: (string | null)[]; passedBefore: number }[] = []
          const passed: Buffer[] = []
          const tap: RowTap = { onRow: null }
          const row = new WireRow()
          if (tapped) {
            tap.onRow = (data, start) => {
              row.read(data, start)
              const values = Array.from({ length: row.width }, (_, c) => row.text(c))
              rows.push({ values, passedBefore: Buffer.concat(passed).length })
            }
          }
          // Passed data is kept as given: with `reused`, the Framer must hand over copies.
          const framer = new Framer(tap, (data) => passed.push(reused ? data : Buffer.from(data)), reused)
          // One read buffer for every piece, overwritten after each push (a socket's `onread` buffer)
          const shared = Buffer.alloc(stream.length)
          const push = (piece: Buffer) => {
            if (!reused) return framer.push(piece)
            piece.copy(shared)
            framer.push(shared.subarray(0, piece.length))
            shared.fill(0xff)
          }
          // Split the stream at the cuts, so that messages and their headers cross pieces
          const offsets = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b)
          let from = 0
          for (const to of [...offsets, stream.length]) {
            if (to > from) push(stream.subarray(from, to))
            from = Math.max(from, to)
          }
          if (!tapped) {
            expect(Buffer.concat(passed)).toEqual(stream)
            return
          }
          const others = items.flatMap((i) => ('other' in i ? [i.other] : []))
          expect(Buffer.concat(passed)).toEqual(Buffer.concat(others))
          // Each row after exactly the messages before it
          let before = 0
          const want: typeof rows = []
          for (const i of items) {
            if ('other' in i) before += i.other.length
            else want.push({ values: i.row, passedBefore: before })
          }
          expect(rows).toEqual(want)
        },
      ),
      { numRuns: 300 },
    )
  })
})
