import { type RawBuilder, sql } from 'kysely'

import type { Sealer } from '../crypto.ts'
import type { Row } from '../db/rows.ts'

/**
 * A record as the page query returns it (`recordRow`), by column: its stored JSON text, and the
 * metadata's parts as short texts, from which PageWriter writes `_nango_metadata` and the cursor.
 * Timestamps are their JSON text as Postgres writes it, `"2024-03-27T15:10:27.123456+00:00"` in
 * UTC. All NULL in the page statement's row for the dataset (src/records/read.ts), which
 * PageWriter skips.
 */
export const RecordColumn = {
  /** The stored (possibly sealed) JSON text; `{"id":...}` once pruned */
  json: 0,
  /** The internal id, in decimal */
  id: 1,
  modifiedAt: 2,
  /** NULL when it equals modifiedAt (the record was added by its last change) */
  firstSeenAt: 3,
  deletedAt: 4,
  prunedAt: 5,
} as const

/** The timestamps of a record, or of a run of records that share them */
interface Times {
  modifiedAt: string | null
  firstSeenAt: string | null
  deletedAt: string | null
  prunedAt: string | null
}

/** A timestamp's JSON text, or NULL when it is NULL. */
const jsonTime = (column: RawBuilder<unknown>) =>
  sql<string | null>`CASE WHEN ${column} IS NOT NULL THEN to_json(${column})::text END`

/**
 * The RecordColumn columns of the record row `alias`, in their order. Postgres sends the parts,
 * not the rendered metadata: rendering it took Postgres about as long as the rest of the page
 * query (string functions per record), and its ~230 bytes a record brought a 100-record page near
 * the size past which Postgres waits for its reader to drain the socket. Records written together
 * share their timestamps, so PageWriter renders the metadata once for a run of them.
 */
export function recordRow(alias: string): RawBuilder<unknown> {
  const r = (column: string) => sql.ref(`${alias}.${column}`)
  return sql`
    coalesce(${r('payload')}, '{"id":' || to_json(${r('external_id')})::text || '}') AS json,
    ${r('id')}::text AS id,
    ${jsonTime(r('last_modified_at'))} AS modified_at,
    CASE WHEN ${r('first_seen_at')} <> ${r('last_modified_at')} THEN to_json(${r('first_seen_at')})::text END
      AS first_seen_at,
    ${jsonTime(r('deleted_at'))} AS deleted_at,
    ${jsonTime(r('pruned_at'))} AS pruned_at`
}

const OPEN = '{"next_cursor":'
const RECORDS = ',"records":['
const CLOSE = ']}'
const RECORD_END = '"}}'
const COMMA = 0x2c
const OPEN_BRACE = 0x7b

/** Records are written into chunks of this size, kept for the next page once the body is joined. */
const CHUNK_BYTES = 64 * 1024
const SPARE_CHUNKS = 64
/** Records of at most this many UTF-16 units are written without measuring their UTF-8 size first. */
const SMALL_RECORD_UNITS = CHUNK_BYTES / 16
const spare: Buffer[] = []

/**
 * Large bodies are written into buffers that come back once the response has gone out
 * (recycleBody). Reading a page allocates almost nothing on V8's heap but these buffers (the
 * payloads are copied as bytes), so young collections come seldom, and buffers freed only by them
 * piled up until V8 answered with full collections of the heap (160 against 5 in an in-process
 * run of about 13,000 pages, before the pool and src/db/wire.ts's reused read buffer).
 */
const POOLED_BODY_BYTES = 32 * 1024
const BODY_CAPACITY_STEP = 16 * 1024
const POOL_BYTES = 8 * 1024 * 1024
const bodies: ArrayBuffer[] = []
let pooledBytes = 0
/** Buffers handed out by bodyBuffer and not yet handed back */
const lent = new WeakSet<ArrayBufferLike>()

/** A buffer of exactly `size` bytes for a body: a pooled one at most twice as large, or a new one. */
function bodyBuffer(size: number): Buffer {
  if (size < POOLED_BODY_BYTES) return Buffer.allocUnsafe(size)
  let best = -1
  for (let i = 0; i < bodies.length; i++) {
    const capacity = bodies[i]!.byteLength
    if (capacity >= size && capacity <= 2 * size && (best < 0 || capacity < bodies[best]!.byteLength)) {
      best = i
    }
  }
  let buffer: ArrayBuffer
  if (best >= 0) {
    buffer = bodies[best]!
    bodies[best] = bodies[bodies.length - 1]!
    bodies.pop()
    pooledBytes -= buffer.byteLength
  } else {
    buffer = Buffer.allocUnsafeSlow(Math.ceil(size / BODY_CAPACITY_STEP) * BODY_CAPACITY_STEP).buffer
  }
  lent.add(buffer)
  return Buffer.from(buffer, 0, size)
}

/**
 * Hands a body PageWriter wrote back for a later page, once nothing will read it again (its
 * response has gone out, or its socket closed). A body handed back twice, or not PageWriter's, is
 * ignored.
 */
export function recycleBody(body: Buffer): void {
  const buffer = body.buffer
  if (!lent.delete(buffer) || pooledBytes + buffer.byteLength > POOL_BYTES) return
  bodies.push(buffer as ArrayBuffer)
  pooledBytes += buffer.byteLength
}

const BASE64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/')
const PAD = 0x3d

/** Bytes of the standard base64 (padded) of `length` bytes */
const base64Length = (length: number) => 4 * Math.ceil(length / 3)

/**
 * Writes the standard base64 (padded, one line) of the latin1 text `text` into `out` at `at`, as
 * `Buffer.from(text, 'latin1').toString('base64')` would, without the two objects; returns the end.
 */
function writeBase64(text: string, out: Buffer, at: number): number {
  const n = text.length
  let i = 0
  for (; i + 2 < n; i += 3) {
    const v = (text.charCodeAt(i) << 16) | (text.charCodeAt(i + 1) << 8) | text.charCodeAt(i + 2)
    out[at++] = BASE64[v >> 18]!
    out[at++] = BASE64[(v >> 12) & 63]!
    out[at++] = BASE64[(v >> 6) & 63]!
    out[at++] = BASE64[v & 63]!
  }
  if (i < n) {
    const two = i + 1 < n
    const v = (text.charCodeAt(i) << 16) | (two ? text.charCodeAt(i + 1) << 8 : 0)
    out[at++] = BASE64[v >> 18]!
    out[at++] = BASE64[(v >> 12) & 63]!
    out[at++] = two ? BASE64[(v >> 6) & 63]! : PAD
    out[at++] = PAD
  }
  return at
}

/**
 * Writes a page body `{"next_cursor": ..., "records": [...]}` (Nango's key order) from its rows as
 * they arrive: each record goes into a chunk and its strings are dropped, then `body()` joins the
 * chunks behind the `next_cursor` (the last record's cursor, known only at the end). Each record
 * is its payload, opened here (Postgres cannot), without its closing brace, then
 * `,"_nango_metadata":{...,"cursor":"<base64 of last_modified_at||id>"}}`; the metadata up to the
 * cursor is rendered once for each run of records that share their timestamps.
 */
export class PageWriter {
  /** Records written */
  count = 0
  /** A record past the last one written was read (the limit, or the byte budget, cut the page). */
  hasMore = false
  /** What the last record's cursor encodes */
  private lastCursor = ''
  /** nextCursor(), once asked (the body and readPage both want it; no record is added after) */
  private next: string | undefined
  /** The metadata of the last run of records, up to the cursor's opening quote, and its parts */
  private meta = ''
  private metaOf: Times = {
    modifiedAt: null,
    firstSeenAt: null,
    deletedAt: null,
    prunedAt: null,
  }
  /** `<last_modified_at>||` of that run, the start of each of its cursors */
  private cursorStart = ''
  /** Filled chunks and the bytes written in each */
  private readonly chunks: { chunk: Buffer; used: number }[] = []
  private chunk: Buffer | undefined
  private at = 0
  private bytes = 0

  constructor(
    private readonly limit: number,
    private readonly sealer: Sealer,
  ) {}

  /**
   * The next row in cursor order (RecordColumn's columns; a row whose id is NULL is skipped);
   * `fits` false means the byte budget ended the page before it.
   */
  add(row: Row, fits: boolean): void {
    if (this.hasMore || row.byteLength(RecordColumn.id) < 0) return
    if (this.count === this.limit || !fits) {
      this.hasMore = true
      return
    }
    const meta = this.metaFor(
      row.text(RecordColumn.modifiedAt),
      row.text(RecordColumn.firstSeenAt),
      row.text(RecordColumn.deletedAt),
      row.text(RecordColumn.prunedAt),
    )
    const cursor = this.cursorStart + row.text(RecordColumn.id)!
    // A stored payload is copied as the bytes Postgres sent: JSON text starts with `{`, a sealed
    // payload with `enc:` (crypto.ts) and is opened first.
    const opened =
      row.firstByte(RecordColumn.json) === OPEN_BRACE ? null : this.sealer.open(row.text(RecordColumn.json)!)
    // A small opened record asks for room for its worst case (3 bytes a UTF-16 unit) rather than
    // being measured: measuring reads the whole text once more.
    const jsonBytes =
      opened === null
        ? row.byteLength(RecordColumn.json)
        : opened.length <= SMALL_RECORD_UNITS
          ? opened.length * 3
          : Buffer.byteLength(opened)
    const chunk = this.room(1 + jsonBytes + meta.length + base64Length(cursor.length) + RECORD_END.length)
    let at = this.at
    if (this.count > 0) chunk[at++] = COMMA
    // Its closing brace dropped (RECORD_END closes it); meta and the cursor are ASCII.
    at += (opened === null ? row.copy(RecordColumn.json, chunk, at) : chunk.write(opened, at, 'utf8')) - 1
    at += chunk.write(meta, at, 'latin1')
    at = writeBase64(cursor, chunk, at)
    at += chunk.write(RECORD_END, at, 'latin1')
    this.bytes += at - this.at
    this.at = at
    this.count++
    this.lastCursor = cursor
  }

  /** `,"_nango_metadata":{...,"cursor":"` of a record: the last run's, or a new run's. */
  private metaFor(
    modifiedAt: string | null,
    firstSeenAt: string | null,
    deletedAt: string | null,
    prunedAt: string | null,
  ): string {
    const last = this.metaOf
    if (
      modifiedAt === last.modifiedAt &&
      firstSeenAt === last.firstSeenAt &&
      deletedAt === last.deletedAt &&
      prunedAt === last.prunedAt
    ) {
      return this.meta
    }
    const action = deletedAt !== null ? 'DELETED' : firstSeenAt === null ? 'ADDED' : 'UPDATED'
    this.metaOf = { modifiedAt, firstSeenAt, deletedAt, prunedAt }
    this.cursorStart = `${modifiedAt!.slice(1, -1)}||`
    this.meta =
      `,"_nango_metadata":{"first_seen_at":${firstSeenAt ?? modifiedAt},"last_modified_at":${modifiedAt}` +
      `,"last_action":"${action}","deleted_at":${deletedAt ?? 'null'},"pruned_at":${prunedAt ?? 'null'}` +
      ',"cursor":"'
    return this.meta
  }

  /** The body's `next_cursor`: the last record's cursor when more records follow it. */
  nextCursor(): string | null {
    if (!this.hasMore || this.count === 0) return null
    return (this.next ??= Buffer.from(this.lastCursor, 'latin1').toString('base64'))
  }

  /** The whole body, in one buffer of its exact size. */
  body(): Buffer {
    const next = this.nextCursor()
    const head = OPEN + (next === null ? 'null' : `"${next}"`) + RECORDS
    const body = bodyBuffer(head.length + this.bytes + CLOSE.length)
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
