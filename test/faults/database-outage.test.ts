import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { type Cluster, postgresBinDir, startCluster } from '../helpers/cluster.ts'
import { killAll, type ServerProcess, startServer } from '../helpers/process.ts'
import { type JsonBody, waitFor } from '../helpers/server.ts'

/**
 * SPEC section 7, "the database going away", against a real `syncstore serve` process and a
 * Postgres cluster of the test's own: while a sync writes and a reader pages, the cluster is
 * restarted three times and the server's backends are terminated three times, then it is stopped
 * for OUTAGE_MS. The server must stay up, answer 503 `database_unavailable` (and `/ready` 503)
 * meanwhile, expire and rerun the run that could not record its end, and in the end hold every
 * record exactly once.
 */

const KEY = randomUUID()
const TOTAL = 20_000
const BATCH = 200
/** The issue asks for a minute; FAULT_OUTAGE_MS shortens it for a quick local try. */
const OUTAGE_MS = Number(process.env.FAULT_OUTAGE_MS ?? 60_000)
const HEARTBEAT_TIMEOUT_MS = 5_000

// Each record's payload is a function of its id, so any loss or corruption shows.
const SYNC = `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'writes ${TOTAL} records in batches of ${BATCH}', frequency: 'every hour',
    models: { Item: { type: 'object' } },
    async exec(nango) {
      for (let i = 0; i < ${TOTAL}; i += ${BATCH}) {
        const records = []
        for (let n = i; n < Math.min(i + ${BATCH}, ${TOTAL}); n++) records.push({ id: 'r' + n, n, text: 'item ' + n })
        await nango.batchSave(records, 'Item')
        // Slow enough that a run lasts a few seconds and the faults land inside one.
        await new Promise((r) => setTimeout(r, 20))
      }
    },
  })`

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const onPostgresBinaries = describe.skipIf(
  process.env.SYNCSTORE_TEST_DB === 'postgres' || postgresBinDir() === undefined,
)

let cluster: Cluster
let server: ServerProcess
let inspect: pg.Pool
let dir: string

async function request(method: string, url: string, body?: unknown) {
  const res = await fetch(`${server.url}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${KEY}`,
      'connection-id': 'c1',
      'provider-config-key': 'faulty',
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as JsonBody) : {} }
}

type Run = { id: number; state: string }

/** The sync's runs, read straight from the cluster (retried while it is restarting). */
async function runs(): Promise<Run[]> {
  return waitFor(
    'runs readable',
    async () => {
      try {
        return (await inspect.query<Run>('SELECT id::int AS id, state FROM runs ORDER BY id')).rows
      } catch {
        return undefined
      }
    },
    { timeoutMs: 30_000, intervalMs: 200 },
  )
}

const running = async () => (await runs()).some((r) => r.state === 'STARTED')
const trigger = () =>
  request('POST', '/sync/trigger', {
    provider_config_key: 'faulty',
    syncs: ['items'],
    connection_id: 'c1',
  }).catch(() => undefined)

function alive(): boolean {
  try {
    process.kill(server.pid, 0)
    return true
  } catch {
    return false
  }
}

/** Pages the whole dataset with next_cursor, retrying a failed page from the same cursor. */
async function pageAll(stop: () => boolean = () => false) {
  const ids: string[] = []
  let cursor: string | undefined
  let failures = 0
  let pages = 0
  for (let attempts = 0; attempts < 5_000 && !stop(); attempts++) {
    const query = `model=Item&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
    const res = await request('GET', `/records?${query}`).catch(() => ({ status: 0, body: {} as JsonBody }))
    if (res.status !== 200) {
      failures++
      if (res.status !== 0) expect(res.status, JSON.stringify(res.body)).toBe(503)
      await sleep(100)
      continue
    }
    pages++
    for (const record of res.body.records as { id: string; n: number; text: string }[]) {
      expect(record.text).toBe(`item ${record.n}`)
      expect(record.id).toBe(`r${record.n}`)
      ids.push(record.id)
    }
    cursor = res.body.next_cursor ?? undefined
    if (!cursor) return { ids, failures, pages, complete: true }
  }
  return { ids, failures, pages, complete: false }
}

onPostgresBinaries('the database going away (a cluster of the test’s own)', () => {
  beforeAll(async () => {
    cluster = await startCluster()
    inspect = new pg.Pool({ connectionString: cluster.url(), max: 1, connectionTimeoutMillis: 2_000 })
    inspect.on('error', () => undefined) // its idle client dies with every restart
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-faults-'))
    const integrations = path.join(dir, 'integrations')
    await mkdir(path.join(integrations, 'faulty', 'syncs'), { recursive: true })
    await writeFile(path.join(integrations, 'package.json'), '{"type":"module"}\n')
    await writeFile(path.join(integrations, 'faulty', 'syncs', 'items.ts'), SYNC)
    server = await startServer({
      DATABASE_URL: cluster.url(),
      NANGO_SECRET_KEY_DEV: KEY,
      SYNCSTORE_INTEGRATIONS_DIR: integrations,
      SYNCSTORE_POLL_INTERVAL_MS: '200',
      SYNCSTORE_HEARTBEAT_INTERVAL_MS: '500',
      SYNCSTORE_HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS),
    })
  }, 120_000)

  afterAll(async () => {
    await killAll()
    await inspect?.end()
    await cluster?.destroy()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it(
    'survives restarts, terminated backends and a long outage; every record exactly once',
    { timeout: 300_000 },
    async () => {
      expect(
        (await request('POST', '/connections', { provider_config_key: 'faulty', connection_id: 'c1' }))
          .status,
      ).toBe(201)

      // A reader pages the whole time the faults go on.
      let faultsDone = false
      const reader = (async () => {
        let passes = 0
        let failures = 0
        while (!faultsDone) {
          const pass = await pageAll(() => faultsDone)
          failures += pass.failures
          if (pass.complete) passes++
          if (new Set(pass.ids).size !== pass.ids.length) {
            throw new Error('a page pass returned a record twice')
          }
        }
        return { passes, failures }
      })()

      const faults: string[] = []
      const survived: string[] = []
      for (let i = 0; i < 6; i++) {
        // Each fault lands while a run is writing; start one if none is.
        await waitFor(
          'a run in progress',
          async () => {
            if (await running()) return true
            await trigger()
            return false
          },
          { timeoutMs: 60_000, intervalMs: 300 },
        )
        await sleep(300 + Math.random() * 700)
        if (i % 2 === 0) {
          faults.push('restart')
          await cluster.restart()
        } else {
          faults.push('terminate')
          const { rows } = await inspect.query<{ n: number }>(
            `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name LIKE 'syncstore%'`,
          )
          expect(rows[0]!.n).toBeGreaterThan(0)
        }
        await sleep(1_500)
        expect(
          alive(),
          `server exited after fault ${i + 1} (${faults[i]})\n${server.stdout().slice(-3000)}`,
        ).toBe(true)
        expect((await fetch(`${server.url}/health`)).status).toBe(200)
        survived.push(faults[i]!)
      }

      // The long outage, right after a fresh run starts writing: that run cannot record its end.
      await waitFor(
        'no run active',
        async () => (await runs()).every((r) => !['STARTED', 'CREATED'].includes(r.state)),
        {
          timeoutMs: 120_000,
          intervalMs: 300,
        },
      )
      await trigger()
      const caught = await waitFor(
        'the run to be caught',
        async () => (await runs()).find((r) => r.state === 'STARTED'),
        {
          timeoutMs: 30_000,
          intervalMs: 20,
        },
      )
      await cluster.stop()
      const stoppedAt = Date.now()
      const ready = await waitFor(
        '/ready reporting the outage',
        async () => {
          const res = await fetch(`${server.url}/ready`)
          return res.status === 503 ? ((await res.json()) as { error: { code: string } }) : undefined
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      )
      expect(ready.error.code).toBe('database_unavailable')
      const during = await request('GET', '/records?model=Item&limit=10')
      expect(during.status).toBe(503)
      expect(during.body.error.code).toBe('database_unavailable')
      while (Date.now() - stoppedAt < OUTAGE_MS) {
        expect(alive(), `server exited during the outage\n${server.stdout().slice(-3000)}`).toBe(true)
        expect((await fetch(`${server.url}/health`)).status).toBe(200)
        await sleep(1_000)
      }
      await cluster.start()
      const backMs = await waitFor(
        '/ready after the outage',
        async () =>
          (await fetch(`${server.url}/ready`)).status === 200
            ? Date.now() - stoppedAt - OUTAGE_MS
            : undefined,
        { timeoutMs: 30_000, intervalMs: 100 },
      )
      faultsDone = true
      const readerStats = await reader

      // The run caught by the outage is expired and run again, and the sync ends in a success.
      const after = await waitFor(
        'the interrupted run expired and rerun to success',
        async () => {
          const all = await runs()
          const settled = all.every((r) => r.state !== 'STARTED' && r.state !== 'CREATED')
          return settled && all.at(-1)!.id > caught.id ? all : undefined
        },
        { timeoutMs: 120_000, intervalMs: 500 },
      ).catch(async (err: Error) => {
        const logs = server.logs().filter((l) => Number(l.level) >= 40)
        throw new Error(
          `${err.message}\nruns: ${JSON.stringify(await runs())}\n${JSON.stringify(logs.slice(-30))}`,
        )
      })
      expect(after.find((r) => r.id === caught.id)?.state).toBe('EXPIRED')
      expect(after.at(-1)?.state).toBe('SUCCEEDED')
      const states = after.map((r) => r.state)

      const final = await pageAll()
      expect(final.complete).toBe(true)
      const unique = new Set(final.ids)
      const doubled = final.ids.length - unique.size
      const lost = Array.from({ length: TOTAL }, (_, n) => `r${n}`).filter((id) => !unique.has(id)).length
      expect({ lost, doubled, extra: unique.size - (TOTAL - lost) }).toEqual({
        lost: 0,
        doubled: 0,
        extra: 0,
      })
      expect(alive()).toBe(true)
      expect(server.stdout()).not.toContain('unexpected error')

      const count = (s: string) => states.filter((x) => x === s).length
      console.log(
        [
          `database faults: ${survived.length}/${faults.length} survived (${faults.join(', ')}), ` +
            `then a ${OUTAGE_MS / 1000} s outage: /ready 503 during it, 200 again ${backMs} ms after the restart`,
          `reader during the faults: ${readerStats.passes} full passes, ${readerStats.failures} pages answered 503 or refused and retried`,
          `runs: ${states.length} (${count('SUCCEEDED')} succeeded, ${count('FAILED')} failed, ${count('EXPIRED')} expired and rerun)`,
          `records checked: ${final.ids.length} of ${TOTAL}; lost ${lost}, doubled ${doubled}`,
        ].join('\n'),
      )
    },
  )
})
