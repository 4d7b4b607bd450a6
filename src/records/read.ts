import { type RawBuilder, sql } from 'kysely'

import type { Sealer } from '../crypto.ts'
import { PREPARED } from '../db/prepared.ts'
import type { Queryable } from '../db/database.ts'
import type { CursorPosition } from './cursor.ts'

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

export interface RecordRow {
  id: number
  externalId: string
  /** Plain JSON text of the record, `id` first; null once pruned */
  json: string | null
  /** Postgres text of the timestamps, e.g. `2024-03-27 15:10:27.123456+00` */
  firstSeenAt: string
  lastModifiedAt: string
  deletedAt: string | null
  prunedAt: string | null
}

export interface Page {
  records: RecordRow[]
  /** More records follow the last one returned (next_cursor is then set). */
  hasMore: boolean
  /** The dataset's largest record (`datasets.max_size_bytes`) when the page was read; 0 when empty. */
  maxRecordBytes: number
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

function conditions(target: PageTarget, q: PageQuery): RawBuilder<boolean> {
  const all = [
    sql`r.connection_pk = d.connection_pk`,
    sql`r.model = ${target.model}`,
    sql`r.variant = ${target.variant}`,
  ]
  if (q.after) {
    all.push(sql`(r.last_modified_at, r.id) > (${q.after.modifiedAt}::timestamptz, ${q.after.id}::bigint)`)
  }
  if (q.modifiedAfter) all.push(sql`r.last_modified_at >= ${q.modifiedAfter}::timestamptz`)
  const actions = actionFilter(q.actions)
  if (actions) all.push(actions)
  if (q.externalIds) all.push(sql`r.external_id = any(${[...q.externalIds]}::text[])`)
  return sql<boolean>`${sql.join(all, sql` AND `)}`
}

/**
 * One page of a dataset in cursor order, in one prepared statement: the connection lookup and the
 * keyset scan share one round trip. Returns null when the connection does not exist in the
 * environment.
 *
 * The byte budget: while (limit + 1) x the dataset's largest record fits it, the page is a plain
 * keyset scan. Otherwise a running byte total bounds the page inside Postgres, so a page of huge
 * records is never read whole, and the first row past the budget comes back without its payload,
 * as proof there is more. Only one branch executes (the other's one-time filter is false); the
 * running total costs as much as the scan itself, so small records never pay for it.
 */
export async function readPage(
  db: Queryable,
  sealer: Sealer,
  target: PageTarget,
  q: PageQuery,
): Promise<Page | null> {
  const where = conditions(target, q)
  const fetch = q.limit + 1
  const small = sql<boolean>`d.max_size * ${fetch} <= ${q.maxBytes}`
  const { rows } = await sql<{
    id: number | null
    external_id: string
    payload: string | null
    first_seen_at: string
    last_modified_at: string
    deleted_at: string | null
    pruned_at: string | null
    fits: boolean
    max_size: number
  }>`${sql.raw(PREPARED)}
    WITH d AS (
      SELECT c.id AS connection_pk, coalesce(ds.max_size_bytes, 0) AS max_size
      FROM connections c
      LEFT JOIN datasets ds ON ds.connection_pk = c.id AND ds.model = ${target.model} AND ds.variant = ${target.variant}
      WHERE c.environment_id = ${target.environmentId} AND c.provider_config_key = ${target.providerConfigKey}
        AND c.connection_id = ${target.connectionId}
    )
    SELECT p.id, p.external_id, p.payload, p.first_seen_at::text, p.last_modified_at::text, p.deleted_at::text,
           p.pruned_at::text, true AS fits, d.max_size
    FROM d LEFT JOIN LATERAL (
      SELECT r.id, r.external_id, r.payload, r.first_seen_at, r.last_modified_at, r.deleted_at, r.pruned_at
      FROM records r
      WHERE ${small} AND ${where}
      ORDER BY r.last_modified_at, r.id
      LIMIT ${fetch}
    ) p ON true
    WHERE ${small}
    UNION ALL
    SELECT p.id, p.external_id, CASE WHEN p.fits THEN p.payload END, p.first_seen_at::text, p.last_modified_at::text,
           p.deleted_at::text, p.pruned_at::text, p.fits, d.max_size
    FROM d LEFT JOIN LATERAL (
      SELECT w.*, w.running <= ${q.maxBytes} OR w.running = w.size_bytes AS fits
      FROM (
        SELECT r.id, r.external_id, r.payload, r.first_seen_at, r.last_modified_at, r.deleted_at, r.pruned_at,
               r.size_bytes, sum(r.size_bytes) OVER (ORDER BY r.last_modified_at, r.id ROWS UNBOUNDED PRECEDING) AS running,
               row_number() OVER (ORDER BY r.last_modified_at, r.id) AS rn
        FROM records r
        WHERE NOT ${small} AND ${where}
        ORDER BY r.last_modified_at, r.id
        LIMIT ${fetch}
      ) w
      -- Every row whose predecessors all fit; the second always comes, since the first fits even when
      -- it alone is over the budget.
      WHERE w.running - w.size_bytes <= ${q.maxBytes} OR w.rn <= 2
    ) p ON true
    WHERE NOT ${small}`.execute(db)

  if (rows.length === 0) return null
  const maxRecordBytes = rows[0]!.max_size
  const records: RecordRow[] = []
  let hasMore = false
  for (const row of rows) {
    if (row.id === null) break
    if (records.length === q.limit || !row.fits) {
      hasMore = true
      break
    }
    records.push({
      id: row.id,
      externalId: row.external_id,
      json: row.payload === null ? null : sealer.open(row.payload),
      firstSeenAt: row.first_seen_at,
      lastModifiedAt: row.last_modified_at,
      deletedAt: row.deleted_at,
      prunedAt: row.pruned_at,
    })
  }
  return { records, hasMore, maxRecordBytes }
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
