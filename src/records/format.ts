import { type RawBuilder, sql } from 'kysely'

import type { Sealer } from '../crypto.ts'

/**
 * A record as Postgres renders it for a GET /records page (`recordText`): the body splices its
 * stored JSON text (`id` first) without the closing brace, then `meta`, `cursor` and `"}}`, so each
 * record reads `{...,"_nango_metadata":{..., "cursor":"..."}}` in Nango's key order. All null for
 * the row of NULLs an empty page reads as.
 */
export interface RecordText {
  /** The stored (possibly sealed) JSON text; `{"id":...}` once pruned */
  json: string | null
  /** `,"_nango_metadata":{"first_seen_at":...,"cursor":"` */
  meta: string | null
  cursor: string | null
}

/** Nulls stay SQL NULL; a timestamp is its JSON text, `"2024-03-27T15:10:27.123456+00:00"` in UTC. */
const jsonTime = (column: RawBuilder<unknown>) => sql<string>`coalesce(to_json(${column})::text, 'null')`

/**
 * The RecordText columns of the record row `alias`. A cursor is standard base64 of
 * `<last_modified_at>||<id>` (cursor.ts), 50 bytes at most, so encode() never breaks it into lines
 * (it does past 76 characters).
 */
export function recordText(alias: string): RawBuilder<RecordText> {
  const r = (column: string) => sql.ref(`${alias}.${column}`)
  return sql<RecordText>`
    coalesce(${r('payload')}, '{"id":' || to_json(${r('external_id')})::text || '}') AS json,
    concat(
      ',"_nango_metadata":{"first_seen_at":', ${jsonTime(r('first_seen_at'))},
      ',"last_modified_at":', ${jsonTime(r('last_modified_at'))},
      ',"last_action":"',
      CASE WHEN ${r('deleted_at')} IS NOT NULL THEN 'DELETED'
           WHEN ${r('first_seen_at')} = ${r('last_modified_at')} THEN 'ADDED' ELSE 'UPDATED' END,
      '","deleted_at":', ${jsonTime(r('deleted_at'))},
      ',"pruned_at":', ${jsonTime(r('pruned_at'))},
      ',"cursor":"'
    ) AS meta,
    encode(convert_to(btrim(to_json(${r('last_modified_at')})::text, '"') || '||' || ${r('id')}, 'UTF8'), 'base64')
      AS cursor`
}

const OPEN = '{"next_cursor":'
const RECORDS = ',"records":['
const CLOSE = ']}'
const RECORD_END = '"}}'
const COMMA = 0x2c

/** Records are written into chunks of this size, kept for the next page once the body is joined. */
const CHUNK_BYTES = 64 * 1024
const SPARE_CHUNKS = 64
const spare: Buffer[] = []

/**
 * Writes a page body `{"next_cursor": ..., "records": [...]}` (Nango's key order) from its rows as
 * they arrive: each record goes into a chunk and its strings are dropped, then `body()` joins the
 * chunks behind the `next_cursor` (the last record's cursor, known only at the end). Payloads are
 * opened here, the one step Postgres cannot take for us.
 */
export class PageWriter {
  /** Records written */
  count = 0
  /** A record past the last one written was read (the limit, or the byte budget, cut the page). */
  hasMore = false
  private lastCursor = ''
  /** Filled chunks and the bytes written in each */
  private readonly chunks: { chunk: Buffer; used: number }[] = []
  private chunk: Buffer | undefined
  private at = 0
  private bytes = 0

  constructor(
    private readonly limit: number,
    private readonly sealer: Sealer,
  ) {}

  /** The next row in cursor order; `fits` false means the byte budget ended the page before it. */
  add(text: RecordText, fits: boolean): void {
    if (text.cursor === null || this.hasMore) return
    if (this.count === this.limit || !fits) {
      this.hasMore = true
      return
    }
    const json = this.sealer.open(text.json!)
    const meta = text.meta!
    // A comma before it, its closing brace dropped (RECORD_END closes it); meta and the cursor are ASCII.
    const size = Buffer.byteLength(json) + meta.length + text.cursor.length + RECORD_END.length
    const chunk = this.room(size)
    let at = this.at
    if (this.count > 0) chunk[at++] = COMMA
    at += chunk.write(json, at, 'utf8') - 1
    at += chunk.write(meta, at, 'latin1')
    at += chunk.write(text.cursor, at, 'latin1')
    at += chunk.write(RECORD_END, at, 'latin1')
    this.bytes += at - this.at
    this.at = at
    this.count++
    this.lastCursor = text.cursor
  }

  /** The whole body, in one buffer of its exact size. */
  body(): Buffer {
    const next = this.hasMore && this.count > 0 ? `"${this.lastCursor}"` : 'null'
    const head = OPEN + next + RECORDS
    const body = Buffer.allocUnsafe(head.length + this.bytes + CLOSE.length)
    let at = body.write(head, 0, 'latin1')
    this.seal()
    for (const { chunk, used } of this.chunks) {
      at += chunk.copy(body, at, 0, used)
      if (chunk.length === CHUNK_BYTES && spare.length < SPARE_CHUNKS) spare.push(chunk)
    }
    this.chunks.length = 0
    at += body.write(CLOSE, at, 'latin1')
    if (at !== body.length) throw new Error(`GET /records body: wrote ${at} bytes of ${body.length}`)
    return body
  }

  /** A chunk with `size` bytes free: the current one, a spare, or a new one. */
  private room(size: number): Buffer {
    if (this.chunk && this.chunk.length - this.at >= size) return this.chunk
    this.seal()
    this.chunk =
      size <= CHUNK_BYTES ? (spare.pop() ?? Buffer.allocUnsafe(CHUNK_BYTES)) : Buffer.allocUnsafe(size)
    this.at = 0
    return this.chunk
  }

  private seal(): void {
    if (!this.chunk) return
    this.chunks.push({ chunk: this.chunk, used: this.at })
    this.chunk = undefined
  }
}
