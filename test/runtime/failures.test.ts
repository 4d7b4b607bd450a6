import { afterAll, beforeAll, expect, it } from 'vitest'

import { listRunLogs } from '../../src/runs/logs.ts'
import { KEPT_ENV } from '../../src/runtime/pool.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { killAll, runCli } from '../helpers/process.ts'
import { startTestServer, type TestServer, waitFor } from '../helpers/server.ts'
import { connect, records, type RunRow, runsOf, status, syncId, trigger } from './harness.ts'

/**
 * Sync functions that go wrong the ways users' code does: each fails its own run with a clear
 * error, and nothing else: the server keeps answering, the sync stays scheduled, and healthy syncs
 * on the same server keep working.
 */

const sync = (body: string) => `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'a sync', frequency: 'every hour',
    models: { Thing: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
    ${body}
  })`

const FILES = {
  // Throws after committing a batch, as a function does when the API changes under it.
  'throws/syncs/main.ts': sync(`
    async exec(nango) {
      await nango.batchSave([{ id: 'kept' }], 'Thing')
      const page = { items: null }
      for (const item of page.items.values()) await nango.batchSave([item], 'Thing')
    },`),
  // Not async: returns a promise chain that ends rejected.
  'rejects/syncs/main.ts': sync(`
    exec(nango) {
      return nango.log('fetching').then(() => Promise.reject(new Error('upstream answered 418: I am a teapot')))
    },`),
  // A pagination loop whose exit condition never holds.
  'hangs/syncs/main.ts': sync(`
    async exec(nango) {
      await nango.log('paging')
      let page = 1
      while (true) { page = page + 0 }
    },`),
  // Buffers the whole (endless) data set in memory before saving.
  'hogs/syncs/main.ts': sync(`
    async exec(nango) {
      const all = []
      for (let page = 0; ; page++) {
        all.push(Array.from({ length: 5000 }, (_, i) => ({ id: page + '-' + i, body: 'lorem ipsum ' + i })))
      }
    },`),
  // Grows one array of numbers without bound. In a worker thread V8 ends not the thread but the whole
  // process at the heap limit for this shape (nodejs/node#47224, on Node 20 and 24 alike), which is
  // why functions run in processes of their own.
  'collects/syncs/main.ts': sync(`
    async exec(nango) {
      const ids = []
      for (let i = 0; ; i++) ids.push(i)
    },`),
  // Throws from a timer, where nothing can catch it.
  'escapes/syncs/main.ts': sync(`
    async exec(nango) {
      setTimeout(() => { throw new Error('thrown from a timer') }, 10)
      await new Promise((resolve) => setTimeout(resolve, 5000))
    },`),
  // Looks for the server's secrets in its environment.
  'snoops/syncs/main.ts': sync(`
    async exec(nango) {
      await nango.batchSave([{ id: 'env', names: Object.keys(process.env).sort().join(',') }], 'Thing')
    },`),
  'healthy/syncs/main.ts': sync(`
    async exec(nango) {
      await nango.batchSave([{ id: 'a' }, { id: 'b' }], 'Thing')
      await nango.log('saved two')
    },`),
}

let database: TestDatabase
let t: TestServer
let serverClosed = false
const failed: Record<string, RunRow> = {}

beforeAll(async () => {
  // As a server's own secrets are in its environment (DATABASE_URL, keys): a worker must not see them.
  process.env.SYNCSTORE_TEST_SECRET = 'not for sync functions'
  database = await createTestDatabase()
  t = await startTestServer(
    FILES,
    { SYNCSTORE_RUN_TIMEOUT_MS: '6000', SYNCSTORE_RUN_MEMORY_MB: '64' },
    { database },
  )
})
afterAll(async () => {
  delete process.env.SYNCSTORE_TEST_SECRET
  await killAll()
  if (!serverClosed) await t.close()
  await database.destroy()
})

const health = async () => (await fetch(`${t.url}/health`)).status

/** Everything a failed run must show: the run, its log, the status route, its schedule, the server. */
async function expectFailedRun(pck: string, run: RunRow, error: RegExp): Promise<void> {
  expect(run.state, run.error ?? '').toBe('FAILED')
  expect(run.error).toMatch(error)
  const logs = await listRunLogs(t.database.db.kysely, run.id)
  expect(logs.filter((l) => l.level === 'error').map((l) => l.message)).toEqual([run.error])

  const s = await status(t, pck, 'c1', 'main')
  expect(s).toMatchObject({ status: 'ERROR', latestExecutionStatus: 'STOPPED' })
  expect(Date.parse(s.nextScheduledSyncAt!)).toBeGreaterThan(Date.now())
  const schedule = await t.database.db.kysely
    .selectFrom('schedules')
    .select(['state', 'next_due_at'])
    .where('sync_id', '=', await syncId(t, pck, 'c1', 'main'))
    .executeTakeFirstOrThrow()
  expect(schedule.state).toBe('STARTED')
  expect(schedule.next_due_at.getTime()).toBeGreaterThan(Date.now())
  expect(await health()).toBe(200)
  failed[pck] = run
}

it('a function that throws fails its run with the error and keeps what it committed', async () => {
  const { main } = await connect(t, 'throws', 'c1', ['main'])
  await expectFailedRun('throws', main!, /^TypeError: Cannot read properties of null \(reading 'values'\)$/)
  expect([...(await records(t, 'throws', 'c1', 'Thing')).keys()]).toEqual(['kept'])
  expect(main!.result).toEqual({ Thing: { added: 1, updated: 0, deleted: 0 } })
})

it('a function whose promise rejects fails its run with the rejection', async () => {
  const { main } = await connect(t, 'rejects', 'c1', ['main'])
  await expectFailedRun('rejects', main!, /^Error: upstream answered 418: I am a teapot$/)
  const logs = await listRunLogs(t.database.db.kysely, main!.id)
  expect(logs.map((l) => [l.level, l.message])).toEqual([
    ['info', 'fetching'],
    ['error', main!.error],
  ])
})

it('a function that loops forever is stopped at the time limit while the server keeps serving', async () => {
  const res = await fetch(`${t.url}/connections`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ provider_config_key: 'hangs', connection_id: 'c1' }),
  })
  expect(res.status).toBe(201)
  const id = await syncId(t, 'hangs', 'c1', 'main')
  // While the function spins: the API answers, and status says RUNNING.
  await waitFor('the looping run to start', async () =>
    (await runsOf(t, id)).some((r) => r.state === 'STARTED'),
  )
  const during = await status(t, 'hangs', 'c1', 'main')
  expect(during.status).toBe('RUNNING')
  for (let i = 0; i < 5; i++) expect(await health()).toBe(200)
  const run = await waitFor('the looping run to end', async () =>
    (await runsOf(t, id)).find((r) => r.state !== 'STARTED' && r.state !== 'CREATED'),
  )
  await expectFailedRun(
    'hangs',
    run,
    /^The sync function ran longer than its time limit of 6000 ms and was stopped$/,
  )
})

// hogs: many arrays, which a worker thread survived too; collects: one array grown by push, which
// aborted the whole server from a worker thread.
it.each(['hogs', 'collects'])(
  '%s: a function that allocates without bound is stopped at the memory limit, and the server lives on',
  async (pck) => {
    const { main } = await connect(t, pck, 'c1', ['main'])
    await expectFailedRun(pck, main!, /^The sync function ran out of memory \(limit 64 MB\) and was stopped$/)
  },
)

it('an error thrown where the function cannot catch it fails its run as a crash', async () => {
  const { main } = await connect(t, 'escapes', 'c1', ['main'])
  await expectFailedRun('escapes', main!, /^The sync function crashed: thrown from a timer$/)
})

it("a function's process has none of the server's environment, only where things are and how text and time read", async () => {
  const { main } = await connect(t, 'snoops', 'c1', ['main'])
  expect(main!.state, main!.error ?? '').toBe('SUCCEEDED')
  const { names } = (await records(t, 'snoops', 'c1', 'Thing')).get('env') as unknown as { names: string }
  const seen = names.split(',')
  expect(process.env.SYNCSTORE_TEST_SECRET).toBeDefined()
  expect(seen).not.toContain('SYNCSTORE_TEST_SECRET')
  expect(seen.filter((name) => name !== 'SYNCSTORE_WORKER' && !KEPT_ENV.includes(name))).toEqual([])
})

it('after all that, a healthy sync on the same server succeeds, and a failed one runs again', async () => {
  const { main } = await connect(t, 'healthy', 'c1', ['main'])
  expect(main!.state, main!.error ?? '').toBe('SUCCEEDED')
  expect([...(await records(t, 'healthy', 'c1', 'Thing')).keys()].sort()).toEqual(['a', 'b'])
  expect(await status(t, 'healthy', 'c1', 'main')).toMatchObject({
    status: 'SUCCESS',
    latestExecutionStatus: 'SUCCESS',
    latestResult: { Thing: { added: 2, updated: 0, deleted: 0 } },
  })
  // The next run of a failing sync is taken and fails the same way (its worker was replaced).
  const again = await trigger(t, 'hogs', 'c1', 'main')
  expect(again.state).toBe('FAILED')
  expect(again.error).toBe(failed.hogs!.error)
  expect((await trigger(t, 'healthy', 'c1', 'main')).state).toBe('SUCCEEDED')
})

it(
  'syncstore runs logs RUN_ID shows what the run logged and why it failed',
  { timeout: 120_000 },
  async () => {
    const run = failed.rejects!
    // The CLI opens the database itself; an embedded one only while no one else has it open.
    await t.close()
    serverClosed = true
    if (database.target.kind === 'embedded') await database.db.close()
    const env =
      database.target.kind === 'postgres'
        ? { DATABASE_URL: database.target.url }
        : { SYNCSTORE_DATA_DIR: database.target.dataDir }
    const result = await runCli(['runs', 'logs', String(run.id)], { ...env, LOG_LEVEL: 'silent' })
    expect(result.code, result.stderr).toBe(0)
    const lines = result.stdout.trimEnd().split('\n')
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(/^\S+ INFO {2}fetching$/)
    expect(lines[1]).toMatch(/^\S+ ERROR Error: upstream answered 418: I am a teapot$/)
    expect(result.stderr).toContain(`Run ${run.id}: FAILED (Error: upstream answered 418: I am a teapot)`)

    const json = await runCli(['runs', 'logs', String(run.id), '--json'], { ...env, LOG_LEVEL: 'silent' })
    expect(JSON.parse(json.stdout)).toMatchObject({ state: 'FAILED', error: run.error, logs: [{}, {}] })
  },
)
