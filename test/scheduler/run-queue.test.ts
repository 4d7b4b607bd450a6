import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { Queryable } from '../../src/db/database.ts'
import { claimDueRuns, requestRun } from '../../src/scheduler/run-queue.ts'
import { setScheduleFrequency, setScheduleState } from '../../src/scheduler/schedules.ts'
import { SCHEDULE_TRANSITIONS, scheduleStatesLeadingTo } from '../../src/scheduler/states.ts'
import { createTestDatabase, type TestDatabase, testDatabaseKind } from '../helpers/database.ts'
import {
  backdateSchedule,
  createSyncFixture,
  endRun,
  gridPosition,
  runRows,
  scheduleRow,
  type SyncFixture,
} from './fixtures.ts'

/**
 * The scheduler's tables and their compare-and-set transitions, straight on the stores (no HTTP):
 * asking for runs, and the dispatcher's claim (claimDueRuns) starting them and due schedules. A
 * claimed run's own life is test/runs/lease.test.ts.
 */

let database: TestDatabase
let db: TestDatabase['db']['kysely']
beforeAll(async () => {
  database = await createTestDatabase()
  db = database.db.kysely
})
afterAll(() => database.destroy())

/** A sync with one claimed (STARTED) run; the schedule is paused so nothing else comes due. */
async function startedRun() {
  const sync = await createSyncFixture(db, { state: 'PAUSED' })
  const id = await requestRun(db, { ...sync, reason: 'trigger' })
  const claimed = await claimDueRuns(db, 'test-owner', 100)
  const run = claimed.find((r) => r.id === id)
  expect(run).toBeDefined()
  return { sync, run: run! }
}

describe('transition table', () => {
  it('schedules: STARTED <-> PAUSED, either -> DELETED, and back when the definition reappears', () => {
    expect(SCHEDULE_TRANSITIONS.STARTED).toEqual(['PAUSED', 'DELETED'])
    expect(SCHEDULE_TRANSITIONS.PAUSED).toEqual(['STARTED', 'DELETED'])
    expect(SCHEDULE_TRANSITIONS.DELETED).toEqual(['STARTED', 'PAUSED'])
    expect(scheduleStatesLeadingTo('PAUSED')).toEqual(['STARTED', 'DELETED'])
    expect(scheduleStatesLeadingTo('DELETED')).toEqual(['STARTED', 'PAUSED'])
  })
})

describe('run queue', () => {
  it('requestRun twice makes one waiting run whose reset and emptyCache are OR-ed', async () => {
    const sync = await createSyncFixture(db, { state: 'PAUSED' })
    const first = await requestRun(db, { ...sync, reason: 'trigger', reset: true })
    const second = await requestRun(db, { ...sync, reason: 'trigger', emptyCache: true })
    const third = await requestRun(db, { ...sync, reason: 'start' })
    expect([second, third]).toEqual([first, first])
    const rows = await runRows(db, sync.syncId)
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ state: 'CREATED', reset: true, empty_cache: true })
  })

  it('claimDueRuns takes a waiting run once, and skips a sync whose run is executing', async () => {
    const { sync, run } = await startedRun()
    expect(run).toMatchObject({ syncId: sync.syncId, reason: 'trigger', reset: false })
    expect(run.lease).toMatch(/^[0-9a-f-]{36}$/)
    const [row] = await runRows(db, sync.syncId)
    expect(row).toMatchObject({ state: 'STARTED', owner: 'test-owner', lease: run.lease })
    // A follow-up waits while the first run executes: it is not claimed.
    const followUp = await requestRun(db, { ...sync, reason: 'trigger' })
    expect((await claimDueRuns(db, 'other', 100)).map((r) => r.id)).not.toContain(followUp)
    expect((await runRows(db, sync.syncId)).map((r) => r.state)).toEqual(['STARTED', 'CREATED'])
    expect(await endRun(db, run, { state: 'SUCCEEDED' })).toBe(true)
    const [next] = (await claimDueRuns(db, 'other', 100)).filter((r) => r.syncId === sync.syncId)
    expect(next).toMatchObject({ id: followUp, reason: 'trigger' })
    expect(next!.lease).not.toBe(run.lease)
    expect((await claimDueRuns(db, 'other', 100)).map((r) => r.syncId)).not.toContain(sync.syncId)
  })

  it('the database allows one executing and one waiting run per sync', async () => {
    const { sync } = await startedRun()
    await requestRun(db, { ...sync, reason: 'trigger' })
    const insert = (state: 'STARTED' | 'CREATED') =>
      sql`INSERT INTO runs (sync_id, connection_pk, state, reason) VALUES (${sync.syncId}, ${sync.connectionPk}, ${state}, 'trigger')`.execute(
        db,
      )
    await expect(insert('STARTED')).rejects.toMatchObject({ code: '23505' })
    await expect(insert('CREATED')).rejects.toMatchObject({ code: '23505' })
    expect((await runRows(db, sync.syncId)).map((r) => r.state)).toEqual(['STARTED', 'CREATED'])
  })

  it.runIf(testDatabaseKind === 'postgres')(
    'claimDueRuns in concurrent transactions never claims the same run nor starts a schedule twice',
    async () => {
      const waiting: SyncFixture[] = []
      for (let i = 0; i < 12; i++) waiting.push(await createSyncFixture(db, { state: 'PAUSED' }))
      // Only these syncs count (no other test's waiting run or due schedule may take a place in A's limit).
      await sql`UPDATE runs SET state = 'CANCELLED' WHERE state = 'CREATED'`.execute(db)
      await sql`UPDATE schedules SET state = 'PAUSED' WHERE state = 'STARTED'`.execute(db)
      const mine = new Set(waiting.map((s) => s.syncId))
      const claim = (trx: Queryable, limit: number) =>
        claimDueRuns(trx, 'c', limit).then((runs) => runs.filter((r) => mine.has(r.syncId)))
      for (const sync of waiting) await requestRun(db, { ...sync, reason: 'trigger' })

      // Transaction A holds its claim open while B claims on another connection: B skips A's rows.
      let a: number[] = []
      let b: number[] = []
      await db.transaction().execute(async (trxA) => {
        a = (await claim(trxA, 5)).map((r) => r.id)
        b = await db.transaction().execute(async (trxB) => (await claim(trxB, 100)).map((r) => r.id))
      })
      expect(a).toHaveLength(5)
      expect(b).toHaveLength(7)
      expect(a.filter((id) => b.includes(id))).toEqual([])

      // And a burst of claimers at once, each in its own transaction, over waiting runs and due
      // schedules (started syncs, due at once, with nothing waiting).
      for (const sync of waiting) {
        await sql`UPDATE runs SET state = 'SUCCEEDED' WHERE sync_id = ${sync.syncId} AND state = 'STARTED'`.execute(
          db,
        )
        await requestRun(db, { ...sync, reason: 'trigger' })
      }
      const scheduled: SyncFixture[] = []
      for (let i = 0; i < 6; i++) scheduled.push(await createSyncFixture(db))
      for (const sync of scheduled) mine.add(sync.syncId)
      const claims = await Promise.all(
        Array.from({ length: 6 }, () => db.transaction().execute((trx) => claim(trx, 4))),
      )
      const all = claims.flat()
      expect(new Set(all.map((r) => r.id)).size).toBe(all.length)
      expect(all.length).toBeLessThanOrEqual(18)
      // What a claimer skipped (locked by another) is still there for the next claim: then every
      // waiting run is started, and every due schedule has become exactly one run.
      await claim(db, 100)
      for (const sync of waiting) {
        expect((await runRows(db, sync.syncId)).map((r) => r.state)).toEqual(['SUCCEEDED', 'STARTED'])
      }
      for (const sync of scheduled) {
        expect(await runRows(db, sync.syncId)).toMatchObject([{ state: 'STARTED', reason: 'schedule' }])
        expect(await gridPosition(db, sync.syncId)).toMatchObject({ k: 1, onGrid: true, afterNow: true })
      }
    },
  )
})

describe('schedules', () => {
  it('claimDueRuns starts a due schedule as one run and moves it to the next grid point', async () => {
    const sync = await createSyncFixture(db)
    const [run] = (await claimDueRuns(db, 'test-owner', 1000)).filter((r) => r.syncId === sync.syncId)
    expect(run).toMatchObject({ reason: 'schedule' })
    expect(await runRows(db, sync.syncId)).toMatchObject([
      { id: run!.id, state: 'STARTED', reason: 'schedule' },
    ])
    expect(await gridPosition(db, sync.syncId)).toMatchObject({ k: 1, onGrid: true, afterNow: true })
    // Its run ended, the sync is idle: still nothing until the next grid point.
    expect(await endRun(db, run!, { state: 'SUCCEEDED' })).toBe(true)
    expect((await claimDueRuns(db, 'test-owner', 1000)).map((r) => r.syncId)).not.toContain(sync.syncId)
    expect(await runRows(db, sync.syncId)).toHaveLength(1)
  })

  it('missed slots are skipped: one run, and the next due time is the first grid point after now', async () => {
    const sync = await createSyncFixture(db)
    // Created 10.5 periods ago and due since: ten slots were missed.
    await backdateSchedule(db, sync.syncId, 10 * 60_000 + 30_000)
    await claimDueRuns(db, 'test-owner', 1000)
    expect(await runRows(db, sync.syncId)).toHaveLength(1)
    const position = await gridPosition(db, sync.syncId)
    expect(position).toMatchObject({ onGrid: true, afterNow: true, withinPeriod: true })
    expect(position.k).toBeGreaterThanOrEqual(11)
  })

  it('a due schedule whose sync has a run executing, or one waiting behind it, skips the slot', async () => {
    // A waiting run of an idle sync is started by the same claim instead: see claimDueRuns below.
    const executing = await startedRun()
    const waiting = await startedRun()
    await requestRun(db, { ...waiting.sync, reason: 'trigger', reset: true })
    for (const { syncId } of [executing.sync, waiting.sync]) {
      await setScheduleState(db, [syncId], 'STARTED')
      await backdateSchedule(db, syncId, 90_000)
    }
    const claimed = (await claimDueRuns(db, 'test-owner', 1000)).map((r) => r.syncId)
    expect(claimed).not.toContain(executing.sync.syncId)
    expect(claimed).not.toContain(waiting.sync.syncId)
    expect((await runRows(db, executing.sync.syncId)).map((r) => r.state)).toEqual(['STARTED'])
    expect(await runRows(db, waiting.sync.syncId)).toMatchObject([
      { state: 'STARTED' },
      { state: 'CREATED', reason: 'trigger', reset: true },
    ])
    for (const { syncId } of [executing.sync, waiting.sync]) {
      expect(await gridPosition(db, syncId)).toMatchObject({ onGrid: true, afterNow: true })
    }
  })

  it('paused and deleted schedules create no runs', async () => {
    const paused = await createSyncFixture(db, { state: 'PAUSED' })
    const deleted = await createSyncFixture(db)
    await setScheduleState(db, [deleted.syncId], 'DELETED')
    for (const { syncId } of [paused, deleted]) await backdateSchedule(db, syncId, 5 * 60_000)
    await claimDueRuns(db, 'test-owner', 1000)
    expect(await runRows(db, paused.syncId)).toEqual([])
    expect(await runRows(db, deleted.syncId)).toEqual([])
  })

  it('setScheduleState follows the transition table', async () => {
    const sync = await createSyncFixture(db)
    const ids = [sync.syncId]
    expect(await setScheduleState(db, ids, 'PAUSED')).toEqual(ids)
    expect(await setScheduleState(db, ids, 'PAUSED')).toEqual([]) // already paused: no transition
    // Only from the states asked for: "start" resumes paused schedules and nothing else.
    await backdateSchedule(db, sync.syncId, 150_000)
    expect(await setScheduleState(db, ids, 'STARTED', ['PAUSED'])).toEqual(ids)
    // Resumed on its grid, strictly after now (the missed slots are not run).
    expect(await gridPosition(db, sync.syncId)).toMatchObject({ k: 3, onGrid: true, afterNow: true })
    expect(await setScheduleState(db, ids, 'DELETED')).toEqual(ids)
    expect(await setScheduleState(db, ids, 'DELETED')).toEqual([]) // already deleted
    // The API's start only resumes paused schedules; a deleted one is left alone.
    expect(await setScheduleState(db, ids, 'STARTED', ['PAUSED'])).toEqual([])
    expect((await scheduleRow(db, sync.syncId)).state).toBe('DELETED')
    // A definition that reappears may bring it back paused (autoStart: false).
    expect(await setScheduleState(db, ids, 'PAUSED')).toEqual(ids)
    expect(await setScheduleState(db, [], 'PAUSED')).toEqual([])
  })

  it('setScheduleFrequency puts the next due time on the new grid', async () => {
    const sync = await createSyncFixture(db)
    await backdateSchedule(db, sync.syncId, 10 * 60_000 + 30_000)
    await setScheduleFrequency(db, sync.syncId, 4 * 60_000)
    const row = await scheduleRow(db, sync.syncId)
    expect(Number(row.frequency_ms)).toBe(4 * 60_000)
    // 10.5 minutes into the grid: the next 4-minute point is at 12 minutes.
    expect(await gridPosition(db, sync.syncId)).toMatchObject({ k: 3, onGrid: true, afterNow: true })
    // The same frequency again changes nothing.
    await setScheduleFrequency(db, sync.syncId, 4 * 60_000)
    expect((await scheduleRow(db, sync.syncId)).next_due_at).toEqual(row.next_due_at)
  })
})

describe('claimDueRuns (what the dispatcher claims)', () => {
  it('starts waiting runs and due schedules; a schedule whose sync has a run waiting or executing skips the slot', async () => {
    const executing = await startedRun() // first: it claims every waiting run
    const waiting = await createSyncFixture(db, { state: 'PAUSED' })
    await requestRun(db, { ...waiting, reason: 'trigger', reset: true })
    const due = await createSyncFixture(db)
    await backdateSchedule(db, due.syncId, 90_000)
    const waitingAndDue = await createSyncFixture(db, { state: 'PAUSED' })
    const triggered = await requestRun(db, { ...waitingAndDue, reason: 'trigger' })
    for (const { syncId } of [executing.sync, waitingAndDue]) {
      await setScheduleState(db, [syncId], 'STARTED')
      await backdateSchedule(db, syncId, 90_000)
    }
    const slot = (await scheduleRow(db, due.syncId)).next_due_at

    const claimed = await claimDueRuns(db, 'owner-a', 1000)
    const bySync = (syncId: string) => claimed.filter((r) => r.syncId === syncId)
    expect(bySync(waiting.syncId)).toMatchObject([{ reason: 'trigger', reset: true }])
    expect(bySync(due.syncId)).toMatchObject([{ reason: 'schedule', reset: false, emptyCache: false }])
    expect(bySync(executing.sync.syncId)).toEqual([])
    expect(bySync(waitingAndDue.syncId)).toMatchObject([{ id: triggered, reason: 'trigger' }])

    // The scheduled run is a started run of its slot, holding the lease the claim returned.
    const [run] = bySync(due.syncId)
    expect(await runRows(db, due.syncId)).toMatchObject([
      {
        id: run!.id,
        state: 'STARTED',
        reason: 'schedule',
        owner: 'owner-a',
        lease: run!.lease,
        due_at: slot,
      },
    ])
    expect((await runRows(db, executing.sync.syncId)).map((r) => r.state)).toEqual(['STARTED'])
    expect((await runRows(db, waitingAndDue.syncId)).map((r) => [r.id, r.state])).toEqual([
      [triggered, 'STARTED'],
    ])
    for (const { syncId } of [due, executing.sync, waitingAndDue]) {
      expect(await gridPosition(db, syncId)).toMatchObject({ onGrid: true, afterNow: true })
    }
    expect((await claimDueRuns(db, 'owner-b', 1000)).map((r) => r.syncId)).not.toContain(due.syncId)
  })

  it('takes waiting runs first and only as many due schedules as there is room for; the others stay due', async () => {
    // Nothing of the tests before may take a place.
    await sql`UPDATE runs SET state = 'CANCELLED' WHERE state = 'CREATED'`.execute(db)
    await sql`UPDATE schedules SET state = 'PAUSED' WHERE state = 'STARTED'`.execute(db)
    const waiting = await createSyncFixture(db, { state: 'PAUSED' })
    await requestRun(db, { ...waiting, reason: 'trigger' })
    const due = [await createSyncFixture(db), await createSyncFixture(db), await createSyncFixture(db)]

    const first = await claimDueRuns(db, 'owner-a', 2)
    expect(first.map((r) => r.reason)).toEqual(['trigger', 'schedule'])
    const started = due.filter((s) => first.some((r) => r.syncId === s.syncId))
    expect(started).toHaveLength(1)
    for (const sync of due.filter((s) => !started.includes(s))) {
      expect(await runRows(db, sync.syncId)).toEqual([])
      expect((await gridPosition(db, sync.syncId)).afterNow).toBe(false)
    }
    expect((await claimDueRuns(db, 'owner-a', 5)).map((r) => r.reason)).toEqual(['schedule', 'schedule'])
  })
})
