import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, expect, it } from 'vitest'

import {
  api,
  runsOf,
  startTestServer,
  syncStatusOf,
  type TestServer,
  waitFor,
  waitForStatus,
} from '../helpers/server.ts'

/**
 * A sync that is running when it is triggered, paused or reset (SPEC section 4: a trigger during a
 * run queues exactly one follow-up). The function waits for a per-connection "open" file and logs
 * what it saw at its start (lastSyncDate, checkpoint) to a per-connection file.
 */

let t: TestServer
let nango: Nango
let gate: string
beforeAll(async () => {
  gate = await mkdtemp(path.join(os.tmpdir(), 'syncstore-gate-'))
  t = await startTestServer({
    'crm/syncs/slow.ts': `
      import { appendFileSync, existsSync } from 'node:fs'
      import { createSync } from 'syncstore'
      const GATE = ${JSON.stringify(gate)}
      export default createSync({
        description: 'Waits for its gate', frequency: 'every hour',
        models: { Row: { type: 'object' } },
        async exec(nango) {
          const checkpoint = await nango.getCheckpoint()
          const seen = { lastSyncDate: nango.lastSyncDate ? nango.lastSyncDate.toISOString() : null, checkpoint }
          appendFileSync(GATE + '/log-' + nango.connectionId, JSON.stringify(seen) + '\\n')
          const until = Date.now() + 15000
          while (!existsSync(GATE + '/open-' + nango.connectionId) && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 20))
          }
          const n = (checkpoint?.n ?? 0) + 1
          await nango.batchSave([{ id: 'run-' + n }], 'Row')
          await nango.saveCheckpoint({ n })
        },
      })`,
  })
  nango = new Nango({ host: t.url, secretKey: t.key })
})
afterAll(async () => {
  await t?.close()
  await rm(gate, { recursive: true, force: true })
})

const slow = (connection: string) => ({ pck: 'crm', connectionId: connection, name: 'slow' })
/** What each run of the connection saw when it started, in order. */
async function seen(
  connection: string,
): Promise<{ lastSyncDate: string | null; checkpoint: { n: number } | null }[]> {
  const text = await readFile(path.join(gate, `log-${connection}`), 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line))
}
const open = (connection: string) => writeFile(path.join(gate, `open-${connection}`), '')
async function connect(connection: string) {
  const res = await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: connection })
  expect(res.status).toBe(201)
}
const states = async (connection: string) => (await runsOf(t, slow(connection))).map((r) => r.state)
const settled = (connection: string, count: number) =>
  waitFor(`${count} finished runs on ${connection}`, async () => {
    const s = await states(connection)
    return s.length >= count && !s.includes('STARTED') && !s.includes('CREATED') ? s : undefined
  })
const records = async (connection: string) =>
  (await nango.listRecords({ providerConfigKey: 'crm', connectionId: connection, model: 'Row' })).records.map(
    (r) => r.id,
  )

it('triggers during a run queue exactly one follow-up run, and each answers 200', async () => {
  await connect('busy')
  // The connection's first run is executing, held at its gate.
  await waitFor('first run started', async () => (await seen('busy')).length === 1)
  expect(await states('busy')).toEqual(['STARTED'])

  await nango.triggerSync('crm', ['slow'], 'busy')
  const body = { syncs: ['slow'], provider_config_key: 'crm', connection_id: 'busy' }
  expect(await api(t, 'POST', '/sync/trigger', body)).toEqual({ status: 200, body: { success: true } })
  expect(await api(t, 'POST', '/sync/trigger', { ...body, syncs: [] })).toEqual({
    status: 200,
    body: { success: true },
  })
  expect(await states('busy')).toEqual(['STARTED', 'CREATED'])
  expect(await syncStatusOf(t, 'crm', 'busy', 'slow')).toMatchObject({ status: 'RUNNING' })

  await open('busy')
  expect(await settled('busy', 2)).toEqual(['SUCCEEDED', 'SUCCEEDED'])
  // The follow-up started after the first run ended: it saw that run's lastSyncDate and checkpoint.
  const [, followUp] = await seen('busy')
  expect(followUp).toEqual({ lastSyncDate: expect.any(String), checkpoint: { n: 1 } })
  // And nothing else is coming: no run waiting, the next slot is about an hour away.
  const status = await syncStatusOf(t, 'crm', 'busy', 'slow')
  expect(status).toMatchObject({ status: 'SUCCESS', checkpoint: { n: 2 } })
  expect(Date.parse(status!.nextScheduledSyncAt!) - Date.now()).toBeGreaterThan(30 * 60_000)
  expect(await states('busy')).toEqual(['SUCCEEDED', 'SUCCEEDED'])
})

it('pause during a run: the run finishes, status goes RUNNING then PAUSED, and no run follows', async () => {
  await connect('halt')
  await waitFor('first run started', async () => (await seen('halt')).length === 1)
  // A follow-up is waiting when the pause comes: it is cancelled, the executing run is not.
  await nango.triggerSync('crm', ['slow'], 'halt')
  await nango.pauseSync('crm', ['slow'], 'halt')
  expect(await states('halt')).toEqual(['STARTED', 'CANCELLED'])
  expect(await syncStatusOf(t, 'crm', 'halt', 'slow')).toMatchObject({
    status: 'RUNNING',
    nextScheduledSyncAt: null,
  })

  await open('halt')
  const paused = await waitForStatus(t, slow('halt'), (s) => s.status !== 'RUNNING')
  expect(paused).toMatchObject({
    status: 'PAUSED',
    nextScheduledSyncAt: null,
    latestExecutionStatus: 'SUCCESS',
  })
  expect(await states('halt')).toEqual(['SUCCEEDED', 'CANCELLED'])
  expect(await records('halt')).toEqual(['run-1'])
  expect(await seen('halt')).toHaveLength(1)
})

it('opts.reset clears the checkpoint and lastSyncDate; with emptyCache the records go first', async () => {
  await open('fresh')
  await connect('fresh')
  let runs = 1
  const trigger = async (opts?: { reset: boolean; emptyCache?: boolean }) => {
    await nango.triggerSync('crm', ['slow'], 'fresh', opts)
    await settled('fresh', ++runs)
  }
  await settled('fresh', 1)
  await trigger()
  await trigger({ reset: true })
  expect(await records('fresh')).toEqual(['run-1', 'run-2'])
  await trigger()
  await trigger({ reset: true, emptyCache: true })
  const views = await seen('fresh')
  expect(views).toEqual([
    { lastSyncDate: null, checkpoint: null },
    { lastSyncDate: expect.any(String), checkpoint: { n: 1 } },
    // reset: as if it never ran (the records stay)
    { lastSyncDate: null, checkpoint: null },
    { lastSyncDate: expect.any(String), checkpoint: { n: 1 } },
    // reset + emptyCache: nothing left from before, records included
    { lastSyncDate: null, checkpoint: null },
  ])
  // lastSyncDate is the start of the previous successful run: later each time.
  expect(Date.parse(views[3]!.lastSyncDate!)).toBeGreaterThan(Date.parse(views[1]!.lastSyncDate!))
  expect(await records('fresh')).toEqual(['run-1'])
  const deleted = await nango.listRecords({
    providerConfigKey: 'crm',
    connectionId: 'fresh',
    model: 'Row',
    filter: 'deleted',
  })
  expect(deleted.records).toEqual([])
  expect(await syncStatusOf(t, 'crm', 'fresh', 'slow')).toMatchObject({
    checkpoint: { n: 1 },
    recordCount: { Row: 1 },
  })
  expect(await states('fresh')).toEqual(Array(5).fill('SUCCEEDED'))
})
