/**
 * npm run bench:runtime — the sync runtime in the real `syncstore serve` process:
 * - overhead of a run whose function does nothing (worker process, RPC, bookkeeping), in ms;
 * - batchSave throughput from inside a sync function vs. the direct store call (target >= 0.7x);
 * - 200 connections x 1 sync every 30 s on one process: runs per minute and p99 delay from the
 *   due time to the start.
 * BENCH_QUICK=1 shrinks it for CI.
 */
import { fileURLToPath } from 'node:url'

import { sql } from 'kysely'

import { upsertConnection } from '../src/connections/store.ts'
import { createSealer } from '../src/crypto.ts'
import { openDatabase } from '../src/db/connect.ts'
import { migrateToLatest } from '../src/db/migrate.ts'
import { inTransaction } from '../src/db/transaction.ts'
import { ensureEnvironment } from '../src/environments/store.ts'
import { setVariable } from '../src/environments/variables-store.ts'
import { createKey } from '../src/keys/store.ts'
import { createLogger } from '../src/logger.ts'
import { batchSave } from '../src/records/save.ts'
import {
  dropDatabase,
  freshDatabase,
  machine,
  percentile,
  round,
  startServer,
  timed,
  writeResults,
} from './lib.ts'

const quick = process.env.BENCH_QUICK === '1'
const EMPTY_RUNS = quick ? 10 : 50
const SAVE_RECORDS = quick ? 5000 : 50_000
const TICK_CONNECTIONS = quick ? 50 : 200
const TICK_SECONDS = quick ? 40 : 180
const CONCURRENCY = 8
const DB_NAME = 'syncstore_bench_runtime'

const url = await freshDatabase(DB_NAME)
const db = await openDatabase({ kind: 'postgres', url }, { logger: createLogger('warn') })
await migrateToLatest(db.kysely)
const sealer = createSealer(null)
const env = await ensureEnvironment(db.kysely, 'dev')
const { secret } = await createKey(db.kysely, env.id, ['environment:*'])
await setVariable(db.kysely, sealer, env.id, 'BENCH_SAVE_RECORDS', String(SAVE_RECORDS))
const solo = (
  await upsertConnection(db.kysely, sealer, env.id, { providerConfigKey: 'bench', connectionId: 'solo' })
).connection
for (let i = 1; i <= TICK_CONNECTIONS; i++) {
  await upsertConnection(db.kysely, sealer, env.id, { providerConfigKey: 'bench', connectionId: `tick-${i}` })
}

const server = await startServer({
  DATABASE_URL: url,
  SYNCSTORE_INTEGRATIONS_DIR: fileURLToPath(new URL('./integrations', import.meta.url)),
  SYNCSTORE_RUN_CONCURRENCY: String(CONCURRENCY),
})
const headers = { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }
const trigger = (name: string, connectionId: string) =>
  fetch(`${server.url}/sync/trigger`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ provider_config_key: 'bench', connection_id: connectionId, syncs: [name] }),
  }).then((r) => {
    if (r.status !== 200) throw new Error(`trigger answered ${r.status}`)
  })

/** The last run of a sync of the solo connection, once it has ended. */
async function awaitRun(name: string, after: number) {
  for (let i = 0; i < 6000; i++) {
    const { rows } = await sql<{ id: number; state: string; ms: number }>`
      SELECT r.id, r.state, extract(epoch FROM (r.ended_at - r.started_at)) * 1000 AS ms
      FROM runs r JOIN syncs s ON s.id = r.sync_id
      WHERE s.connection_pk = ${solo.id} AND s.name = ${name} AND r.id > ${after} AND r.ended_at IS NOT NULL
      ORDER BY r.id DESC LIMIT 1`.execute(db.kysely)
    if (rows[0]) {
      if (rows[0].state !== 'SUCCEEDED') throw new Error(`${name} run ${rows[0].id} ended ${rows[0].state}`)
      return rows[0]
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`${name} did not finish`)
}
const lastRunId = async () =>
  Number(
    (await sql<{ id: number | null }>`SELECT max(id) AS id FROM runs`.execute(db.kysely)).rows[0]!.id ?? 0,
  )

// --- overhead per empty run ---
await trigger('empty', 'solo')
await awaitRun('empty', 0) // warm: the worker process loads the definition once
const inside: number[] = []
const roundTrip: number[] = []
for (let i = 0; i < EMPTY_RUNS; i++) {
  const after = await lastRunId()
  const { ms, value } = await timed(async () => {
    await trigger('empty', 'solo')
    return awaitRun('empty', after)
  })
  inside.push(Number(value.ms))
  roundTrip.push(ms)
}

// --- batchSave inside a sync function vs the store directly ---
const beforeSave = await lastRunId()
await trigger('save', 'solo')
const saveRun = await awaitRun('save', beforeSave)
const insideRate = (SAVE_RECORDS / Number(saveRun.ms)) * 1000
const direct = (
  await upsertConnection(db.kysely, sealer, env.id, { providerConfigKey: 'direct', connectionId: 'direct' })
).connection
const text = 'x'.repeat(900)
const directRun = await timed(async () => {
  for (let start = 0; start < SAVE_RECORDS; start += 1000) {
    const batch = Array.from({ length: Math.min(1000, SAVE_RECORDS - start) }, (_, i) => ({
      id: `item-${start + i}`,
      name: `Item ${start + i}`,
      text,
      n: start + i,
      flag: i % 2 === 0,
    }))
    const ds = { connectionPk: direct.id, model: 'Item', variant: 'base' }
    await inTransaction(db.kysely, (trx) => batchSave(trx, sealer, ds, batch))
  }
})
const directRate = (SAVE_RECORDS / directRun.ms) * 1000

// --- many connections on a 30 s frequency ---
// Their connections were created at different moments: spread the grid anchors over the period.
await sql`UPDATE schedules x SET state = 'STARTED', starts_at = now() - random() * interval '30 seconds',
          next_due_at = now() + random() * interval '30 seconds'
          FROM syncs s JOIN connections c ON c.id = s.connection_pk
          WHERE x.sync_id = s.id AND s.name = 'tick' AND c.connection_id LIKE 'tick-%'`.execute(db.kysely)
const tickStart = new Date()
// Sync functions run in worker processes of their own: the memory a server needs is its own and
// theirs, sampled together while the schedules run.
let treePeak = 0
const tickEnd = Date.now() + TICK_SECONDS * 1000
while (Date.now() < tickEnd) {
  treePeak = Math.max(treePeak, await server.treeRssMb())
  await new Promise((resolve) => setTimeout(resolve, Math.min(500, Math.max(0, tickEnd - Date.now()))))
}
const { rows: ticks } = await sql<{ delay_ms: number; state: string }>`
  SELECT extract(epoch FROM (r.started_at - r.due_at)) * 1000 AS delay_ms, r.state
  FROM runs r JOIN syncs s ON s.id = r.sync_id
  WHERE s.name = 'tick' AND r.reason = 'schedule' AND r.created_at >= ${tickStart} AND r.ended_at IS NOT NULL`.execute(
  db.kysely,
)
const delays = ticks.map((t) => Number(t.delay_ms))
const failedTicks = ticks.filter((t) => t.state !== 'SUCCEEDED').length
const rss = await server.peakRssMb()
await server.stop()

const results = {
  machine: machine(),
  concurrency: CONCURRENCY,
  emptyRun: {
    runs: EMPTY_RUNS,
    insideP50Ms: round(percentile(inside, 50), 1),
    insideP99Ms: round(percentile(inside, 99), 1),
    triggerToDoneP50Ms: round(percentile(roundTrip, 50), 1),
  },
  batchSave: {
    records: SAVE_RECORDS,
    insideRecordsPerSecond: round(insideRate),
    directRecordsPerSecond: round(directRate),
    ratio: round(insideRate / directRate, 2),
    target: '>= 0.7x',
  },
  schedule: {
    connections: TICK_CONNECTIONS,
    frequency: '30 s',
    seconds: TICK_SECONDS,
    runsPerMinute: round((ticks.length / TICK_SECONDS) * 60),
    expectedPerMinute: TICK_CONNECTIONS * 2,
    failed: failedTicks,
    delayP50Ms: round(percentile(delays, 50)),
    delayP99Ms: round(percentile(delays, 99)),
  },
  serverPeakRssMb: round(rss),
  withWorkersPeakRssMb: round(treePeak),
}
console.log(`\nruntime benchmark (${JSON.stringify(machine())}), SYNCSTORE_RUN_CONCURRENCY=${CONCURRENCY}`)
console.log(
  `empty run: ${results.emptyRun.insideP50Ms} ms p50 inside the run (p99 ${results.emptyRun.insideP99Ms}), ${results.emptyRun.triggerToDoneP50Ms} ms from trigger to done`,
)
console.log(
  `batchSave ${SAVE_RECORDS} records: inside a sync ${results.batchSave.insideRecordsPerSecond}/s, direct ${results.batchSave.directRecordsPerSecond}/s, ratio ${results.batchSave.ratio}x (target >= 0.7x)`,
)
console.log(
  `${TICK_CONNECTIONS} connections every 30 s for ${TICK_SECONDS} s: ${results.schedule.runsPerMinute} runs/min (expected ${results.schedule.expectedPerMinute}), ${failedTicks} failed, delay from due time p50 ${results.schedule.delayP50Ms} ms, p99 ${results.schedule.delayP99Ms} ms`,
)
console.log(
  `server peak RSS ${results.serverPeakRssMb} MB; with its worker processes ${results.withWorkersPeakRssMb} MB (sampled every 0.5 s)`,
)
await writeResults(quick ? 'runtime-quick.json' : 'runtime.json', results)
await db.close()
await dropDatabase(DB_NAME)
