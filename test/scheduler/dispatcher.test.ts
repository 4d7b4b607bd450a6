import { sql } from 'kysely'
import { pino } from 'pino'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'

import { createLogger } from '../../src/logger.ts'
import { Dispatcher, type DispatcherOptions, type ExecutionResult } from '../../src/scheduler/dispatcher.ts'
import type { ClaimedRun } from '../../src/scheduler/runs.ts'
import { requestRun } from '../../src/scheduler/runs.ts'
import { localWakeups, postgresWakeups, type Wakeups } from '../../src/scheduler/wakeups.ts'
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

type Execute = (run: ClaimedRun, signal: AbortSignal) => Promise<ExecutionResult>

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

it('a run that loses its lease is aborted at the next heartbeat, and its late success is not committed', async () => {
  const sync = await createSyncFixture(db, { state: 'PAUSED' })
  let signal: AbortSignal | undefined
  let committed = false
  await startDispatcher(async (_run, s) => {
    signal = s
    await new Promise((resolve) => {
      s.addEventListener('abort', resolve)
      setTimeout(resolve, 10_000)
    })
    return { state: 'SUCCEEDED', commit: async () => void (committed = true) }
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
  expect(committed).toBe(false)
  expect(await runRows(db, sync.syncId)).toMatchObject([{ state: 'CANCELLED', result: null }])
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

it('commit() runs in the transaction that records an accepted success', async () => {
  const sync = await createSyncFixture(db, { state: 'PAUSED' })
  let committedRun: number | undefined
  await startDispatcher(async (run) => ({
    state: 'SUCCEEDED',
    commit: async (trx) => {
      // Inside the transaction, the run is already SUCCEEDED.
      const row = await trx
        .selectFrom('runs')
        .select('state')
        .where('id', '=', run.id)
        .executeTakeFirstOrThrow()
      expect(row.state).toBe('SUCCEEDED')
      await trx.updateTable('syncs').set({ frequency: 'committed' }).where('id', '=', run.syncId).execute()
      committedRun = run.id
    },
  }))
  await requestRun(db, { ...sync, reason: 'trigger' })
  await wakeups.notify()
  await waitFor('committed', () => committedRun)
  await waitFor('idle', () => dispatcher!.running === 0)
  const row = await db
    .selectFrom('syncs')
    .select('frequency')
    .where('id', '=', sync.syncId)
    .executeTakeFirstOrThrow()
  expect(row.frequency).toBe('committed')
  expect(await stateOf(sync.syncId)).toEqual(['SUCCEEDED'])
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
