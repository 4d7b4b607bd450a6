/**
 * npm run bench:scale — whether a request costs the same when the records table is 50 times
 * larger. Two databases, seeded alike with SQL: 1,000 connections with 10 schedules each, and
 * datasets of 5,000 records of about 300 bytes; the small one holds 100,000 records (20 datasets),
 * the large one 5,000,000 (every connection). Each measurement alternates between the two in
 * slices, so the machine's load falls on both alike, and reports large / small; the full form fails
 * if a ratio exceeds 1.3.
 *
 * Rows are written interleaved across connections, as syncs running side by side write them, so a
 * page of one dataset touches a heap page per record in both databases. BENCH_QUICK=1 shrinks it
 * to 10,000 vs 100,000 records (datasets of 500, 200 connections) for CI.
 */
import { type Kysely, sql } from 'kysely'
import { request } from 'undici'

import { openDatabase } from '../src/db/connect.ts'
import type { Database } from '../src/db/database.ts'
import { migrateToLatest } from '../src/db/migrate.ts'
import { ensureEnvironment } from '../src/environments/store.ts'
import { createKey } from '../src/keys/store.ts'
import { createLogger } from '../src/logger.ts'
import { encodeCursor, pgTimestampToRfc3339 } from '../src/records/cursor.ts'
import { runRetention } from '../src/records/retention.ts'
import { claimDueRuns } from '../src/scheduler/run-queue.ts'
import {
  dropDatabase,
  freshDatabase,
  machine,
  percentile,
  random,
  round,
  type ServerProcess,
  startServer,
  timed,
  writeResults,
} from './lib.ts'

const quick = process.env.BENCH_QUICK === '1'
const CONNECTIONS = quick ? 200 : 1000
const SYNCS_PER_CONNECTION = 10
// At least 20 datasets in the small size: a heap page holds about 15 records, so with fewer,
// neighbouring records of one dataset would share pages there and not in the large size.
const PER_DATASET = quick ? 500 : 5000
const SIZES = { small: quick ? 10_000 : 100_000, large: quick ? 100_000 : 5_000_000 }
const PAGE_LIMIT = 100
const SLICES = 4
// Datasets per size for each measurement; GET requests per dataset and kind (first / deep page).
const GET_DATASETS = quick ? 2 : 5
const GET_REQUESTS = quick ? 60 : 500
const PRUNE_DATASETS = quick ? 2 : 4
const RETENTION = { passes: quick ? 2 : 4, limits: { datasets: quick ? 2 : 4, records: quick ? 200 : 1000 } }
const MAX_RATIO = 1.3
const MODEL = 'Contact'
const logger = createLogger('warn')

type Size = keyof typeof SIZES
const SIDES = ['small', 'large'] as const
const databaseName = (side: Size) => `syncstore_bench_scale_${side}`

interface Side {
  name: string
  url: string
  db: Awaited<ReturnType<typeof openDatabase>>
  secret: string
  /** Connection numbers (1-based, as in their connection_id `c<n>`) that hold a dataset */
  populated: number
  /** The records table with its indexes and TOAST, as seeded */
  tableBytes: number
  server?: ServerProcess
}

/** Connections, schedules, then records interleaved across datasets, in chunks. */
async function seed(db: Kysely<Database>, records: number): Promise<number> {
  const env = await ensureEnvironment(db, 'dev')
  const populated = records / PER_DATASET
  // Created and last written 60 days ago, so retention (30 days by default) has work everywhere.
  await sql`INSERT INTO connections (environment_id, provider_config_key, connection_id)
            SELECT ${env.id}, 'bench', 'c' || g FROM generate_series(1, ${CONNECTIONS}::int) g`.execute(db)
  await sql`INSERT INTO syncs (connection_pk, name, variant)
            SELECT c.id, 's' || g, 'base' FROM connections c, generate_series(1, ${SYNCS_PER_CONNECTION}::int) g`.execute(
    db,
  )
  await sql`INSERT INTO schedules (sync_id, connection_pk, state, frequency_ms, starts_at, next_due_at)
            SELECT id, connection_pk, 'STARTED', 86400000, now(), now() + interval '1 day' FROM syncs`.execute(
    db,
  )
  await sql`INSERT INTO datasets (connection_pk, model, variant, last_write_at, created_at)
            SELECT c.id, ${MODEL}, 'base', now() - interval '60 days', now() - interval '60 days' + c.id * interval '1 second'
            FROM connections c WHERE c.connection_id = any(${Array.from({ length: populated }, (_, i) => `c${i + 1}`)})`.execute(
    db,
  )
  // Record g belongs to dataset g % populated: consecutive rows, and so each heap page, belong to
  // different connections. `id` comes first in the payload, as src/records/payload.ts stores it.
  const CHUNK = 250_000
  for (let from = 0; from < records; from += CHUNK) {
    await sql`INSERT INTO records (connection_pk, model, variant, external_id, payload, payload_hash, size_bytes,
                                   first_seen_at, last_modified_at)
      SELECT c.id, ${MODEL}, 'base', t.external_id, x.payload,
             encode(sha256(convert_to(x.payload, 'UTF8')), 'base64'), octet_length(x.payload) + 400, t.at, t.at
      FROM generate_series(${from}::int, ${Math.min(records, from + CHUNK) - 1}::int) g
      CROSS JOIN LATERAL (SELECT 'c' || (g % ${populated}::int + 1) AS connection_id, g / ${populated}::int AS n) k
      CROSS JOIN LATERAL (SELECT 'contact-' || k.n AS external_id,
                                 now() - interval '60 days' + g * interval '1 microsecond' AS at) t
      CROSS JOIN LATERAL (SELECT '{"id":"' || t.external_id || '","first_name":"Ada' || k.n || '","last_name":"Lovelace'
             || k.connection_id || '","email":"ada' || k.n || '@company-' || k.connection_id || '.example.com","phone":"+1 555 '
             || lpad((g % 10000000)::text, 7, '0') || '","title":"Account executive","notes":"' || md5(g::text)
             || md5((g + 1)::text) || md5((g + 2)::text) || '"}' AS payload) x
      JOIN connections c ON c.connection_id = k.connection_id
      ORDER BY g`.execute(db)
  }
  await sql`UPDATE datasets d SET record_count = m.n, max_size_bytes = m.max_size
            FROM (SELECT connection_pk, count(*) AS n, max(size_bytes) AS max_size FROM records GROUP BY 1) m
            WHERE d.connection_pk = m.connection_pk`.execute(db)
  await sql`VACUUM ANALYZE`.execute(db)
  await sql`CHECKPOINT`.execute(db)
  return populated
}

const rnd = random(14)
/** `count` distinct connection numbers from 1..n, none of them in `taken` (which grows). */
function pick(n: number, count: number, taken: Set<number>): number[] {
  const out: number[] = []
  while (out.length < count) {
    const c = 1 + Math.floor(rnd() * n)
    if (taken.has(c)) continue
    out.push(c)
    taken.add(c)
  }
  return out
}

/** Runs `fn` for each side, SLICES times over, alternating; `fn` gets the slice number. */
async function alternate(fn: (side: Size, slice: number) => Promise<void>): Promise<void> {
  for (let slice = 0; slice < SLICES; slice++) for (const side of SIDES) await fn(side, slice)
}

async function cursorAt(db: Kysely<Database>, connection: number, index: number): Promise<string> {
  const { rows } = await sql<{ m: string; id: number }>`
    SELECT r.last_modified_at::text AS m, r.id FROM records r JOIN connections c ON c.id = r.connection_pk
    WHERE c.connection_id = ${`c${connection}`} AND r.model = ${MODEL} AND r.variant = 'base'
    ORDER BY r.last_modified_at, r.id OFFSET ${index} LIMIT 1`.execute(db)
  return encodeCursor(pgTimestampToRfc3339(rows[0]!.m), rows[0]!.id)
}

const headers = (side: Side, connection: number) => ({
  authorization: `Bearer ${side.secret}`,
  'connection-id': `c${connection}`,
  'provider-config-key': 'bench',
})

async function getPage(side: Side, connection: number, cursor?: string): Promise<number> {
  const qs = `model=${MODEL}&limit=${PAGE_LIMIT}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
  const { ms, value } = await timed(async () => {
    const res = await request(`${side.server!.url}/records?${qs}`, { headers: headers(side, connection) })
    return { status: res.statusCode, body: (await res.body.json()) as { records: unknown[] } }
  })
  if (value.status !== 200 || value.body.records.length !== PAGE_LIMIT) {
    throw new Error(
      `GET /records on ${side.name} c${connection}: ${value.status}, ${value.body.records?.length}`,
    )
  }
  return ms
}

async function prune(side: Side, connection: number, until: string): Promise<number> {
  let total = 0
  for (;;) {
    const res = await request(`${side.server!.url}/records/prune`, {
      method: 'PATCH',
      headers: { ...headers(side, connection), 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, until_cursor: until, limit: 1000 }),
    })
    const body = (await res.body.json()) as { count: number; has_more: boolean }
    if (res.statusCode !== 200) {
      throw new Error(`prune on ${side.name}: ${res.statusCode} ${JSON.stringify(body)}`)
    }
    total += body.count
    if (!body.has_more) return total
  }
}

/**
 * Before each timed write: the records table read once, then a checkpoint. The read is a sequential
 * scan, which Postgres makes through a ring of 32 buffers, leaving shared_buffers as they were; it
 * puts the table's pages in the operating system's page cache, where a server whose memory holds
 * the table keeps them. These VMs shed page cache with gigabytes free (the large table's heap lost
 * 230 MB in 90 s, idle, with 15 GB free), so without the read the large side's writes found part of
 * their pages on disk, by how long ago the seeding was rather than by the table's size. The
 * checkpoint: the first change to a heap page after one logs the whole 8 KiB page, and most of the
 * cost of a prune is that. In the small table each page holds records of most of its 20 datasets,
 * so without it a write would find its pages already logged by the one before, which a table of
 * many connections never does.
 */
async function settle(db: Kysely<Database>): Promise<void> {
  await sql`SELECT sum(size_bytes) FROM records`.execute(db)
  await sql`CHECKPOINT`.execute(db)
}

/** The claim as the dispatcher makes it with 8 free slots: one statement (claimDueRuns). */
async function claim(db: Kysely<Database>): Promise<number> {
  const { ms } = await timed(() => claimDueRuns(db, 'bench', 8))
  return ms
}

/** Measures both sizes into `sides` (so the caller can clean up after a failure); true if all ratios pass. */
async function main(sides: Record<Size, Side>): Promise<boolean> {
  let averagePayloadBytes = 0
  for (const side of SIDES) {
    const name = databaseName(side)
    const url = await freshDatabase(name)
    const db = await openDatabase({ kind: 'postgres', url }, { logger })
    await migrateToLatest(db.kysely)
    const seeded = await timed(() => seed(db.kysely, SIZES[side]))
    const env = await ensureEnvironment(db.kysely, 'dev')
    const { secret } = await createKey(db.kysely, env.id, ['environment:*'])
    const { rows } = await sql<{ table_bytes: string; payload_bytes: number }>`
      SELECT pg_total_relation_size('records') AS table_bytes, avg(octet_length(payload))::float AS payload_bytes
      FROM records`.execute(db.kysely)
    averagePayloadBytes = rows[0]!.payload_bytes
    sides[side] = { name, url, db, secret, populated: seeded.value, tableBytes: Number(rows[0]!.table_bytes) }
    console.log(`${side}: ${SIZES[side]} records seeded in ${round(seeded.ms / 1000, 1)} s`)
  }
  const taken = Object.fromEntries(SIDES.map((s) => [s, new Set<number>()])) as Record<Size, Set<number>>
  const figures = {} as Record<string, Record<Size, number>>
  const put = (name: string, side: Size, value: number) =>
    ((figures[name] ??= {} as Record<Size, number>)[side] = value)

  // --- the claim, nothing due and 100 schedules due (8 taken), before any server runs one ---
  const claims = { idle: { small: [], large: [] }, due: { small: [], large: [] } } as Record<
    'idle' | 'due',
    Record<Size, number[]>
  >
  await alternate(async (side) => {
    const db = sides[side].db.kysely
    for (let i = 0; i < (quick ? 15 : 75); i++) claims.idle[side].push(await claim(db))
    for (let i = 0; i < (quick ? 2 : 10); i++) {
      await sql`UPDATE schedules SET next_due_at = now() - interval '1 second'
                WHERE sync_id IN (SELECT sync_id FROM schedules ORDER BY random() LIMIT 100)`.execute(db)
      claims.due[side].push(await claim(db))
      await sql`UPDATE runs SET state = 'SUCCEEDED', ended_at = now() WHERE state IN ('CREATED', 'STARTED')`.execute(
        db,
      )
    }
  })
  for (const side of SIDES) {
    put('claim, nothing due, p50 (ms)', side, percentile(claims.idle[side], 50))
    put('claim, 100 schedules due, 8 taken, p50 (ms)', side, percentile(claims.due[side], 50))
  }

  // Retention off in the servers: this benchmark runs its passes itself, and times them.
  for (const side of SIDES) {
    sides[side].server = await startServer({
      DATABASE_URL: sides[side].url,
      SYNCSTORE_PRUNE_AFTER_DAYS: '0',
      SYNCSTORE_DELETE_AFTER_DAYS: '0',
    })
  }

  // --- GET /records, limit 100: the first page and the page at 90% of the dataset ---
  const deepIndex = Math.min(Math.floor(PER_DATASET * 0.9), PER_DATASET - PAGE_LIMIT)
  const targets = {} as Record<Size, { connection: number; deep: string }[]>
  for (const side of SIDES) {
    const chosen = pick(sides[side].populated, GET_DATASETS, taken[side])
    targets[side] = await Promise.all(
      chosen.map(async (connection) => ({
        connection,
        deep: await cursorAt(sides[side].db.kysely, connection, deepIndex - 1),
      })),
    )
  }
  const pages = { first: { small: [], large: [] }, deep: { small: [], large: [] } } as Record<
    'first' | 'deep',
    Record<Size, number[]>
  >
  const firstVisit = { small: [], large: [] } as Record<Size, number[]>
  await alternate(async (side, slice) => {
    for (const { connection, deep } of targets[side]) {
      for (let i = 0; i < GET_REQUESTS / SLICES; i++) {
        const firstMs = await getPage(sides[side], connection)
        const deepMs = await getPage(sides[side], connection, deep)
        if (slice === 0 && i === 0) firstVisit[side].push(firstMs + deepMs)
        pages.first[side].push(firstMs)
        pages.deep[side].push(deepMs)
      }
    }
  })
  for (const side of SIDES) {
    for (const kind of ['first', 'deep'] as const) {
      put(`GET /records ${kind} page, p50 (ms)`, side, percentile(pages[kind][side], 50))
      put(`GET /records ${kind} page, p99 (ms)`, side, percentile(pages[kind][side], 99))
    }
  }

  // --- PATCH /records/prune, 1,000 a request, whole datasets; every write is timed from settle() ---
  const pruned = { small: { records: 0, ms: 0 }, large: { records: 0, ms: 0 } }
  const pruneTargets = Object.fromEntries(
    SIDES.map((side) => [side, pick(sides[side].populated, PRUNE_DATASETS, taken[side])]),
  ) as Record<Size, number[]>
  await alternate(async (side, slice) => {
    if (slice >= PRUNE_DATASETS) return
    const connection = pruneTargets[side][slice]!
    const until = await cursorAt(sides[side].db.kysely, connection, PER_DATASET - 1)
    await settle(sides[side].db.kysely)
    const { ms, value } = await timed(() => prune(sides[side], connection, until))
    if (value !== PER_DATASET) throw new Error(`prune on ${side} c${connection}: ${value} of ${PER_DATASET}`)
    pruned[side].records += value
    pruned[side].ms += ms
  })
  for (const side of SIDES) {
    put('prune through HTTP (records/s)', side, (pruned[side].records / pruned[side].ms) * 1000)
    await sides[side].server!.stop()
    delete sides[side].server
  }

  // --- retention passes: prune payloads older than 30 days, then delete datasets idle 60 days ---
  // Datasets already pruned above are marked checked, so every dataset a pass takes has work.
  for (const side of SIDES) {
    await sql`UPDATE datasets d SET retention_checked_at = now() FROM connections c
              WHERE c.id = d.connection_pk AND c.connection_id = any(${pruneTargets[side].map((n) => `c${n}`)})`.execute(
      sides[side].db.kysely,
    )
  }
  const retention = {
    prune: { small: { records: 0, ms: 0 }, large: { records: 0, ms: 0 } },
    delete: { small: { records: 0, ms: 0 }, large: { records: 0, ms: 0 } },
  }
  const now = new Date()
  for (const kind of ['prune', 'delete'] as const) {
    const settings = {
      pruneAfterDays: kind === 'prune' ? 30 : 0,
      deleteAfterDays: kind === 'delete' ? 30 : 0,
    }
    await alternate(async (side, slice) => {
      if (slice >= RETENTION.passes) return
      await settle(sides[side].db.kysely)
      const { ms, value } = await timed(() =>
        runRetention(sides[side].db.kysely, settings, now, RETENTION.limits),
      )
      const count = kind === 'prune' ? value.pruned : value.deleted
      const expected = RETENTION.limits.datasets * RETENTION.limits.records
      if (count !== expected) throw new Error(`retention ${kind} pass on ${side}: ${count} of ${expected}`)
      retention[kind][side].records += count
      retention[kind][side].ms += ms
    })
    for (const side of SIDES) {
      const { records, ms } = retention[kind][side]
      put(`retention ${kind === 'prune' ? 'prune' : 'delete'} pass (records/s)`, side, (records / ms) * 1000)
    }
  }

  // --- report: cost ratios, large / small (throughputs inverted, so > 1 is always worse) ---
  const results: Record<string, unknown> = {
    machine: machine(),
    postgresSharedBuffers: (
      await sql<{ s: string }>`SELECT current_setting('shared_buffers') AS s`.execute(sides.large.db.kysely)
    ).rows[0]!.s,
    records: SIZES,
    connections: CONNECTIONS,
    schedules: CONNECTIONS * SYNCS_PER_CONNECTION,
    recordsPerDataset: PER_DATASET,
    averagePayloadBytes: round(averagePayloadBytes),
    recordsTableMiB: Object.fromEntries(SIDES.map((s) => [s, round(sides[s].tableBytes / 2 ** 20)])),
    figures: {} as Record<string, unknown>,
  }
  // The quick form runs in CI on shared cores, where a ratio is noise: it checks its results, and
  // only the full form fails on a ratio.
  let failed = false
  console.log(`\nscale benchmark, ${SIZES.small} vs ${SIZES.large} records (${JSON.stringify(machine())})`)
  const line = (cells: string[]) =>
    console.log(cells.map((c, i) => (i === 0 ? c.padEnd(44) : c.padStart(14))).join(''))
  line(['measurement', `${SIZES.small}`, `${SIZES.large}`, 'cost ratio'])
  for (const [name, values] of Object.entries(figures)) {
    const throughput = name.endsWith('(records/s)')
    const ratio = throughput ? values.small / values.large : values.large / values.small
    if (ratio > MAX_RATIO && !quick) failed = true
    ;(results.figures as Record<string, unknown>)[name] = {
      small: round(values.small, 2),
      large: round(values.large, 2),
      costRatio: round(ratio, 2),
    }
    line([name, `${round(values.small, 2)}`, `${round(values.large, 2)}`, `${round(ratio, 2)}x`])
  }
  results.firstVisitMs = Object.fromEntries(SIDES.map((s) => [s, firstVisit[s].map((ms) => round(ms, 2))]))
  console.log(`first visit to each dataset, first + deep page (ms): ${JSON.stringify(results.firstVisitMs)}`)
  const worst = Math.max(
    ...Object.values(results.figures as Record<string, { costRatio: number }>).map((f) => f.costRatio),
  )
  console.log(
    `worst cost ratio ${worst}x (limit ${MAX_RATIO}x${quick ? ', not enforced in the quick form' : ''})`,
  )
  await writeResults(quick ? 'scale-quick.json' : 'scale.json', results)
  return !failed
}

const sides = {} as Record<Size, Side>
try {
  if (!(await main(sides))) process.exitCode = 1
} finally {
  for (const side of SIDES) {
    await sides[side]?.server?.stop()
    await sides[side]?.db.close()
    await dropDatabase(databaseName(side))
  }
}
