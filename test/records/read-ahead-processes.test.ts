import { randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer } from '../../src/crypto.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli, type ServerProcess, startServer } from '../helpers/process.ts'
import { batchSave } from '../helpers/records.ts'
import { waitFor } from '../helpers/server.ts'

/**
 * Read-ahead with a second process writing: `syncstore serve` reads a reader's next page ahead, then
 * `syncstore records import` (a process of its own on Postgres; on the embedded database it hands
 * the command to the server) changes a record of that page before the reader asks for it. What the
 * server decides from the dataset's change mark in Postgres, not from anything it holds, must show it.
 */

let database: ProcessDatabase
let server: ServerProcess
let dir: string
let metricsUrl: string
const key = randomUUID()
const ids = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `r${String(from + i).padStart(2, '0')}`)

beforeAll(async () => {
  database = await createProcessDatabase()
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-read-ahead-'))
  const sealer = createSealer(null)
  await database.withDb(async (db) => {
    const env = (await findEnvironment(db.kysely, 'dev'))!
    const input = { providerConfigKey: 'crm', connectionId: 'c1' }
    const connectionPk = (await upsertConnection(db.kysely, sealer, env.id, input)).connection.id
    for (const from of [1, 11, 21]) {
      const records = ids(from, from + 9).map((id) => ({ id, v: 1 }))
      await batchSave(db.kysely, sealer, { connectionPk, model: 'Item', variant: 'base' }, records)
    }
  })
  server = await startServer({ ...database.env, NANGO_SECRET_KEY_DEV: key, SYNCSTORE_METRICS_PORT: '0' })
  metricsUrl = String((await server.waitForLog((line) => line.msg === 'metrics listening')).url)
})
afterAll(async () => {
  server?.kill()
  await server?.waitForExit()
  await killAll()
  await database?.destroy()
  await rm(dir, { recursive: true, force: true })
})

async function page(cursor?: string | null) {
  const query = `model=Item&limit=10${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
  const res = await fetch(`${server.url}/records?${query}`, {
    headers: { authorization: `Bearer ${key}`, 'connection-id': 'c1', 'provider-config-key': 'crm' },
  })
  expect(res.status).toBe(200)
  return (await res.json()) as { next_cursor: string | null; records: { id: string; v: number }[] }
}

async function readAhead(outcome: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text()
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`syncstore_records_read_ahead_total{outcome="${outcome}"}`))
  return Number(line?.split(' ')[1] ?? NaN)
}

it('a record changed by another process after the read-ahead is seen by the next request', async () => {
  const first = await page()
  expect(first.records.map((r) => r.id)).toEqual(ids(1, 10))
  await waitFor('the second page read ahead', async () => (await readAhead('read')) >= 1, { intervalMs: 10 })

  const file = path.join(dir, 'change.ndjson')
  await writeFile(file, '{"id":"r15","v":2}\n')
  const target = ['--env', 'dev', '--integration', 'crm', '--connection-id', 'c1', '--model', 'Item']
  const imported = await runCli(['records', 'import', ...target, file], database.env)
  expect(imported.code, imported.stderr).toBe(0)

  const second = await page(first.next_cursor)
  expect(second.records.map((r) => r.id)).toEqual([...ids(11, 14), ...ids(16, 21)])
  expect(await readAhead('changed')).toBe(1)
  expect(await readAhead('served')).toBe(0)

  // Nothing changes now: the third page comes from read-ahead, and the changed record last.
  const third = await page(second.next_cursor)
  expect(third.records.map((r) => [r.id, r.v])).toEqual([...ids(22, 30).map((id) => [id, 1]), ['r15', 2]])
  expect(await readAhead('served')).toBe(1)
})
