import { randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, type ServerProcess, startServer } from '../helpers/process.ts'
import { waitFor } from '../helpers/server.ts'
import { endRun } from './fixtures.ts'

/**
 * Several real `syncstore serve` processes on one Postgres (issue 4, "Scheduler"). Executions are
 * audited outside the scheduler's bookkeeping: each sync function appends a line (pid, start, end)
 * to a file, and the test matches those lines against the `runs` table.
 */

const KEY = randomUUID()
const GRACE_MS = 6_000 // runs get GRACE_MS - 2000 of it (src/cli/serve.ts)
const HEARTBEAT_TIMEOUT_MS = 2_000
const CONNECTIONS = 30

/** One line of the audit file, written by the sync function itself. */
type Exec = {
  sync: string
  conn: string
  pid: number
  phase: string
  first?: boolean
  start: number
  end?: number
}
type RunRow = { id: number; state: string; owner: string; lease: string; error: string | null; conn: string }
type Times = { started_at: Date; ended_at: Date }

let database: ProcessDatabase
let pool: pg.Pool
let dir: string
let auditFile: string
let env: Record<string, string>
const alive: ServerProcess[] = []
/** A replacement started in the background after the crash (startup takes seconds under load). */
let replacement: Promise<ServerProcess> | undefined

// pid: the serve process whose worker process (process.ppid) runs the function.
const AUDIT = (sync: string) => `
  const start = Date.now()
  const audit = (line) => appendFileSync(FILE, JSON.stringify({ sync: '${sync}', conn: nango.connectionId, pid: process.ppid, start, ...line }) + '\\n')`

const sources = (file: string): Record<string, string> => ({
  // Test 1: a short run, audited once it has done its work.
  'acme/syncs/audit.ts': `
    import { appendFileSync } from 'node:fs'
    import { createSync } from 'syncstore'
    const FILE = ${JSON.stringify(file)}
    export default createSync({
      description: 'audited', frequency: 'every hour', models: { Exec: { type: 'object' } },
      async exec(nango) {${AUDIT('audit')}
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 200))
        audit({ phase: 'end', end: Date.now() })
      },
    })`,
  // Tests 2-3: the first run of a connection waits metadata.ms; once a checkpoint exists, runs are quick.
  'slowco/syncs/slow.ts': `
    import { appendFileSync } from 'node:fs'
    import { createSync } from 'syncstore'
    const FILE = ${JSON.stringify(file)}
    export default createSync({
      description: 'slow once', frequency: 'every hour', models: { Exec: { type: 'object' } },
      async exec(nango) {${AUDIT('slow')}
        const first = !(await nango.getCheckpoint())
        if (first) await nango.saveCheckpoint({ started: start })
        audit({ phase: 'start', first }) // after the checkpoint is committed
        const { ms } = await nango.getMetadata()
        if (first) await new Promise((r) => setTimeout(r, ms))
        audit({ phase: 'end', first, end: Date.now() })
      },
    })`,
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const pidOf = (owner: string | null) => Number(owner?.split(':')[1])

async function spawnServer(): Promise<ServerProcess> {
  const server = await startServer(env)
  alive.push(server)
  return server
}
async function ensureAlive(n: number): Promise<void> {
  await Promise.all(Array.from({ length: Math.max(0, n - alive.length) }, spawnServer))
}
function forget(server: ServerProcess): void {
  alive.splice(alive.indexOf(server), 1)
}

async function post(server: ServerProcess, url: string, body: unknown) {
  const res = await fetch(`${server.url}${url}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  })
  return { status: res.status, body: await res.text() }
}
const connect = (server: ServerProcess, pck: string, conn: string, metadata?: Record<string, unknown>) =>
  post(server, '/connections', { provider_config_key: pck, connection_id: conn, metadata })
const trigger = (server: ServerProcess, pck: string, sync: string, conn: string) =>
  post(server, '/sync/trigger', { provider_config_key: pck, syncs: [sync], connection_id: conn })

async function runs(pck: string, conn?: string): Promise<(RunRow & Times)[]> {
  const { rows } = await pool.query<RunRow & Times>(
    `SELECT r.id::int AS id, r.state, r.owner, r.lease, r.error, r.started_at, r.ended_at, c.connection_id AS conn
     FROM runs r JOIN syncs s ON s.id = r.sync_id JOIN connections c ON c.id = s.connection_pk
     WHERE c.provider_config_key = $1 AND ($2::text IS NULL OR c.connection_id = $2) ORDER BY r.id`,
    [pck, conn ?? null],
  )
  return rows
}
function execs(filter: Partial<Exec> = {}): Exec[] {
  if (!existsSync(auditFile)) return []
  return readFileSync(auditFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Exec)
    .filter((e) => Object.entries(filter).every(([k, v]) => e[k as keyof Exec] === v))
}

/** Creates a slowco connection and resolves with its first run once its function is executing. */
async function startSlowRun(conn: string, ms: number): Promise<{ run: RunRow; owner: ServerProcess }> {
  expect((await connect(alive[0]!, 'slowco', conn, { ms })).status).toBe(201)
  const run = await waitFor(`${conn} executing`, async () => {
    const started = (await runs('slowco', conn)).find((r) => r.state === 'STARTED')
    return started && execs({ conn, phase: 'start' }).length > 0 ? started : undefined
  })
  // A process still starting may have claimed it: it is ours once it listens.
  const owner = await waitFor(
    `owner ${run.owner} listening`,
    () => alive.find((p) => p.pid === pidOf(run.owner)),
    {
      timeoutMs: 45_000,
    },
  )
  return { run, owner }
}

const onPostgres = describe.skipIf(process.env.SYNCSTORE_TEST_DB !== 'postgres')
const T = { timeout: 60_000 }

onPostgres('several serve processes on one Postgres', () => {
  beforeAll(async () => {
    database = await createProcessDatabase({ kind: 'postgres' })
    pool = new pg.Pool({ connectionString: (database.target as { url: string }).url, max: 2 })
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-multi-'))
    auditFile = path.join(dir, 'executions.jsonl')
    const integrations = path.join(dir, 'integrations')
    await mkdir(integrations)
    await writeFile(path.join(integrations, 'package.json'), '{"type":"module"}\n')
    for (const [file, source] of Object.entries(sources(auditFile))) {
      await mkdir(path.dirname(path.join(integrations, file)), { recursive: true })
      await writeFile(path.join(integrations, file), source)
    }
    env = {
      ...database.env,
      NANGO_SECRET_KEY_DEV: KEY,
      LOG_LEVEL: 'info', // the helper waits for the "listening" line
      SYNCSTORE_INTEGRATIONS_DIR: integrations,
      SYNCSTORE_RUN_CONCURRENCY: '2',
      SYNCSTORE_POLL_INTERVAL_MS: '200',
      SYNCSTORE_HEARTBEAT_INTERVAL_MS: '300',
      SYNCSTORE_HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS),
      SYNCSTORE_SHUTDOWN_GRACE_MS: String(GRACE_MS),
    }
    await ensureAlive(3)
  })
  afterAll(async () => {
    await killAll()
    await pool?.end()
    await database?.destroy()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('executes every due and triggered run exactly once, spread over the processes', T, async () => {
    const servers = [...alive]
    const created = await Promise.all(
      Array.from({ length: CONNECTIONS }, (_, i) => connect(servers[i % 3]!, 'acme', `c${i}`)),
    )
    expect(created.map((r) => r.status)).toEqual(Array(CONNECTIONS).fill(201))
    // Re-trigger a third of the syncs, three times each, through different processes, while runs go on.
    const lastTriggerSent = new Map<string, number>()
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        Array.from({ length: CONNECTIONS / 3 }, async (_, i) => {
          lastTriggerSent.set(`c${i}`, Date.now())
          expect((await trigger(servers[(i + round) % 3]!, 'acme', 'audit', `c${i}`)).status).toBe(200)
        }),
      )
      await sleep(150)
    }

    // Done when every sync has executed (the triggered ones after their last trigger) and nothing waits.
    await waitFor(
      'all runs executed',
      async () => {
        const done = execs({ sync: 'audit', phase: 'end' })
        for (let i = 0; i < CONNECTIONS; i++) {
          const after = lastTriggerSent.get(`c${i}`) ?? 0
          if (!done.some((e) => e.conn === `c${i}` && e.start >= after)) return false
        }
        return (await runs('acme')).every((r) => r.state !== 'CREATED' && r.state !== 'STARTED')
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )

    const rows = await runs('acme')
    const done = execs({ sync: 'audit' })
    expect(rows.filter((r) => r.state !== 'SUCCEEDED')).toEqual([])
    // The audit trail and the runs table agree, one execution per succeeded run, matched in time order.
    expect(done.length).toBe(rows.length)
    for (let i = 0; i < CONNECTIONS; i++) {
      const conn = `c${i}`
      const mine = rows.filter((r) => r.conn === conn).sort((a, b) => +a.started_at - +b.started_at)
      const ran = done.filter((e) => e.conn === conn).sort((a, b) => a.start - b.start)
      expect(ran.length, conn).toBe(mine.length)
      mine.forEach((run, k) => {
        const exec = ran[k]!
        expect(exec.pid, `${conn} run ${run.id}`).toBe(pidOf(run.owner))
        expect(exec.start).toBeGreaterThanOrEqual(run.started_at.getTime() - 2)
        expect(exec.end!).toBeLessThanOrEqual(run.ended_at.getTime() + 2)
        // No two executions of one sync overlapped.
        if (k > 0) expect(exec.start, conn).toBeGreaterThanOrEqual(ran[k - 1]!.end!)
      })
    }
    // Each process executed some of them.
    const pids = servers.map((s) => s.pid).sort((a, b) => a - b)
    expect([...new Set(rows.map((r) => pidOf(r.owner)))].sort((a, b) => a - b)).toEqual(pids)
    expect([...new Set(done.map((e) => e.pid))].sort((a, b) => a - b)).toEqual(pids)
    console.log(
      `exactly-once: ${rows.length} runs (${CONNECTIONS} connections), per process`,
      servers.map((s) => rows.filter((r) => pidOf(r.owner) === s.pid).length),
      'startup ms',
      servers.map((s) => s.startupMs),
    )
  })

  it('expires the run of a SIGKILLed process and runs it again, by itself, on a survivor', T, async () => {
    const { run, owner } = await startSlowRun('crash', 60_000)
    owner.kill('SIGKILL')
    const killedAt = Date.now()
    expect(await owner.waitForExit(5_000)).toEqual({ code: null, signal: 'SIGKILL' })
    forget(owner)
    replacement = spawnServer()
    replacement.catch(() => undefined)

    const expired = await waitFor(
      'the run expired',
      async () => (await runs('slowco', 'crash')).find((r) => r.id === run.id && r.state === 'EXPIRED'),
      { timeoutMs: HEARTBEAT_TIMEOUT_MS + 5_000, intervalMs: 100 },
    )
    const expiredAfter = Date.now() - killedAt
    expect(expired.error).toMatch(/heartbeat/)
    expect(expiredAfter).toBeLessThan(HEARTBEAT_TIMEOUT_MS + 4_000)

    // A late completion presenting the dead lease is refused and changes nothing.
    const late = await database.withDb((db) =>
      endRun(db.kysely, { id: run.id, lease: run.lease }, { state: 'SUCCEEDED' }),
    )
    expect(late).toBe(false)
    expect((await runs('slowco', 'crash')).find((r) => r.id === run.id)).toMatchObject({
      state: 'EXPIRED',
      error: expired.error,
    })

    // No trigger: the expiry itself asks for the unfinished run again.
    const again = await waitFor('the sync ran again', async () =>
      (await runs('slowco', 'crash')).find((r) => r.id > run.id && r.state === 'SUCCEEDED'),
    )
    expect(alive.map((p) => p.pid)).toContain(pidOf(again.owner))
    // The killed execution never ended; the new one ran on the survivor, after the first's checkpoint.
    const crashed = execs({ conn: 'crash' }).map(({ pid, phase, first }) => ({ pid, phase, first }))
    expect(crashed).toEqual([
      { pid: owner.pid, phase: 'start', first: true },
      { pid: pidOf(again.owner), phase: 'start', first: false },
      { pid: pidOf(again.owner), phase: 'end', first: false },
    ])
    expect((await runs('slowco', 'crash')).map((r) => r.state)).toEqual(['EXPIRED', 'SUCCEEDED'])
    console.log(`crash: run ${run.id} expired ${expiredAfter} ms after SIGKILL`)
  })

  it('SIGTERM lets a run shorter than the grace period finish, then exits 0', T, async () => {
    await ensureAlive(2)
    const { run, owner } = await startSlowRun('grace-short', 2_500)
    const signalledAt = Date.now()
    owner.kill('SIGTERM')
    expect(await owner.waitForExit(GRACE_MS + 5_000)).toEqual({ code: 0, signal: null })
    forget(owner)
    const exitedAt = Date.now()
    const [row] = await runs('slowco', 'grace-short')
    expect(row).toMatchObject({ id: run.id, state: 'SUCCEEDED', owner: run.owner })
    // It was still running when the signal came, and finished before the process exited.
    expect(row!.ended_at.getTime()).toBeGreaterThanOrEqual(signalledAt)
    expect(row!.ended_at.getTime()).toBeLessThanOrEqual(exitedAt)
    expect(execs({ conn: 'grace-short', phase: 'end' }).map((e) => e.pid)).toEqual([owner.pid])
    expect(await runs('slowco', 'grace-short')).toHaveLength(1)
  })

  it('SIGTERM releases a run longer than the grace period to another process', T, async () => {
    await replacement
    await ensureAlive(2)
    const { run, owner } = await startSlowRun('grace-long', 60_000)
    owner.kill('SIGTERM')
    const signalledAt = Date.now()
    expect(await owner.waitForExit(GRACE_MS + 5_000)).toEqual({ code: 0, signal: null })
    const exitAfter = Date.now() - signalledAt
    forget(owner)
    expect(exitAfter).toBeLessThan(GRACE_MS + 2_000)

    const rerun = await waitFor('the released run ran elsewhere', async () =>
      (await runs('slowco', 'grace-long')).find((r) => r.id > run.id && r.state === 'SUCCEEDED'),
    )
    const [released, ...rest] = await runs('slowco', 'grace-long')
    expect(released).toMatchObject({ id: run.id, state: 'CANCELLED' })
    expect(released!.error).toMatch(/^Interrupted/)
    expect(rest.map((r) => r.state)).toEqual(['SUCCEEDED'])
    expect(pidOf(rerun.owner)).not.toBe(owner.pid)
    expect(alive.map((p) => p.pid)).toContain(pidOf(rerun.owner))
    expect(execs({ conn: 'grace-long', phase: 'end' }).map((e) => e.pid)).toEqual([pidOf(rerun.owner)])
    console.log(`graceful: exited ${exitAfter} ms after SIGTERM, released run ${run.id} -> ${rerun.id}`)
  })
})
