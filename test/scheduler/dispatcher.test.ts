import { sql } from 'kysely'
import { pino } from 'pino'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'

import { createSealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createLogger } from '../../src/logger.ts'
import { Metrics } from '../../src/metrics/metrics.ts'
import type { ClaimedRun } from '../../src/runs/lease.ts'
import type { RunOutcome } from '../../src/runs/states.ts'
import { Dispatcher, type DispatcherOptions } from '../../src/scheduler/dispatcher.ts'
import { requestRun } from '../../src/scheduler/run-queue.ts'
import { localWakeups, postgresWakeups, type Wakeups } from '../../src/scheduler/wakeups.ts'
import { removeWebhook, setWebhook } from '../../src/webhooks/store.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { waitFor } from '../helpers/server.ts'
import { createSyncFixture, runRows } from './fixtures.ts'

/** The worker loop with a test executor (no worker threads): claiming, concurrency, wake-ups, leases, shutdown. */

let database: TestDatabase
let db: TestDatabase['db']['kysely']
let wakeups: Wakeups
const logger = createLogger('silent')
beforeAll(async () => {
  database = await createTestDatabase()
  db = database.db.kysely
  wakeups =
    database.target.kind === 'postgres' ? postgresWakeups(db, database.target.url, logger) : localWakeups()
})
afterAll(() => database.destroy())

let dispatcher: Dispatcher | undefined
afterEach(async () => {
  await dispatcher?.stop(0)
  dispatcher = undefined
  // Nothing of one test may be claimed by the next one's dispatcher.
  await sql`UPDATE schedules SET state = 'DELETED'`.execute(db)
  await sql`UPDATE runs SET state = 'CANCELLED' WHERE state IN ('CREATED', 'STARTED')`.execute(db)
})

type Execute = (run: ClaimedRun, signal: AbortSignal) => Promise<RunOutcome>

async function startDispatcher(execute: Execute, options: Partial<DispatcherOptions> = {}) {
  dispatcher = new Dispatcher({
    db,
    wakeups,
    executor: { execute },
    logger,
    concurrency: 4,
    pollMs: 200,
    heartbeatIntervalMs: 100,
    heartbeatTimeoutMs: 5_000,
    maxRunMs: 60_000,
    ...options,
  })
  await dispatcher.start()
  return dispatcher
}

const stateOf = async (syncId: string) => (await runRows(db, syncId)).map((r) => r.state)
const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

it('runs due schedules, never more at once than its concurrency', async () => {
  const syncs: Awaited<ReturnType<typeof createSyncFixture>>[] = []
  for (let i = 0; i < 5; i++) syncs.push(await createSyncFixture(db))
  let running = 0
  let most = 0
  const seen: ClaimedRun[] = []
  await startDispatcher(
    async (run) => {
      seen.push(run)
      most = Math.max(most, ++running)
      await tick(150)
      running--
      return { state: 'SUCCEEDED', result: { Thing: { added: 1, updated: 0, deleted: 0 } } }
    },
    { concurrency: 2 },
  )
  await waitFor('every scheduled run succeeded', async () => {
    for (const s of syncs) if ((await stateOf(s.syncId)).join() !== 'SUCCEEDED') return false
    return true
  })
  expect(most).toBe(2)
  expect(seen.map((r) => r.reason)).toEqual(Array(5).fill('schedule'))
  expect((await runRows(db, syncs[0]!.syncId))[0]!.result).toEqual({
    Thing: { added: 1, updated: 0, deleted: 0 },
  })
})

it('a requested run starts within about 100 ms of notify(), without waiting for a poll', async () => {
  const sync = await createSyncFixture(db, { state: 'PAUSED' })
  let startedAt = 0
  await startDispatcher(
    async () => {
      startedAt = performance.now()
      return { state: 'SUCCEEDED' }
    },
    { pollMs: 60_000 },
  )
  const latencies: number[] = []
  for (let i = 0; i < 5; i++) {
    // Let the loop go back to sleep first: only the wake-up can start the run.
    await waitFor('idle', () => dispatcher!.running === 0)
    await tick(50)
    startedAt = 0
    const t0 = performance.now()
    await requestRun(db, { ...sync, reason: 'trigger' })
    await wakeups.notify()
    await waitFor('run started', () => startedAt > 0, { timeoutMs: 5_000, intervalMs: 5 })
    latencies.push(Math.round(startedAt - t0))
    await waitFor('run recorded', async () => (await stateOf(sync.syncId)).at(-1) === 'SUCCEEDED')
  }
  const median = [...latencies].sort((a, b) => a - b)[2]!
  console.log(
    `[${database.target.kind}] requestRun + notify() to execute(): ${latencies.join(', ')} ms (median ${median})`,
  )
  // The target is 100 ms; this machine is shared and loaded, so the assertion leaves slack.
  expect(median).toBeLessThan(500)
})

it('stop(grace) lets a run finish within the grace period', async () => {
  const sync = await createSyncFixture(db)
  let started = false
  await startDispatcher(async () => {
    started = true
    await tick(300)
    return { state: 'SUCCEEDED' }
  })
  await waitFor('run started', () => started)
  await dispatcher!.stop(10_000)
  expect(await stateOf(sync.syncId)).toEqual(['SUCCEEDED'])
})

it('stop(grace) releases a run that outlives the grace: CANCELLED, and the same run asked for again', async () => {
  const sync = await createSyncFixture(db, { state: 'PAUSED' })
  let signal: AbortSignal | undefined
  let finish: (() => void) | undefined
  await startDispatcher(async (_run, s) => {
    signal = s
    // Ignores its signal: only the test ends it.
    await new Promise<void>((resolve) => (finish = resolve))
    return { state: 'SUCCEEDED' }
  })
  await requestRun(db, { ...sync, reason: 'trigger', reset: true, emptyCache: true })
  await wakeups.notify()
  await waitFor('run started', () => signal)
  const t0 = performance.now()
  await dispatcher!.stop(300)
  expect(performance.now() - t0).toBeLessThan(5_000)
  expect(signal!.aborted).toBe(true)
  const rows = await runRows(db, sync.syncId)
  expect(rows).toMatchObject([
    { state: 'CANCELLED', error: expect.stringContaining('Interrupted') },
    { state: 'CREATED', reason: 'trigger', reset: true, empty_cache: true },
  ])
  // The abandoned execution ends late: nothing it reports is recorded.
  finish!()
  await tick(100)
  expect((await runRows(db, sync.syncId)).map((r) => r.state)).toEqual(['CANCELLED', 'CREATED'])
})

/** The dev environment's webhook URL, for the tests of what a recorded success queues. */
async function withWebhook(test: (environmentId: number) => Promise<void>): Promise<void> {
  const env = await ensureEnvironment(db, 'dev')
  await setWebhook(db, createSealer(null), env.id, 'http://127.0.0.1:9/hook')
  try {
    await test(env.id)
  } finally {
    await removeWebhook(db, env.id)
  }
}

const deliveriesOf = (runId: number) =>
  db.selectFrom('webhook_deliveries').selectAll().where('run_id', '=', runId).orderBy('id').execute()
const syncRow = (syncId: string) =>
  db.selectFrom('syncs').selectAll().where('id', '=', syncId).executeTakeFirstOrThrow()

it('a run that loses its lease is aborted at the next heartbeat, and its late success is not committed', async () => {
  await withWebhook(async () => {
    const sync = await createSyncFixture(db, { state: 'PAUSED' })
    let signal: AbortSignal | undefined
    await startDispatcher(async (_run, s) => {
      signal = s
      await new Promise((resolve) => {
        s.addEventListener('abort', resolve)
        setTimeout(resolve, 10_000)
      })
      return { state: 'SUCCEEDED', result: { Thing: { added: 1, updated: 0, deleted: 0 } } }
    })
    await requestRun(db, { ...sync, reason: 'trigger' })
    await wakeups.notify()
    await waitFor('run started', () => signal)
    const t0 = performance.now()
    await sql`UPDATE runs SET state = 'CANCELLED' WHERE sync_id = ${sync.syncId} AND state = 'STARTED'`.execute(
      db,
    )
    await waitFor('aborted', () => signal!.aborted, { timeoutMs: 5_000, intervalMs: 10 })
    console.log(
      `[${database.target.kind}] lease lost -> abort: ${Math.round(performance.now() - t0)} ms (heartbeat every 100 ms)`,
    )
    expect(String(signal!.reason)).toContain('cancelled or expired')
    await waitFor('execution over', () => dispatcher!.running === 0)
    // None of a success's effects: no last sync date, no webhook.
    const [run] = await runRows(db, sync.syncId)
    expect(run).toMatchObject({ state: 'CANCELLED', result: null })
    expect((await syncRow(sync.syncId)).last_sync_date).toBeNull()
    expect(await deliveriesOf(run!.id)).toEqual([])
  })
})

it('a run that ends while a heartbeat is in flight is not taken for a lost lease', async () => {
  const syncs: Awaited<ReturnType<typeof createSyncFixture>>[] = []
  for (let i = 0; i < 40; i++) syncs.push(await createSyncFixture(db))
  const warnings: string[] = []
  const watched = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) })
  const aborted: number[] = []
  // Heartbeats back to back and runs of a few ms: ends and heartbeats overlap all the time.
  await startDispatcher(
    async (run, signal) => {
      await tick(Math.random() * 10)
      if (signal.aborted) aborted.push(run.id)
      return { state: 'SUCCEEDED' }
    },
    { concurrency: 8, heartbeatIntervalMs: 1, logger: watched },
  )
  await waitFor('every run succeeded', async () => {
    for (const s of syncs) if ((await stateOf(s.syncId)).join() !== 'SUCCEEDED') return false
    return true
  })
  expect(warnings.filter((w) => w.includes('lost its lease'))).toEqual([])
  expect(aborted).toEqual([])
})

it('an accepted success is recorded with its effects in one transaction: last sync date, datasets synced, webhooks', async () => {
  await withWebhook(async () => {
    const sync = await createSyncFixture(db, { state: 'PAUSED' })
    await db
      .insertInto('datasets')
      .values([
        { connection_pk: sync.connectionPk, model: 'Thing', variant: 'base' },
        { connection_pk: sync.connectionPk, model: 'Other', variant: 'base' },
      ])
      .onConflict((oc) => oc.doNothing())
      .execute()
    await startDispatcher(async () => ({
      state: 'SUCCEEDED',
      result: { Thing: { added: 2, updated: 1, deleted: 0 }, Other: { added: 0, updated: 0, deleted: 0 } },
    }))
    await requestRun(db, { ...sync, reason: 'trigger' })
    await wakeups.notify()
    await waitFor('idle', async () => (await stateOf(sync.syncId)).join() === 'SUCCEEDED')
    const [run] = await runRows(db, sync.syncId)
    // now() is the transaction's start: every stamp equal to the run's end was written with it.
    const ended = run!.ended_at!.getTime()
    expect((await syncRow(sync.syncId)).last_sync_date).toEqual(run!.started_at)
    const datasets = await db
      .selectFrom('datasets')
      .select(['model', 'last_sync_at'])
      .where('connection_pk', '=', sync.connectionPk)
      .orderBy('model')
      .execute()
    expect(datasets.map((d) => [d.model, d.last_sync_at?.getTime()])).toEqual([
      ['Other', ended],
      ['Thing', ended],
    ])
    // One webhook, for the model that changed.
    const deliveries = await deliveriesOf(run!.id)
    expect(deliveries.map((d) => d.created_at.getTime())).toEqual([ended])
    expect(JSON.parse(deliveries[0]!.body)).toMatchObject({
      model: 'Thing',
      responseResults: { added: 2, updated: 1, deleted: 0 },
      modifiedAfter: run!.started_at!.toISOString(),
      syncType: 'INITIAL',
    })
  })
})

it('runs that end together are recorded in one transaction, each with its own outcome; a lost one changes nothing', async () => {
  const syncs: Awaited<ReturnType<typeof createSyncFixture>>[] = []
  for (let i = 0; i < 6; i++) syncs.push(await createSyncFixture(db))
  const metrics = new Metrics(database.db, logger)
  const result = { Thing: { added: 1, updated: 0, deleted: 0 } }
  let release!: () => void
  const together = new Promise<void>((resolve) => (release = resolve))
  const started: ClaimedRun[] = []
  // The syncs in creation order: three succeed, two fail, and one succeeds after losing its lease.
  const outcomeOf = (run: ClaimedRun): RunOutcome => {
    const i = syncs.findIndex((s) => s.syncId === run.syncId)
    return i === 3 || i === 4 ? { state: 'FAILED', error: `failure ${i}` } : { state: 'SUCCEEDED', result }
  }
  await startDispatcher(
    async (run) => {
      started.push(run)
      await together
      return outcomeOf(run)
    },
    { concurrency: 8, metrics },
  )
  await waitFor('all six executing', () => started.length === 6)
  const lost = syncs[5]!
  await sql`UPDATE runs SET state = 'CANCELLED' WHERE sync_id = ${lost.syncId} AND state = 'STARTED'`.execute(
    db,
  )
  release()
  await waitFor('all six recorded', () => dispatcher!.running === 0)

  const rows = await Promise.all(syncs.map(async (s) => (await runRows(db, s.syncId))[0]!))
  expect(rows.map((r) => [r.state, r.error, r.result])).toEqual([
    ['SUCCEEDED', null, result],
    ['SUCCEEDED', null, result],
    ['SUCCEEDED', null, result],
    ['FAILED', 'failure 3', null],
    ['FAILED', 'failure 4', null],
    ['CANCELLED', null, null],
  ])
  // now() is the transaction's start: one end time for the five is one transaction.
  expect(new Set(rows.slice(0, 5).map((r) => r.ended_at!.getTime())).size).toBe(1)
  const lastSync = await Promise.all(syncs.map(async (s) => (await syncRow(s.syncId)).last_sync_date))
  expect(lastSync).toEqual([rows[0]!.started_at, rows[1]!.started_at, rows[2]!.started_at, null, null, null])
  const counted = (await metrics.registry.getSingleMetric('syncstore_runs_total')!.get()).values
  expect(
    Object.fromEntries(counted.filter((v) => v.value > 0).map((v) => [v.labels.outcome, v.value])),
  ).toEqual({
    succeeded: 3,
    failed: 2,
    lost: 1,
  })
})

it('stop() called while a claim is in flight does not wait for the poll interval', async () => {
  // Every query of this dispatcher waits while `hold` is set: a claim can be caught in flight.
  let hold: Promise<void> | undefined
  let held = false
  const slowDb = db.withPlugin({
    transformQuery: (args) => args.node,
    transformResult: async (args) => {
      if (hold) {
        held = true
        await hold
      }
      return args.result
    },
  })
  await startDispatcher(async () => ({ state: 'SUCCEEDED' }), { db: slowDb, pollMs: 60_000 })
  await waitFor('idle', () => dispatcher!.running === 0)
  await tick(50)
  let release!: () => void
  hold = new Promise((resolve) => (release = resolve))
  dispatcher!.poke()
  await waitFor('a claim in flight', () => held)
  const t0 = performance.now()
  const stopped = dispatcher!.stop(0)
  await tick(50)
  hold = undefined
  release()
  await stopped
  expect(performance.now() - t0).toBeLessThan(5_000)
})
