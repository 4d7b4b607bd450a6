/**
 * npm run bench:scheduler — the Postgres scheduler with no-op runs, at 10,000 and 100,000
 * schedules: claim time (idle and with due work), trigger-to-start latency over LISTEN/NOTIFY,
 * and dispatch throughput, compared with graphile-worker on the same database in the same run.
 * BENCH_QUICK=1 shrinks the sizes for CI.
 */
import { Logger as GraphileLogger, makeWorkerUtils, run as runGraphileWorker } from 'graphile-worker'
import { sql } from 'kysely'
import pg from 'pg'

import { openDatabase } from '../src/db/connect.ts'
import { migrateToLatest } from '../src/db/migrate.ts'
import { createLogger } from '../src/logger.ts'
import type { RunExecutor } from '../src/runs/execute.ts'
import { Dispatcher } from '../src/scheduler/dispatcher.ts'
import { claimDueRuns, requestRun } from '../src/scheduler/run-queue.ts'
import { postgresWakeups } from '../src/scheduler/wakeups.ts'
import { dropDatabase, freshDatabase, machine, percentile, round, timed, writeResults } from './lib.ts'

const quick = process.env.BENCH_QUICK === '1'
const SIZES = quick ? [1000, 5000] : [10_000, 100_000]
const CONCURRENCY = 32
const DISPATCH_SECONDS = quick ? 5 : 20
const LATENCY_SAMPLES = quick ? 30 : 200
const DB_NAME = 'syncstore_bench_scheduler'
const logger = createLogger('warn')

async function seed(db: Awaited<ReturnType<typeof openDatabase>>, size: number) {
  const connections = Math.ceil(size / 100)
  await sql`INSERT INTO connections (environment_id, provider_config_key, connection_id)
            SELECT (SELECT id FROM environments WHERE name = 'dev'), 'bench', 'c' || g FROM generate_series(1, ${connections}) g`.execute(
    db.kysely,
  )
  await sql`INSERT INTO syncs (connection_pk, name, variant)
            SELECT c.id, 's' || g, 'base' FROM connections c, generate_series(1, 100) g`.execute(db.kysely)
  // One day apart, none due: the scheduler has the full table to look through and nothing to do.
  await sql`INSERT INTO schedules (sync_id, connection_pk, state, frequency_ms, starts_at, next_due_at)
            SELECT id, connection_pk, 'STARTED', 86400000, now(), now() + interval '1 day' FROM syncs`.execute(
    db.kysely,
  )
  await sql`ANALYZE`.execute(db.kysely)
}

async function measureSize(size: number) {
  const url = await freshDatabase(DB_NAME)
  const db = await openDatabase({ kind: 'postgres', url }, { logger, poolMax: 40 })
  await migrateToLatest(db.kysely)
  await seed(db, size)
  const out: Record<string, number> = { schedules: size }

  // The claim as the dispatcher makes it with 8 free slots (one statement), nothing due.
  const claimTx = () => claimDueRuns(db.kysely, 'bench', 8)
  const idle: number[] = []
  for (let i = 0; i < 300; i++) idle.push((await timed(claimTx)).ms)
  out.claimIdleP50Ms = round(percentile(idle, 50), 3)

  // ...and with 100 schedules due each time (then their runs are completed so the next pass is alike).
  const busy: number[] = []
  for (let i = 0; i < 30; i++) {
    await sql`UPDATE schedules SET next_due_at = now() - interval '1 second'
              WHERE sync_id IN (SELECT sync_id FROM schedules ORDER BY random() LIMIT 100)`.execute(db.kysely)
    busy.push((await timed(claimTx)).ms)
    await sql`UPDATE runs SET state = 'SUCCEEDED', ended_at = now() WHERE state IN ('CREATED', 'STARTED')`.execute(
      db.kysely,
    )
  }
  out.claimDueP50Ms = round(percentile(busy, 50), 3)

  // Trigger-to-start latency: requestRun + NOTIFY, until the executor is called.
  const wakeups = postgresWakeups(db.kysely, url, logger)
  let started: ((id: number) => void) | undefined
  const executor: RunExecutor = {
    execute: async (run) => {
      started?.(run.id)
      return { state: 'SUCCEEDED' }
    },
  }
  const dispatcher = new Dispatcher({
    db: db.kysely,
    wakeups,
    executor,
    logger,
    concurrency: CONCURRENCY,
    // A long poll: every start measured here comes from the wake-up, not a poll.
    pollMs: 30_000,
    heartbeatIntervalMs: 10_000,
    heartbeatTimeoutMs: 60_000,
    maxRunMs: 3_600_000,
  })
  await dispatcher.start()
  const syncs = (
    await sql<{
      id: string
      connection_pk: number
    }>`SELECT id, connection_pk FROM syncs ORDER BY random() LIMIT ${LATENCY_SAMPLES}`.execute(db.kysely)
  ).rows
  const latencies: number[] = []
  for (const s of syncs) {
    const t0 = performance.now()
    const seen = new Promise<void>((resolve) => (started = () => resolve()))
    await requestRun(db.kysely, { syncId: s.id, connectionPk: s.connection_pk, reason: 'trigger' })
    await wakeups.notify()
    await seen
    latencies.push(performance.now() - t0)
  }
  started = undefined
  out.triggerToStartP50Ms = round(percentile(latencies, 50), 2)
  out.triggerToStartP99Ms = round(percentile(latencies, 99), 2)

  // Dispatch throughput: every schedule due at once, no-op runs, one instance, CONCURRENCY at a time.
  await sql`UPDATE schedules SET next_due_at = now()`.execute(db.kysely)
  const before = Number(
    (await sql<{ n: number }>`SELECT count(*) AS n FROM runs WHERE state = 'SUCCEEDED'`.execute(db.kysely))
      .rows[0]!.n,
  )
  dispatcher.poke()
  const start = performance.now()
  let done = 0
  while (performance.now() - start < DISPATCH_SECONDS * 1000 && done < size) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    done =
      Number(
        (
          await sql<{ n: number }>`SELECT count(*) AS n FROM runs WHERE state = 'SUCCEEDED'`.execute(
            db.kysely,
          )
        ).rows[0]!.n,
      ) - before
  }
  out.dispatchPerSecond = round((done / (performance.now() - start)) * 1000)
  await dispatcher.stop(1000)

  // graphile-worker, same database, same concurrency, the same number of no-op jobs.
  const gw = await graphileWorker(url, size)
  out.graphileJobsPerSecond = gw
  await db.close()
  await dropDatabase(DB_NAME)
  return out
}

async function graphileWorker(url: string, jobs: number): Promise<number> {
  // Our own pool, ended before the database is dropped: one graphile-worker creates itself can still
  // hold a connection then, and the termination crashes the process from an unwatched 'error'.
  const pool = new pg.Pool({ connectionString: url, max: CONCURRENCY + 4 })
  pool.on('error', () => undefined)
  pool.on('connect', (client) => client.on('error', () => undefined))
  const utils = await makeWorkerUtils({
    pgPool: pool,
    logger: new GraphileLogger(() => () => undefined),
  })
  await utils.migrate()
  for (let i = 0; i < jobs; i += 10_000) {
    await utils.addJobs(
      Array.from({ length: Math.min(10_000, jobs - i) }, () => ({ identifier: 'noop', payload: {} })),
    )
  }
  await utils.release()
  let completed = 0
  const start = performance.now()
  const runner = await runGraphileWorker({
    pgPool: pool,
    concurrency: CONCURRENCY,
    noHandleSignals: true,
    pollInterval: 1000,
    taskList: { noop: async () => undefined },
    logger: new GraphileLogger(() => () => undefined),
  })
  runner.events.on('job:success', () => void (completed += 1))
  while (completed < jobs && performance.now() - start < DISPATCH_SECONDS * 1000) {
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const rate = (completed / (performance.now() - start)) * 1000
  await runner.stop()
  await pool.end()
  return round(rate)
}

const results: Record<string, unknown> = { machine: machine(), concurrency: CONCURRENCY }
const rows: Record<string, number>[] = []
for (const size of SIZES) rows.push(await measureSize(size))
results.sizes = rows
const [small, large] = rows as [Record<string, number>, Record<string, number>]
results.claimIdleRatio = round(large.claimIdleP50Ms! / small.claimIdleP50Ms!, 2)
results.claimDueRatio = round(large.claimDueP50Ms! / small.claimDueP50Ms!, 2)

console.log(`\nscheduler benchmark (${JSON.stringify(machine())}), no-op runs, concurrency ${CONCURRENCY}`)
const keys = Object.keys(rows[0]!)
console.log(['measurement', ...SIZES.map((s) => `${s} schedules`)].map((c) => c.padStart(22)).join(''))
for (const key of keys.slice(1)) {
  console.log([key, ...rows.map((r) => String(r[key]))].map((c) => c.padStart(22)).join(''))
}
console.log(
  `claim time, ${SIZES[1]} vs ${SIZES[0]} schedules: idle ${results.claimIdleRatio}x, with due work ${results.claimDueRatio}x (target <= 1.5x)`,
)
await writeResults(quick ? 'scheduler-quick.json' : 'scheduler.json', results)
