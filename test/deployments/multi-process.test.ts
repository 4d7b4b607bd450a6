import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli, type ServerProcess, startServer } from '../helpers/process.ts'
import { type JsonBody, waitFor } from '../helpers/server.ts'

/**
 * Issue 10: sync definitions live in the database, so real `syncstore serve` processes started
 * without any integrations folder run whatever `syncstore deploy` (another process) stored, from
 * the first request after it returns. Every execution is audited outside syncstore: the sync
 * functions call a small HTTP server of this test (integration.json's base_url) at their start and
 * end, naming their version and process; the test can hold a start to keep a run executing.
 */

const DEV = randomUUID()
const PROD = randomUUID()

/**
 * A sync function that saves `{id: 'latest', version}`; with `gate`, it reports to the test first and
 * last, with the pid of the serve process whose worker process (process.ppid) runs it.
 */
function syncSource(o: { model: string; version: number; gate: boolean }): string {
  const report = (phase: string) =>
    o.gate
      ? `await nango.get({ endpoint: '/${phase}', params: { sync: nango.syncName, conn: nango.connectionId, version: ${o.version}, pid: process.ppid } })`
      : ''
  return `import { createSync } from 'syncstore'
export default createSync({
  description: 'version ${o.version}',
  frequency: 'every hour',
  models: {
    ${o.model}: {
      type: 'object',
      properties: { id: { type: 'string' }, version: { type: 'integer' } },
      required: ['id', 'version'],
    },
  },
  async exec(nango) {
    ${report('start')}
    await nango.batchSave([{ id: 'latest', version: ${o.version} }], '${o.model}')
    ${report('end')}
  },
})
`
}

/** Writes `files` (path -> source; null removes) under `dir`, an ES-module folder. */
async function writeFolder(dir: string, files: Record<string, string | null>): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n')
  for (const [file, source] of Object.entries(files)) {
    const full = path.join(dir, file)
    if (source === null) {
      await rm(full, { force: true })
      continue
    }
    await mkdir(path.dirname(full), { recursive: true })
    await writeFile(full, source)
  }
}

async function call(
  server: ServerProcess,
  method: string,
  url: string,
  { body, key = DEV, headers = {} }: { body?: unknown; key?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: JsonBody }> {
  const res = await fetch(`${server.url}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...headers,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : undefined }
}

const statusOf = (server: ServerProcess, pck: string, conn: string, key = DEV) =>
  call(server, 'GET', `/sync/status?provider_config_key=${pck}&connection_id=${conn}&syncs=*`, { key })
const trigger = (server: ServerProcess, pck: string, sync: string, conn: string, key = DEV) =>
  call(server, 'POST', '/sync/trigger', {
    body: { provider_config_key: pck, syncs: [sync], connection_id: conn },
    key,
  })
const records = async (server: ServerProcess, pck: string, conn: string, model: string, key = DEV) => {
  const res = await call(server, 'GET', `/records?model=${model}`, {
    key,
    headers: { 'connection-id': conn, 'provider-config-key': pck },
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return (res.body.records as { id: string; version: number }[]).map(({ id, version }) => ({ id, version }))
}
const syncsListed = (res: { status: number; body: JsonBody }) => {
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  return (res.body.syncs as { name: string }[]).map((s) => s.name).sort()
}

const onPostgres = describe.skipIf(process.env.SYNCSTORE_TEST_DB !== 'postgres')

onPostgres('deployments followed by several serve processes on one Postgres', { timeout: 60_000 }, () => {
  let database: ProcessDatabase
  let pool: pg.Pool
  let dir: string
  let folder: string
  let cliEnv: Record<string, string>
  let a: ServerProcess
  let b: ServerProcess

  /** What the sync functions reported, in the order it arrived. */
  type Hit = { phase: 'start' | 'end'; sync: string; conn: string; version: number; pid: number; at: number }
  const hits: Hit[] = []
  /** Held starts, by "sync/conn": the next start of that sync waits until released. */
  const holds = new Map<string, { res?: ServerResponse; hit?: Hit }>()
  let gate: Server

  const hitsOf = (sync: string, conn: string, phase?: Hit['phase']) =>
    hits.filter((h) => h.sync === sync && h.conn === conn && (!phase || h.phase === phase))
  function hold(sync: string, conn: string) {
    const key = `${sync}/${conn}`
    const held: { res?: ServerResponse; hit?: Hit } = {}
    holds.set(key, held)
    return {
      /** Resolves with the held start once that run executes. */
      started: () => waitFor(`a run of ${key} executing`, () => held.hit, { timeoutMs: 20_000 }),
      release() {
        holds.delete(key)
        held.res?.end('{}')
      },
    }
  }

  type RunRow = { id: number; state: string; owner: string; error: string | null; bundle_hash: string | null }
  async function runsOf(sync: string, conn: string, env = 'dev'): Promise<RunRow[]> {
    const { rows } = await pool.query<RunRow>(
      `SELECT r.id::int AS id, r.state, r.owner, r.error, r.bundle_hash FROM runs r
       JOIN syncs s ON s.id = r.sync_id JOIN connections c ON c.id = s.connection_pk
       JOIN environments e ON e.id = c.environment_id
       WHERE e.name = $1 AND c.provider_config_key = 'acme' AND c.connection_id = $2 AND s.name = $3
       ORDER BY r.id`,
      [env, conn, sync],
    )
    return rows
  }
  async function definition(env: string, integration: string, name: string) {
    const { rows } = await pool.query<{ bundle_hash: string; deployment_id: string }>(
      `SELECT d.bundle_hash, d.deployment_id FROM sync_definitions d JOIN environments e ON e.id = d.environment_id
       WHERE e.name = $1 AND d.integration = $2 AND d.name = $3`,
      [env, integration, name],
    )
    return rows[0]
  }
  /** Nothing waiting or running anywhere: each case starts from a quiet database. */
  const settled = () =>
    waitFor(
      'no run waiting or running',
      async () =>
        (await pool.query(`SELECT 1 FROM runs WHERE state IN ('CREATED', 'STARTED') LIMIT 1`)).rowCount === 0,
      { timeoutMs: 20_000, intervalMs: 100 },
    )
  /** Waits for the next run of a sync (after `after`) to end; it must have succeeded. */
  async function nextRun(sync: string, conn: string, after: number): Promise<RunRow> {
    const run = await waitFor(
      `a run of ${sync}/${conn} after ${after} ended`,
      async () =>
        (await runsOf(sync, conn)).find((r) => r.id > after && !['CREATED', 'STARTED'].includes(r.state)),
      { timeoutMs: 20_000, intervalMs: 100 },
    )
    expect(run, JSON.stringify(run)).toMatchObject({ state: 'SUCCEEDED' })
    return run
  }
  const lastRunId = async (sync: string, conn: string) => (await runsOf(sync, conn)).at(-1)?.id ?? 0
  const pidOf = (owner: string) => Number(owner.split(':')[1])
  const deploy = (...args: string[]) => runCli(['deploy', folder, ...args], cliEnv)

  const acme = (version: number, { notes = true } = {}) => ({
    'acme/syncs/items.ts': syncSource({ model: 'Item', version, gate: true }),
    'acme/syncs/notes.ts': notes ? syncSource({ model: 'Note', version: 1, gate: true }) : null,
  })

  beforeAll(async () => {
    gate = createServer((req, res) => {
      const url = new URL(req.url!, 'http://gate')
      const q = Object.fromEntries(url.searchParams)
      const hit: Hit = {
        phase: url.pathname === '/start' ? 'start' : 'end',
        sync: q.sync!,
        conn: q.conn!,
        version: Number(q.version),
        pid: Number(q.pid),
        at: Date.now(),
      }
      hits.push(hit)
      res.setHeader('content-type', 'application/json')
      const held = hit.phase === 'start' ? holds.get(`${hit.sync}/${hit.conn}`) : undefined
      if (held && !held.hit) Object.assign(held, { res, hit })
      else res.end('{}')
    })
    await new Promise<void>((resolve) => gate.listen(0, '127.0.0.1', resolve))
    const base = `http://127.0.0.1:${(gate.address() as AddressInfo).port}`

    database = await createProcessDatabase({ kind: 'postgres' })
    pool = new pg.Pool({ connectionString: (database.target as { url: string }).url, max: 2 })
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-deploy-multi-'))
    folder = path.join(dir, 'integrations')
    await writeFolder(folder, { 'acme/integration.json': JSON.stringify({ base_url: base }), ...acme(1) })
    cliEnv = { ...database.env, LOG_LEVEL: 'silent' }
    const env = {
      ...database.env,
      NANGO_SECRET_KEY_DEV: DEV,
      NANGO_SECRET_KEY_PROD: PROD,
      LOG_LEVEL: 'info', // the helper waits for the "listening" line
      // No folder: the servers run what `syncstore deploy` stored, nothing of their own.
      SYNCSTORE_INTEGRATIONS_DIR: path.join(dir, 'none'),
      // One run at a time per process: while one holds a run, the other must take the next.
      SYNCSTORE_RUN_CONCURRENCY: '1',
      SYNCSTORE_POLL_INTERVAL_MS: '200',
    }
    ;[a, b] = await Promise.all([startServer(env), startServer(env)])
  }, 120_000)

  afterAll(async () => {
    for (const held of holds.values()) held.res?.end('{}')
    await killAll()
    await pool?.end()
    await database?.destroy()
    if (gate) await new Promise((resolve) => gate.close(resolve))
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('a connection created by the CLI on Postgres has its syncs on both servers at once; triggers on both run it once', async () => {
    expect(await call(a, 'GET', '/integrations')).toEqual({ status: 200, body: { data: [] } })

    const deployed = await deploy()
    expect(deployed.code, deployed.stderr).toBe(0)
    for (const env of ['dev', 'prod']) {
      expect(deployed.stdout).toMatch(new RegExp(`^${env}: deployment \\d+ \\(0 unchanged\\)$`, 'm'))
    }
    expect(deployed.stdout.match(/added +acme\/items$/gm)).toHaveLength(2)
    expect(deployed.stdout.match(/added +acme\/notes$/gm)).toHaveLength(2)

    // The first run of c1 is held, so the two triggers below meet it running.
    const first = hold('items', 'c1')
    const created = await runCli(
      ['connections', 'create', '--integration', 'acme', '--connection-id', 'c1'],
      cliEnv,
    )
    expect(created.code, created.stderr).toBe(0)
    expect(created.stderr).toContain('Created connection c1 of integration acme in environment dev')
    // The first request after the CLI returned, on either process: no restart, no wait.
    const [onA, onB] = await Promise.all([statusOf(a, 'acme', 'c1'), statusOf(b, 'acme', 'c1')])
    expect(syncsListed(onA)).toEqual(['items', 'notes'])
    expect(syncsListed(onB)).toEqual(['items', 'notes'])

    // Created due at once: the new connection's first run starts by itself.
    await first.started()
    const [running] = await runsOf('items', 'c1')
    expect(running).toMatchObject({ state: 'STARTED' })
    // A trigger on each process while it runs: both merge into the one follow-up a sync may have waiting.
    const triggered = await Promise.all([
      trigger(a, 'acme', 'items', 'c1'),
      trigger(b, 'acme', 'items', 'c1'),
    ])
    expect(triggered.map((t) => t.status)).toEqual([200, 200])
    expect((await runsOf('items', 'c1')).map((r) => r.state)).toEqual(['STARTED', 'CREATED'])
    first.release()
    const followUp = await nextRun('items', 'c1', running!.id)
    await settled()

    const runs = await runsOf('items', 'c1')
    expect(runs.map((r) => r.state)).toEqual(['SUCCEEDED', 'SUCCEEDED'])
    expect(followUp.id).toBe(runs[1]!.id)
    // Each run executed exactly once, by the process that claimed it, one after the other.
    const starts = hitsOf('items', 'c1', 'start')
    const ends = hitsOf('items', 'c1', 'end')
    expect(starts.map((h) => h.pid)).toEqual(runs.map((r) => pidOf(r.owner)))
    expect(ends.map((h) => h.pid)).toEqual(runs.map((r) => pidOf(r.owner)))
    expect(starts[1]!.at).toBeGreaterThanOrEqual(ends[0]!.at)
    expect([a.pid, b.pid]).toEqual(expect.arrayContaining(runs.map((r) => pidOf(r.owner))))
    // One definition of v1 ran both.
    const v1 = await definition('dev', 'acme', 'items')
    expect(runs.map((r) => r.bundle_hash)).toEqual([v1!.bundle_hash, v1!.bundle_hash])

    // The records are visible through both processes.
    expect(await records(a, 'acme', 'c1', 'Item')).toEqual([{ id: 'latest', version: 1 }])
    expect(await records(b, 'acme', 'c1', 'Item')).toEqual([{ id: 'latest', version: 1 }])
    expect(await records(b, 'acme', 'c1', 'Note')).toEqual([{ id: 'latest', version: 1 }])

    // A connection created through one process's HTTP API: the other lists its syncs at once too.
    expect(
      (await call(b, 'POST', '/connections', { body: { provider_config_key: 'acme', connection_id: 'c2' } }))
        .status,
    ).toBe(201)
    expect(syncsListed(await statusOf(a, 'acme', 'c2'))).toEqual(['items', 'notes'])
    await settled()
  })

  it('a changed sync: both processes serve it within a second and both run the new version', async () => {
    await settled()
    const v1 = await definition('dev', 'acme', 'items')
    await writeFolder(folder, acme(2))
    const deployed = await deploy()
    const returnedAt = performance.now()
    expect(deployed.code, deployed.stderr).toBe(0)
    expect(deployed.stdout.match(/changed +acme\/items$/gm)).toHaveLength(2)
    expect(deployed.stdout).not.toMatch(/acme\/notes/)
    expect(deployed.stdout).toMatch(/^dev: deployment \d+ \(1 unchanged\)$/m)

    // From `deploy` returning to each process answering from the new deployment.
    const seen = await Promise.all(
      [a, b].map(async (server) => {
        let requests = 0
        await waitFor(
          'the new version listed',
          async () => {
            requests++
            const res = await call(server, 'GET', '/integrations')
            const items = res.body.data
              ?.find((i: JsonBody) => i.unique_key === 'acme')
              ?.syncs.find((s: JsonBody) => s.name === 'items')
            return items?.description === 'version 2'
          },
          { timeoutMs: 5_000, intervalMs: 20 },
        )
        return { ms: Math.round(performance.now() - returnedAt), requests }
      }),
    )
    console.log('deploy returned -> listed by A, B:', seen)
    for (const s of seen) {
      expect(s.ms).toBeLessThan(1_000)
      // Definitions are read from the database per request: the very first one sees the deployment.
      expect(s.requests).toBe(1)
    }
    const v2 = await definition('dev', 'acme', 'items')
    expect(v2!.bundle_hash).not.toBe(v1!.bundle_hash)

    // Process P holds a run of c1 (one run at a time), so the other one, Q, must run c2's.
    const held = hold('items', 'c1')
    const [after1, after2] = [await lastRunId('items', 'c1'), await lastRunId('items', 'c2')]
    expect((await trigger(a, 'acme', 'items', 'c1')).status).toBe(200)
    const p = (await held.started()).pid
    expect(hitsOf('items', 'c1', 'start').at(-1)!.version).toBe(2)
    expect((await trigger(b, 'acme', 'items', 'c2')).status).toBe(200)
    const onQ = await nextRun('items', 'c2', after2)
    console.log(
      `deploy returned -> both processes executing version 2: ${Math.round(performance.now() - returnedAt)} ms`,
    )
    held.release()
    const onP = await nextRun('items', 'c1', after1)

    expect(new Set([pidOf(onP.owner), pidOf(onQ.owner)])).toEqual(new Set([a.pid, b.pid]))
    expect(pidOf(onP.owner)).toBe(p)
    expect([onP.bundle_hash, onQ.bundle_hash]).toEqual([v2!.bundle_hash, v2!.bundle_hash])
    expect(hitsOf('items', 'c2', 'end').at(-1)).toMatchObject({ version: 2, pid: pidOf(onQ.owner) })
    expect(hitsOf('items', 'c1', 'end').at(-1)).toMatchObject({ version: 2, pid: p })
    expect(await records(a, 'acme', 'c2', 'Item')).toEqual([{ id: 'latest', version: 2 }])
    expect(await records(b, 'acme', 'c1', 'Item')).toEqual([{ id: 'latest', version: 2 }])
  })

  it('a run already running finishes on the version it started with; the next one runs the new one', async () => {
    await settled()
    const old = await definition('dev', 'acme', 'items')
    const held = hold('items', 'c1')
    const after = await lastRunId('items', 'c1')
    expect((await trigger(b, 'acme', 'items', 'c1')).status).toBe(200)
    await held.started()
    const [running] = (await runsOf('items', 'c1')).filter((r) => r.id > after)
    expect(running).toMatchObject({ state: 'STARTED', bundle_hash: old!.bundle_hash })

    await writeFolder(folder, acme(3))
    const deployed = await deploy()
    expect(deployed.code, deployed.stderr).toBe(0)
    expect(deployed.stdout.match(/changed +acme\/items$/gm)).toHaveLength(2)
    const next = await definition('dev', 'acme', 'items')
    expect(next!.bundle_hash).not.toBe(old!.bundle_hash)
    expect((await runsOf('items', 'c1')).at(-1)).toMatchObject({ id: running!.id, state: 'STARTED' })

    held.release()
    const finished = await nextRun('items', 'c1', after)
    expect(finished).toMatchObject({ id: running!.id, state: 'SUCCEEDED', bundle_hash: old!.bundle_hash })
    expect(hitsOf('items', 'c1', 'end').at(-1)!.version).toBe(2)
    expect(await records(a, 'acme', 'c1', 'Item')).toEqual([{ id: 'latest', version: 2 }])

    expect((await trigger(a, 'acme', 'items', 'c1')).status).toBe(200)
    const following = await nextRun('items', 'c1', running!.id)
    expect(following.bundle_hash).toBe(next!.bundle_hash)
    expect(await records(b, 'acme', 'c1', 'Item')).toEqual([{ id: 'latest', version: 3 }])
  })

  it('a removed sync stops: schedules DELETED, waiting runs cancelled, records kept, trigger refused', async () => {
    await settled()
    const notes = await definition('dev', 'acme', 'notes')
    const held = hold('notes', 'c1')
    const after = await lastRunId('notes', 'c1')
    expect((await trigger(a, 'acme', 'notes', 'c1')).status).toBe(200)
    await held.started()
    // Asked for again while it runs: a follow-up waits.
    expect((await trigger(b, 'acme', 'notes', 'c1')).status).toBe(200)
    const [running, waiting] = (await runsOf('notes', 'c1')).filter((r) => r.id > after)
    expect([running?.state, waiting?.state]).toEqual(['STARTED', 'CREATED'])

    await writeFolder(folder, acme(3, { notes: false }))
    const deployed = await deploy()
    expect(deployed.code, deployed.stderr).toBe(0)
    expect(deployed.stdout.match(/removed +acme\/notes$/gm)).toHaveLength(2)
    expect(deployed.stdout).toMatch(/^dev: deployment \d+ \(1 unchanged\)$/m)
    expect(await definition('dev', 'acme', 'notes')).toBeUndefined()

    const { rows: schedules } = await pool.query<{ env: string; conn: string; name: string; state: string }>(
      `SELECT e.name AS env, c.connection_id AS conn, s.name, x.state FROM schedules x
       JOIN syncs s ON s.id = x.sync_id JOIN connections c ON c.id = s.connection_pk
       JOIN environments e ON e.id = c.environment_id ORDER BY 1, 2, 3`,
    )
    expect(schedules).toEqual([
      { env: 'dev', conn: 'c1', name: 'items', state: 'STARTED' },
      { env: 'dev', conn: 'c1', name: 'notes', state: 'DELETED' },
      { env: 'dev', conn: 'c2', name: 'items', state: 'STARTED' },
      { env: 'dev', conn: 'c2', name: 'notes', state: 'DELETED' },
    ])
    expect((await runsOf('notes', 'c1')).filter((r) => r.id > after)).toMatchObject([
      { id: running!.id, state: 'STARTED' },
      { id: waiting!.id, state: 'CANCELLED', error: 'The sync definition was removed' },
    ])

    // The running one finishes on the bundle it started with; nothing starts after it.
    held.release()
    await settled()
    expect((await runsOf('notes', 'c1')).find((r) => r.id === running!.id)).toMatchObject({
      state: 'SUCCEEDED',
      bundle_hash: notes!.bundle_hash,
    })
    expect((await runsOf('notes', 'c1')).filter((r) => r.id > waiting!.id)).toEqual([])

    // Its records stay, through either process; it shows as stopped, and cannot be triggered.
    expect(await records(a, 'acme', 'c1', 'Note')).toEqual([{ id: 'latest', version: 1 }])
    expect(await records(b, 'acme', 'c2', 'Note')).toEqual([{ id: 'latest', version: 1 }])
    const status = await statusOf(b, 'acme', 'c1')
    expect(status.body.syncs.find((s: JsonBody) => s.name === 'notes')).toMatchObject({ status: 'STOPPED' })
    for (const server of [a, b]) {
      const refused = await trigger(server, 'acme', 'notes', 'c1')
      expect(refused).toMatchObject({ status: 400, body: { error: { code: 'no_syncs_found' } } })
    }
    const integrations = await call(a, 'GET', '/integrations')
    expect(
      integrations.body.data
        .find((i: JsonBody) => i.unique_key === 'acme')
        .syncs.map((s: JsonBody) => s.name),
    ).toEqual(['items'])
    await settled()
    expect((await runsOf('notes', 'c1')).filter((r) => r.id > waiting!.id)).toEqual([])
  })

  it('a deploy with a broken file names it, exits 1 and changes nothing: the previous version still runs', async () => {
    await settled()
    const before = await Promise.all([
      definition('dev', 'acme', 'items'),
      definition('prod', 'acme', 'items'),
    ])
    const { rows: deployments } = await pool.query('SELECT id FROM deployments')
    await writeFolder(folder, {
      'acme/syncs/items.ts': syncSource({ model: 'Item', version: 4, gate: true }).replace(
        'async exec(nango) {',
        'async exec(nango) { const = 1;',
      ),
    })
    const deployed = await deploy()
    expect(deployed.code).toBe(1)
    expect(deployed.stderr).toMatch(
      /^refused +\S*acme\/syncs\/items\.ts: could not be bundled: .+acme\/syncs\/items\.ts:\d+\)$/m,
    )
    expect(deployed.stderr).toContain('1 file(s) refused')
    expect(deployed.stdout).toMatch(/^dev: nothing changed \(0 unchanged\)$/m)
    expect(deployed.stdout).toMatch(/^prod: nothing changed \(0 unchanged\)$/m)

    expect(
      await Promise.all([definition('dev', 'acme', 'items'), definition('prod', 'acme', 'items')]),
    ).toEqual(before)
    expect((await pool.query('SELECT id FROM deployments')).rows).toEqual(deployments)

    const after = await lastRunId('items', 'c2')
    expect((await trigger(b, 'acme', 'items', 'c2')).status).toBe(200)
    const run = await nextRun('items', 'c2', after)
    expect(run.bundle_hash).toBe(before[0]!.bundle_hash)
    expect(await records(a, 'acme', 'c2', 'Item')).toEqual([{ id: 'latest', version: 3 }])
  })

  it('a sync deployed to dev only does not exist in prod', async () => {
    await settled()
    await writeFolder(folder, {
      ...acme(3, { notes: false }),
      'envco/syncs/things.ts': syncSource({ model: 'Thing', version: 1, gate: false }),
    })
    const deployed = await deploy('--env', 'dev')
    expect(deployed.code, deployed.stderr).toBe(0)
    expect(deployed.stdout).toMatch(/^dev: deployment \d+ \(1 unchanged\)\n +added +envco\/things$/m)
    expect(deployed.stdout).not.toMatch(/^prod:/m)

    const connect = (server: ServerProcess, key: string) =>
      call(server, 'POST', '/connections', {
        key,
        body: { provider_config_key: 'envco', connection_id: 'e1' },
      })
    expect((await connect(a, PROD)).status).toBe(201)
    expect((await connect(b, DEV)).status).toBe(201)

    for (const server of [a, b]) {
      // prod: the integration is not deployed there, so the connection has no syncs.
      expect(await statusOf(server, 'envco', 'e1', PROD)).toEqual({ status: 200, body: { syncs: [] } })
      expect(await trigger(server, 'envco', 'things', 'e1', PROD)).toMatchObject({
        status: 400,
        body: { error: { code: 'unknown_provider_config' } },
      })
      const prod = await call(server, 'GET', '/integrations', { key: PROD })
      expect(prod.body.data.map((i: JsonBody) => i.unique_key)).toEqual(['acme'])
      // dev: it is.
      expect(syncsListed(await statusOf(server, 'envco', 'e1', DEV))).toEqual(['things'])
      const dev = await call(server, 'GET', '/integrations', { key: DEV })
      expect(dev.body.data.map((i: JsonBody) => i.unique_key).sort()).toEqual(['acme', 'envco'])
    }
    const { rows } = await pool.query<{ env: string; n: number }>(
      `SELECT e.name AS env, count(s.id)::int AS n FROM connections c JOIN environments e ON e.id = c.environment_id
       LEFT JOIN syncs s ON s.connection_pk = c.id WHERE c.provider_config_key = 'envco' GROUP BY 1 ORDER BY 1`,
    )
    expect(rows).toEqual([
      { env: 'dev', n: 1 },
      { env: 'prod', n: 0 },
    ])
    // The dev connection's first run happens by itself.
    const thing = await waitFor(
      'the dev sync ran',
      async () => {
        const found = await records(a, 'envco', 'e1', 'Thing', DEV)
        return found.length > 0 ? found : undefined
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    expect(thing).toEqual([{ id: 'latest', version: 1 }])
  })
})

describe.skipIf(process.env.SYNCSTORE_TEST_DB === 'postgres')(
  'deployments on the embedded database, through the running server',
  { timeout: 60_000 },
  () => {
    let database: ProcessDatabase
    let dir: string
    let server: ServerProcess
    const key = randomUUID()

    beforeAll(async () => {
      database = await createProcessDatabase({ kind: 'embedded' })
      dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-deploy-embedded-'))
      server = await startServer({
        ...database.env,
        NANGO_SECRET_KEY_DEV: key,
        // No folder (and so no bundled example): only what `syncstore deploy` stores.
        SYNCSTORE_INTEGRATIONS_DIR: path.join(dir, 'none'),
        SYNCSTORE_POLL_INTERVAL_MS: '200',
      })
    }, 120_000)
    afterAll(async () => {
      await killAll()
      await database?.destroy()
      if (dir) await rm(dir, { recursive: true, force: true })
    })

    it('deploy and connections create are forwarded to the server, which runs the sync', async () => {
      const cli = (...args: string[]) => runCli(args, { ...database.env, LOG_LEVEL: 'silent' })
      const folder = path.join(dir, 'integrations')
      const ours = (version: number) => ({
        'local/syncs/things.ts': syncSource({ model: 'Thing', version, gate: false }),
      })
      expect((await call(server, 'GET', '/integrations', { key })).body).toEqual({ data: [] })

      await writeFolder(folder, ours(1))
      const deployed = await cli('deploy', folder)
      expect(deployed.code, deployed.stderr).toBe(0)
      expect(deployed.stdout).toMatch(/^dev: deployment \d+ \(0 unchanged\)\n +added +local\/things$/m)
      const created = await cli('connections', 'create', '--integration', 'local', '--connection-id', 'e1')
      expect(created.code, created.stderr).toBe(0)
      expect(syncsListed(await statusOf(server, 'local', 'e1', key))).toEqual(['things'])
      const first = await waitFor(
        'the first run saved its record',
        async () => {
          const found = await records(server, 'local', 'e1', 'Thing', key)
          return found.length > 0 ? found : undefined
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      )
      expect(first).toEqual([{ id: 'latest', version: 1 }])

      await writeFolder(folder, ours(2))
      const changed = await cli('deploy', folder)
      expect(changed.code, changed.stderr).toBe(0)
      expect(changed.stdout).toMatch(/changed +local\/things$/m)
      const listed = await call(server, 'GET', '/integrations', { key })
      expect(listed.body.data[0].syncs[0]).toMatchObject({ name: 'things', description: 'version 2' })
      expect((await trigger(server, 'local', 'things', 'e1', key)).status).toBe(200)
      await waitFor(
        'the new version ran',
        async () => (await records(server, 'local', 'e1', 'Thing', key))[0]?.version === 2,
        { timeoutMs: 30_000, intervalMs: 100 },
      )
    })
  },
)
