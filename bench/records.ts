/**
 * npm run bench:records — syncstore's records store against raw Postgres, in one run on one
 * database. The baseline is the physical limit: the same keyset pages fetched by a plain `pg`
 * query with the payload as text, and plain multi-row INSERT ... ON CONFLICT DO UPDATE writes.
 * Compare ratios, not absolute numbers: client, server and Postgres share this machine's cores.
 *
 * BENCH_RECORDS (100000), BENCH_RSS_RECORDS (1000000) and BENCH_SECONDS (10) size the run;
 * BENCH_QUICK=1 shrinks everything for CI.
 */
import autocannon from 'autocannon'
import { sql } from 'kysely'
import pg from 'pg'
import { request } from 'undici'

import { upsertConnection } from '../src/connections/store.ts'
import { createSealer } from '../src/crypto.ts'
import { openDatabase } from '../src/db/connect.ts'
import { migrateToLatest } from '../src/db/migrate.ts'
import { inTransaction } from '../src/db/transaction.ts'
import { ensureEnvironment } from '../src/environments/store.ts'
import { createKey } from '../src/keys/store.ts'
import { createLogger } from '../src/logger.ts'
import { encodeCursor, pgTimestampToRfc3339 } from '../src/records/cursor.ts'
import { batchSave } from '../src/records/save.ts'
import {
  dropDatabase,
  freshDatabase,
  machine,
  percentile,
  printTable,
  random,
  round,
  type Row,
  startServer,
  timed,
  writeResults,
} from './lib.ts'

const quick = process.env.BENCH_QUICK === '1'
const N = Number(process.env.BENCH_RECORDS ?? (quick ? 5000 : 100_000))
const RSS_RECORDS = Number(process.env.BENCH_RSS_RECORDS ?? (quick ? 20_000 : 1_000_000))
const SECONDS = Number(process.env.BENCH_SECONDS ?? (quick ? 2 : 10))
const BATCH = 1000
const CONCURRENCY = 8
const CAPACITY_SLICES = 4
const DB_NAME = 'syncstore_bench_records'

type Rec = { id: string; name: string; text: string; n: number; flag: boolean }

function makeRecords(count: number, seed: number): Rec[] {
  const rnd = random(seed)
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789 '
  return Array.from({ length: count }, (_, i) => ({
    id: `rec-${i}`,
    name: `Record ${i}`,
    text: Array.from({ length: 900 }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join(''),
    n: i,
    flag: i % 2 === 0,
  }))
}

const batches = <T>(items: T[]) =>
  Array.from({ length: Math.ceil(items.length / BATCH) }, (_, i) => items.slice(i * BATCH, (i + 1) * BATCH))
const perSecond = (count: number, ms: number) => (count / ms) * 1000

async function main() {
  const url = await freshDatabase(DB_NAME)
  const logger = createLogger('warn')
  const db = await openDatabase({ kind: 'postgres', url }, { logger })
  await migrateToLatest(db.kysely)
  const sealer = createSealer(null)
  const env = await ensureEnvironment(db.kysely, 'dev')
  const { secret } = await createKey(db.kysely, env.id, ['environment:*'])
  const { connection } = await upsertConnection(db.kysely, sealer, env.id, {
    providerConfigKey: 'bench',
    connectionId: 'c1',
  })
  const ds = { connectionPk: connection.id, model: 'Contact', variant: 'base' }

  const raw = new pg.Pool({ connectionString: url, max: CONCURRENCY })
  await raw.query(`CREATE SCHEMA bench_raw;
    CREATE TABLE bench_raw.records (conn text NOT NULL, model text NOT NULL, id text NOT NULL, payload text,
      created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, pruned_at timestamptz,
      PRIMARY KEY (conn, model, id));
    CREATE INDEX ON bench_raw.records (conn, model, updated_at, id);`)
  const rawUpsert = async (rows: Rec[]) => {
    const values = rows
      .map((_, i) => `('c1', 'Contact', $${i * 2 + 1}, $${i * 2 + 2}, now(), now())`)
      .join(',')
    await raw.query(
      `INSERT INTO bench_raw.records (conn, model, id, payload, created_at, updated_at) VALUES ${values}
       ON CONFLICT (conn, model, id) DO UPDATE SET payload = excluded.payload, updated_at = now()`,
      rows.flatMap((r) => [r.id, JSON.stringify(r)]),
    )
  }

  const results: Record<string, unknown> = { machine: machine(), records: N, batch: BATCH }
  const rows: Row[] = []
  const row = (
    measurement: string,
    ours: number,
    baseline: number,
    unit: string,
    target: string,
    higherIsBetter = true,
  ) => {
    const ratio = higherIsBetter ? ours / baseline : baseline / ours
    rows.push({
      measurement,
      ours: `${round(ours)} ${unit}`,
      baseline: `${round(baseline)} ${unit}`,
      ratio: `${round(ratio, 2)}x`,
      target,
    })
    results[measurement] = {
      ours: round(ours, 1),
      baseline: round(baseline, 1),
      unit,
      ratio: round(ratio, 3),
      target,
    }
  }

  // --- writes: batchSave vs multi-row upsert, new / unchanged / changed ---
  const base = makeRecords(N, 1)
  const changed = base.map((r) => ({ ...r, name: `${r.name}!`, n: r.n + 1, flag: !r.flag }))
  for (const [phase, data, expect] of [
    ['new', base, 'added'],
    ['unchanged', base, 'unchanged'],
    ['changed', changed, 'updated'],
  ] as const) {
    await raw.query('CHECKPOINT')
    const ours = await timed(async () => {
      let count = 0
      for (const b of batches(data)) {
        count += (await inTransaction(db.kysely, (trx) => batchSave(trx, sealer, ds, b)))[expect].length
      }
      return count
    })
    if (ours.value !== N) throw new Error(`batchSave ${phase}: expected ${N} ${expect}, got ${ours.value}`)
    await raw.query('CHECKPOINT')
    const base = await timed(async () => {
      for (const b of batches(data)) await rawUpsert(b)
    })
    row(`batchSave ${phase} (1000/batch)`, perSecond(N, ours.ms), perSecond(N, base.ms), 'rec/s', '>= 0.5x')
  }
  for (const table of ['records', 'bench_raw.records', 'datasets']) await raw.query(`VACUUM ANALYZE ${table}`)

  // Every record's cursor, in order, for random and deep starting points.
  const positions = (
    await sql<{
      m: string
      id: number
      payload_bytes: number
    }>`SELECT last_modified_at::text AS m, id FROM records
      WHERE connection_pk = ${ds.connectionPk} ORDER BY last_modified_at, id`.execute(db.kysely)
  ).rows
  const cursors = positions.map((p) => encodeCursor(pgTimestampToRfc3339(p.m), p.id))
  const rawPositions = (
    await raw.query(`SELECT updated_at::text AS u, id FROM bench_raw.records ORDER BY updated_at, id`)
  ).rows as { u: string; id: string }[]
  const rnd = random(7)
  const randomIndex = () => Math.floor(rnd() * Math.floor(N * 0.9))

  const server = await startServer({ DATABASE_URL: url })
  const headers = { authorization: `Bearer ${secret}`, 'connection-id': 'c1', 'provider-config-key': 'bench' }
  const rawPage = async (
    client: pg.Pool | pg.PoolClient,
    limit: number,
    after?: { u: string; id: string },
  ) => {
    const res = after
      ? await client.query(
          `SELECT id, payload, to_json(updated_at) AS u FROM bench_raw.records WHERE conn = 'c1' AND model = 'Contact'
           AND (updated_at, id) > ($1::timestamptz, $2) ORDER BY updated_at, id LIMIT $3`,
          [after.u, after.id, limit],
        )
      : await client.query(
          `SELECT id, payload, to_json(updated_at) AS u FROM bench_raw.records WHERE conn = 'c1' AND model = 'Contact'
           ORDER BY updated_at, id LIMIT $1`,
          [limit],
        )
    return res.rows as { id: string; payload: string; u: string }[]
  }

  for (const limit of [100, 1000]) {
    // --- server capacity: 8 concurrent clients at random cursors, against 8 raw queries ---
    // In alternating slices (ours, raw, ours, raw), so a change in the machine's load during the
    // measurement falls on both sides alike.
    const slice = SECONDS / CAPACITY_SLICES
    let oursRecords = 0
    let rawCount = 0
    for (let i = 0; i < CAPACITY_SLICES; i++) {
      const capacity = await autocannon({
        url: server.url,
        connections: CONCURRENCY,
        duration: slice,
        headers,
        requests: [
          {
            method: 'GET',
            setupRequest: (req) => ({
              ...req,
              path: `/records?model=Contact&limit=${limit}&cursor=${encodeURIComponent(cursors[randomIndex()]!)}`,
            }),
          },
        ],
      })
      if (capacity.non2xx > 0 || capacity.errors > 0) {
        throw new Error(`capacity run had ${capacity.non2xx} non-2xx, ${capacity.errors} errors`)
      }
      oursRecords += capacity['2xx'] * limit
      const deadline = performance.now() + slice * 1000
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (performance.now() < deadline) {
            // Not `rawCount += await ...`: that reads rawCount before the await and loses the
            // increments of the other loops.
            const rows = (await rawPage(raw, limit, rawPositions[randomIndex()])).length
            rawCount += rows
          }
        }),
      )
    }
    const oursCapacity = oursRecords / SECONDS
    row(
      `capacity, ${CONCURRENCY} clients, limit ${limit}`,
      oursCapacity,
      rawCount / SECONDS,
      'rec/s',
      '>= 0.5x',
    )

    // --- one consumer paging the whole stream ---
    const sequential = await timed(async () => {
      let cursor: string | null = null
      let count = 0
      do {
        const qs: string = `model=Contact&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
        const res = await request(`${server.url}/records?${qs}`, { headers })
        const body = (await res.body.json()) as { records: unknown[]; next_cursor: string | null }
        count += body.records.length
        cursor = body.next_cursor
      } while (cursor)
      return count
    })
    if (sequential.value !== N) throw new Error(`paging returned ${sequential.value} records, expected ${N}`)
    const rawSequential = await timed(async () => {
      let after: { u: string; id: string } | undefined
      let count = 0
      for (;;) {
        const page = await rawPage(raw, limit, after)
        count += page.length
        if (page.length < limit) return count
        after = { u: page.at(-1)!.u, id: page.at(-1)!.id }
      }
    })
    row(
      `sequential paging, limit ${limit}`,
      perSecond(N, sequential.ms),
      perSecond(N, rawSequential.ms),
      'rec/s',
      '>= 0.3x',
    )

    // --- deep paging: the page at record 90% vs the first page ---
    const deep = Math.floor(N * 0.9)
    const latency = async (cursor?: string) => {
      const samples: number[] = []
      for (let i = 0; i < 30; i++) {
        const { ms } = await timed(async () => {
          const res = await request(
            `${server.url}/records?model=Contact&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
            { headers },
          )
          await res.body.text()
        })
        samples.push(ms)
      }
      return percentile(samples, 50)
    }
    const first = await latency()
    const deepMs = await latency(cursors[deep - 1])
    rows.push({
      measurement: `deep page (record ${deep}) vs first, limit ${limit}`,
      ours: `${round(deepMs, 2)} ms`,
      baseline: `${round(first, 2)} ms (first)`,
      ratio: `${round(deepMs / first, 2)}x`,
      target: '<= 1.3x',
    })
    results[`deep page, limit ${limit}`] = {
      deepMs: round(deepMs, 2),
      firstMs: round(first, 2),
      ratio: round(deepMs / first, 3),
      target: '<= 1.3x',
    }
  }

  // --- prune everything through the API, 10,000 a request, vs raw keyset UPDATEs ---
  const until = cursors.at(-1)!
  const prune = await timed(async () => {
    let total = 0
    for (;;) {
      const res = await request(`${server.url}/records/prune`, {
        method: 'PATCH',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'Contact', until_cursor: until, limit: 10_000 }),
      })
      const body = (await res.body.json()) as { count: number; has_more: boolean }
      total += body.count
      if (!body.has_more) return total
    }
  })
  if (prune.value !== N) throw new Error(`prune counted ${prune.value}, expected ${N}`)
  const rawPrune = await timed(async () => {
    for (;;) {
      const res = await raw.query(
        `UPDATE bench_raw.records r SET payload = NULL, pruned_at = now() FROM (
           SELECT updated_at, id FROM bench_raw.records WHERE conn = 'c1' AND model = 'Contact' AND pruned_at IS NULL
           ORDER BY updated_at, id LIMIT 10000) t
         WHERE r.conn = 'c1' AND r.model = 'Contact' AND r.id = t.id`,
      )
      if ((res.rowCount ?? 0) < 10_000) return
    }
  })
  row('prune all (10,000/request)', perSecond(N, prune.ms), perSecond(N, rawPrune.ms), 'rec/s', 'report')
  await server.stop()

  // --- peak server RSS while one client pages through RSS_RECORDS records ---
  const { connection: big } = await upsertConnection(db.kysely, sealer, env.id, {
    providerConfigKey: 'bench',
    connectionId: 'big',
  })
  await sql`INSERT INTO datasets (connection_pk, model, variant, record_count, max_size_bytes)
            VALUES (${big.id}, 'Big', 'base', ${RSS_RECORDS}, 1400)`.execute(db.kysely)
  await sql`INSERT INTO records (connection_pk, model, variant, external_id, payload, payload_hash, size_bytes, first_seen_at, last_modified_at)
    SELECT ${big.id}, 'Big', 'base', 'big-' || g, '{"id":"big-' || g || '","text":"' || repeat(md5(g::text), 28) || '"}', md5(g::text), 1400,
           now(), now() + g * interval '1 microsecond'
    FROM generate_series(1, ${RSS_RECORDS}) g`.execute(db.kysely)
  await raw.query('VACUUM ANALYZE records')
  const rssServer = await startServer({ DATABASE_URL: url })
  const rssRun = await timed(async () => {
    let cursor: string | null = null
    let count = 0
    do {
      const res = await request(
        `${rssServer.url}/records?model=Big&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
        { headers: { ...headers, 'connection-id': 'big' } },
      )
      const body = (await res.body.json()) as { records: unknown[]; next_cursor: string | null }
      count += body.records.length
      cursor = body.next_cursor
    } while (cursor)
    return count
  })
  if (rssRun.value !== RSS_RECORDS) {
    throw new Error(`RSS paging returned ${rssRun.value}, expected ${RSS_RECORDS}`)
  }
  const peak = await rssServer.peakRssMb()
  await rssServer.stop()
  rows.push({
    measurement: `peak server RSS paging ${RSS_RECORDS} records`,
    ours: `${round(peak)} MB`,
    baseline: '-',
    ratio: '-',
    target: '< 300 MB',
  })
  results['peak server RSS'] = {
    records: RSS_RECORDS,
    peakMb: round(peak),
    recordsPerSecond: round(perSecond(RSS_RECORDS, rssRun.ms)),
    target: '< 300 MB',
  }

  printTable(
    `records benchmark: ${N} records of ~1 KB, ${results.machine ? JSON.stringify(machine()) : ''}`,
    rows,
  )
  await writeResults(quick ? 'records-quick.json' : 'records.json', results)
  await raw.end()
  await db.close()
  await dropDatabase(DB_NAME)
}

await main()
