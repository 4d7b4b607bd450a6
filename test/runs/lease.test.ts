import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { expireRuns, heartbeat } from '../../src/runs/lease.ts'
import { RUN_TRANSITIONS } from '../../src/runs/states.ts'
import { claimDueRuns, requestRun } from '../../src/scheduler/run-queue.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { createSyncFixture, endRun, runRows } from '../scheduler/fixtures.ts'

/** A claimed run's life on the stores (no HTTP): its transitions, its lease, its heartbeat and expiry. */

let database: TestDatabase
let db: TestDatabase['db']['kysely']
beforeAll(async () => {
  database = await createTestDatabase()
  db = database.db.kysely
})
afterAll(() => database.destroy())

const LIMITS = { heartbeatTimeoutMs: 60_000, maxRunMs: 3_600_000 }
/** A sync with one claimed (STARTED) run; the schedule is paused so nothing else comes due. */
async function startedRun() {
  const sync = await createSyncFixture(db, { state: 'PAUSED' })
  const id = await requestRun(db, { ...sync, reason: 'trigger' })
  const claimed = await claimDueRuns(db, 'test-owner', 100)
  const run = claimed.find((r) => r.id === id)
  expect(run).toBeDefined()
  return { sync, run: run! }
}

describe("a run's state and lease", () => {
  it('runs: CREATED -> STARTED -> a final state, CREATED -> CANCELLED | EXPIRED; final states are final', () => {
    expect(RUN_TRANSITIONS).toEqual({
      CREATED: ['STARTED', 'CANCELLED', 'EXPIRED'],
      STARTED: ['SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED'],
      SUCCEEDED: [],
      FAILED: [],
      CANCELLED: [],
      EXPIRED: [],
    })
  })

  it('finishRun with a wrong lease, or twice, returns false and changes nothing', async () => {
    const { sync, run } = await startedRun()
    const wrong = { id: run.id, lease: '00000000-0000-4000-8000-000000000000' }
    expect(await endRun(db, wrong, { state: 'FAILED', error: 'late' })).toBe(false)
    expect((await runRows(db, sync.syncId))[0]).toMatchObject({
      state: 'STARTED',
      error: null,
      ended_at: null,
    })

    const result = { Contact: { added: 2, updated: 0, deleted: 0 } }
    expect(await endRun(db, run, { state: 'SUCCEEDED', result })).toBe(true)
    expect(await endRun(db, run, { state: 'FAILED', error: 'again' })).toBe(false)
    expect((await runRows(db, sync.syncId))[0]).toMatchObject({ state: 'SUCCEEDED', result, error: null })
  })

  it('heartbeat renews only runs still held by that lease', async () => {
    const a = await startedRun()
    const b = await startedRun()
    const c = await startedRun()
    await endRun(db, c.run, { state: 'SUCCEEDED' })
    await sql`UPDATE runs SET heartbeat_at = now() - interval '1 hour' WHERE id = ${a.run.id}`.execute(db)
    const held = await heartbeat(db, [
      { id: a.run.id, lease: a.run.lease },
      { id: b.run.id, lease: a.run.lease }, // someone else's lease
      { id: c.run.id, lease: c.run.lease }, // finished
      { id: 987654321, lease: a.run.lease }, // no such run
    ])
    expect([...held]).toEqual([a.run.id])
    const [row] = await runRows(db, a.sync.syncId)
    expect(Date.now() - row!.heartbeat_at!.getTime()).toBeLessThan(60_000)
  })

  it('expireRuns expires runs without a recent heartbeat or past the time limit, and leaves fresh ones', async () => {
    const stale = await startedRun()
    const long = await startedRun()
    const fresh = await startedRun()
    await sql`UPDATE runs SET heartbeat_at = now() - interval '10 minutes' WHERE id = ${stale.run.id}`.execute(
      db,
    )
    await sql`UPDATE runs SET started_at = now() - interval '2 hours' WHERE id = ${long.run.id}`.execute(db)
    const expired = await expireRuns(db, LIMITS)
    expect(expired.map((r) => r.id).sort()).toEqual([stale.run.id, long.run.id].sort())
    const [staleRow] = await runRows(db, stale.sync.syncId)
    expect(staleRow).toMatchObject({ state: 'EXPIRED', error: expect.stringContaining('no heartbeat') })
    expect((await runRows(db, long.sync.syncId))[0]!.error).toContain('ran longer than')
    expect((await runRows(db, fresh.sync.syncId))[0]!.state).toBe('STARTED')

    // The expired run's worker comes back: its report and heartbeat are refused.
    expect(
      await endRun(db, stale.run, {
        state: 'SUCCEEDED',
        result: { X: { added: 1, updated: 0, deleted: 0 } },
      }),
    ).toBe(false)
    expect([...(await heartbeat(db, [stale.run]))]).toEqual([])
    expect((await runRows(db, stale.sync.syncId))[0]).toMatchObject({ state: 'EXPIRED', result: null })
    expect(await expireRuns(db, LIMITS)).toEqual([])
  })
})
