import { type RawBuilder, sql } from 'kysely'

import type { Sealer } from '../crypto.ts'
import { PREPARED } from '../db/prepared.ts'
import type { RowReader } from '../db/rows.ts'
import type { Queryable } from '../db/database.ts'
import type { CursorPosition } from './cursor.ts'
import { PageWriter, RecordColumn, recordRow } from './format.ts'

export type Action = 'added' | 'updated' | 'deleted'

export interface PageQuery {
  after?: CursorPosition | undefined
  /** RFC 3339; records modified at or after it */
  modifiedAfter?: string | undefined
  /** Records whose last action is one of these (all when empty) */
  actions?: ReadonlySet<Action> | undefined
  externalIds?: readonly string[] | undefined
  limit: number
  /** The page stops before the record that would take it past this many bytes (never before the first). */
  maxBytes: number
}

/** One page as its GET /records body. */
export interface Page {
  /** `{"next_cursor": ..., "records": [...]}`, UTF-8 */
  body: Buffer
  /** Records in the body */
  count: number
  /** More records follow the last one returned (next_cursor is then set). */
  hasMore: boolean
  /** The body's `next_cursor` */
  nextCursor: string | null
  /** The dataset's largest record (`datasets.max_size_bytes`) when the page was read; 0 when empty. */
  maxRecordBytes: number
  /** The dataset's change mark (migrations/0015) in the page's snapshot; null for no dataset. */
  mark: string | null
}

function actionFilter(actions: ReadonlySet<Action> | undefined): RawBuilder<boolean> | undefined {
  if (!actions || actions.size === 0 || actions.size === 3) return undefined
  const clauses = [...actions].map((action) =>
    action === 'deleted'
      ? sql`r.deleted_at IS NOT NULL`
      : action === 'added'
        ? sql`(r.deleted_at IS NULL AND r.first_seen_at = r.last_modified_at)`
        : sql`(r.deleted_at IS NULL AND r.first_seen_at <> r.last_modified_at)`,
  )
  return sql<boolean>`(${sql.join(clauses, sql` OR `)})`
}

/** A dataset named the way the API names it: by the connection's public identifiers. */
export interface PageTarget {
  environmentId: number
  providerConfigKey: string
  connectionId: string
  model: string
  variant: string
}

/**
 * The page statement's inputs, each named once. The statement is compiled once per shape (which
 * filters a request uses) with a slot in place of each value; a request then fills the slots in
 * the compiled order, with no query built and no SQL text hashed per request.
 */
interface PageInputs {
  environmentId: number
  providerConfigKey: string
  connectionId: string
  model: string
  variant: string
  fetch: number
  maxBytes: number
  afterModifiedAt: string | undefined
  afterId: number | undefined
  modifiedAfter: string | undefined
  externalIds: string[] | undefined
}

/** Stands in for an input while a shape's statement compiles; `compiled.parameters` holds them in order. */
class Slot {
  constructor(readonly input: keyof PageInputs) {}
}

const slot = (input: keyof PageInputs) => sql`${new Slot(input)}`

function conditions(q: PageQuery): RawBuilder<boolean> {
  const all = [
    sql`r.connection_pk = d.connection_pk`,
    sql`r.model = ${slot('model')}`,
    sql`r.variant = ${slot('variant')}`,
  ]
  if (q.after) {
    all.push(
      sql`(r.last_modified_at, r.id) > (${slot('afterModifiedAt')}::timestamptz, ${slot('afterId')}::bigint)`,
    )
  }
  if (q.modifiedAfter) all.push(sql`r.last_modified_at >= ${slot('modifiedAfter')}::timestamptz`)
  const actions = actionFilter(q.actions)
  if (actions) all.push(actions)
  if (q.externalIds) all.push(sql`r.external_id = any(${slot('externalIds')}::text[])`)
  return sql<boolean>`${sql.join(all, sql` AND `)}`
}

/** The page's rows as format.ts renders them, built once: the same fragment every request. */
const PAGE_RECORD = recordRow('p')

/**
 * The page statement's columns after a record's (format.ts' RecordColumn): `cut` ('f' when the
 * byte budget ended the page before the record), then the dataset's figures, set only in a row of
 * their own whose record columns are all NULL.
 */
const Column = { id: RecordColumn.id, cut: 6, maxSize: 7, mark: 8 } as const

/** A shape's statement: its SQL text and which input fills each of its parameters. */
interface PageStatement {
  sql: string
  inputs: (keyof PageInputs)[]
}

const statements = new Map<string, PageStatement>()

function shapeOf(q: PageQuery): string {
  const actions = q.actions && q.actions.size > 0 && q.actions.size < 3 ? [...q.actions].sort().join('+') : ''
  return `${q.after ? 'a' : ''}|${q.modifiedAfter ? 'm' : ''}|${actions}|${q.externalIds ? 'i' : ''}`
}

function pageStatement(db: RowReader, q: PageQuery): PageStatement {
  const shape = shapeOf(q)
  let statement = statements.get(shape)
  if (!statement) {
    const compiled = pageQuery(q).compile(db.kysely)
    statement = { sql: compiled.sql, inputs: compiled.parameters.map((p) => (p as Slot).input) }
    statements.set(shape, statement)
  }
  return statement
}

function pageQuery(q: PageQuery): RawBuilder<unknown> {
  const where = conditions(q)
  // bigint: a dataset's largest record times the rows fetched passes 2^31 from 2 MiB records at
  // limit 1000, and Postgres would refuse an integer product (22003) rather than page.
  const small = sql<boolean>`d.max_size::bigint * ${slot('fetch')} <= ${slot('maxBytes')}`
  return sql`${sql.raw(PREPARED)}
    WITH d AS (
      SELECT c.id AS connection_pk, coalesce(ds.max_size_bytes, 0) AS max_size, ds.change_mark AS mark
      FROM connections c
      LEFT JOIN datasets ds ON ds.connection_pk = c.id AND ds.model = ${slot('model')} AND ds.variant = ${slot('variant')}
      WHERE c.environment_id = ${slot('environmentId')} AND c.provider_config_key = ${slot('providerConfigKey')}
        AND c.connection_id = ${slot('connectionId')}
    ),
    p AS (
      SELECT p.*, true AS fits
      FROM d LEFT JOIN LATERAL (
        SELECT r.id, r.external_id, r.payload, r.first_seen_at, r.last_modified_at, r.deleted_at, r.pruned_at
        FROM records r
        WHERE ${small} AND ${where}
        ORDER BY r.last_modified_at, r.id
        LIMIT ${slot('fetch')}
      ) p ON true
      WHERE ${small}
      UNION ALL
      SELECT p.id, p.external_id, CASE WHEN p.fits THEN p.payload END, p.first_seen_at, p.last_modified_at,
             p.deleted_at, p.pruned_at, p.fits
      FROM d LEFT JOIN LATERAL (
        SELECT w.*, w.running <= ${slot('maxBytes')} OR w.running = w.size_bytes AS fits
        FROM (
          SELECT r.id, r.external_id, r.payload, r.first_seen_at, r.last_modified_at, r.deleted_at, r.pruned_at,
                 r.size_bytes, sum(r.size_bytes) OVER (ORDER BY r.last_modified_at, r.id ROWS UNBOUNDED PRECEDING) AS running,
                 row_number() OVER (ORDER BY r.last_modified_at, r.id) AS rn
          FROM records r
          WHERE NOT ${small} AND ${where}
          ORDER BY r.last_modified_at, r.id
          LIMIT ${slot('fetch')}
        ) w
        -- Every row whose predecessors all fit; the second always comes, since the first fits even when
        -- it alone is over the budget.
        WHERE w.running - w.size_bytes <= ${slot('maxBytes')} OR w.rn <= 2
      ) p ON true
      WHERE NOT ${small}
    )
    -- Text columns only: both drivers hand text to eachRow as it is. Each value costs Node a string,
    -- so a record's row carries only what is not NULL ('f' where the byte budget cut the page), and the
    -- dataset's figures come once, in a row of their own, which also says the connection exists.
    SELECT ${PAGE_RECORD}, CASE WHEN NOT p.fits THEN 'f' END AS cut, NULL AS max_size, NULL AS mark
    FROM p WHERE p.id IS NOT NULL
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.max_size::text, d.mark::text FROM d`
}

/**
 * One page of a dataset in cursor order, rendered as its body, in one prepared statement: the
 * connection lookup and the keyset scan share one round trip. Returns null when the connection does
 * not exist in the environment.
 *
 * Postgres sends each record's payload and its metadata's parts (format.ts' RecordColumn), and Node
 * writes the record into the body's buffer as its row arrives (`eachRow`): Node handles a few
 * short-lived strings a record, never holds the page's rows (a held page is copied by every
 * scavenge), and never builds the page as one string (V8 makes strings past ~128 KiB slowly).
 * Together these took Node's CPU for a 1,000-record page from 15.6 ms to 4.0 ms; sending the parts
 * instead of Postgres' rendering took a 100-record page read in-process from 0.63-0.74 to
 * 0.47-0.50 ms, a 1,000-record one from 6.3-7.5 to 2.9-3.4 ms. From Postgres (src/db/wire.ts) the
 * payload is copied from the protocol message as bytes, never decoded into a string, and the
 * socket reads into one buffer: 100-record pages read in-process by two readers took 0.141-0.148
 * ms of CPU each against 0.182-0.220 ms through pg's parser.
 *
 * The byte budget: while (limit + 1) x the dataset's largest record fits it, the page is a plain
 * keyset scan. Otherwise a running byte total bounds the page inside Postgres, so a page of huge
 * records is never read whole, and the first row past the budget comes back without its payload,
 * as proof there is more. Only one branch executes (the other's one-time filter is false); the
 * running total costs as much as the scan itself, so small records never pay for it.
 */
export async function readPage(
  db: RowReader,
  sealer: Sealer,
  target: PageTarget,
  q: PageQuery,
): Promise<Page | null> {
  const statement = pageStatement(db, q)
  const inputs: PageInputs = {
    ...target,
    fetch: q.limit + 1,
    maxBytes: q.maxBytes,
    afterModifiedAt: q.after?.modifiedAt,
    afterId: q.after?.id,
    modifiedAfter: q.modifiedAfter,
    externalIds: q.externalIds && [...q.externalIds],
  }
  const values = statement.inputs.map((input) => inputs[input])

  const page = new PageWriter(q.limit, sealer)
  let maxRecordBytes: string | undefined
  let mark: string | null = null
  await db.eachRow(statement.sql, values, (row) => {
    if (row.byteLength(Column.id) < 0) {
      maxRecordBytes = row.text(Column.maxSize)!
      mark = row.text(Column.mark)
    } else {
      page.add(row, row.byteLength(Column.cut) < 0)
    }
  })
  if (maxRecordBytes === undefined) return null
  return {
    body: page.body(),
    count: page.count,
    hasMore: page.hasMore,
    nextCursor: page.nextCursor(),
    maxRecordBytes: Number(maxRecordBytes),
    mark,
  }
}

const MARK_STATEMENT = `${PREPARED}
  SELECT ds.change_mark::text AS mark
  FROM connections c
  JOIN datasets ds ON ds.connection_pk = c.id AND ds.model = $4 AND ds.variant = $5
  WHERE c.environment_id = $1 AND c.provider_config_key = $2 AND c.connection_id = $3`

/**
 * The dataset's change mark now (migrations/0015), as readPage returns it: null when the dataset or
 * its connection does not exist.
 */
export async function datasetMark(db: RowReader, target: PageTarget): Promise<string | null> {
  let mark: string | null = null
  const { environmentId, providerConfigKey, connectionId, model, variant } = target
  await db.eachRow(
    MARK_STATEMENT,
    [environmentId, providerConfigKey, connectionId, model, variant],
    (row) => {
      mark = row.text(0)
    },
  )
  return mark
}

/**
 * The dataset's largest record (`datasets.max_size_bytes`), to size a page before reading it; 0 for
 * a dataset that does not exist (yet), or a connection that does not.
 */
export async function largestRecordBytes(db: Queryable, target: PageTarget): Promise<number> {
  const row = await db
    .selectFrom('connections as c')
    .innerJoin('datasets as ds', 'ds.connection_pk', 'c.id')
    .select('ds.max_size_bytes')
    .where('c.environment_id', '=', target.environmentId)
    .where('c.provider_config_key', '=', target.providerConfigKey)
    .where('c.connection_id', '=', target.connectionId)
    .where('ds.model', '=', target.model)
    .where('ds.variant', '=', target.variant)
    .executeTakeFirst()
  return row?.max_size_bytes ?? 0
}
