import http from 'node:http'
import type { AddressInfo } from 'node:net'

import { sql } from 'kysely'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { ConfigError, loadConfig } from '../../src/config.ts'
import { countRefresh } from '../../src/metrics/metrics.ts'
import { setWebhook } from '../../src/webhooks/store.ts'
import { testDatabaseKind } from '../helpers/database.ts'
import { api, startTestServer, type TestServer, waitFor } from '../helpers/server.ts'
import { connect, integrationJson, runsOf, syncId, waitForRun } from '../runtime/harness.ts'
import { type Family, parsePrometheus, type Sample } from './prometheus.ts'

/**
 * GET /metrics on its own port (SYNCSTORE_METRICS_PORT), scraped and parsed as Prometheus would:
 * requests by route, runs by outcome, records written and read, the webhook backlog, due syncs,
 * the pool, and Node's own metrics, counted per server.
 */

const sync = (models: string, exec: string) => `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'a sync', frequency: 'every hour',
    models: { ${models}: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
    async exec(nango) { ${exec} },
  })`

/** An upstream API whose answers wait until `open()`: a run calling it holds its worker. */
interface Gate {
  url: string
  open(): void
  close(): Promise<void>
}

async function startGate(): Promise<Gate> {
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  const server = http.createServer((_req, res) => {
    void opened.then(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    open,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** A port nothing listens on: webhook deliveries to it fail and wait for their retry. */
async function closedPort(): Promise<number> {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

let gate: Gate
let t: TestServer

beforeAll(async () => {
  gate = await startGate()
  t = await startTestServer(
    {
      'shop/syncs/items.ts': sync(
        'Item',
        `await nango.batchSave([{ id: 'a' }, { id: 'b' }, { id: 'c' }], 'Item')`,
      ),
      'broken/syncs/main.ts': sync('Thing', `throw new Error('upstream answered 418')`),
      'slow/integration.json': integrationJson(gate.url),
      'slow/syncs/main.ts': sync('Thing', `await nango.get({ endpoint: '/wait' })`),
    },
    // One run at a time: while the slow sync holds it, a triggered run stays due and unstarted.
    { SYNCSTORE_METRICS_PORT: '0', SYNCSTORE_RUN_CONCURRENCY: '1' },
  )
  const hook = `http://127.0.0.1:${await closedPort()}/hook`
  await setWebhook(t.database.db.kysely, t.sealer, t.envId, hook, 'whsec-metrics-test')
})
afterAll(async () => {
  gate?.open()
  await t?.close()
  await gate?.close()
})

async function scrape(server: TestServer = t): Promise<Map<string, Family>> {
  const res = await fetch(`${server.server.metricsUrl}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
  return parsePrometheus(await res.text())
}

/** The value of one series (0 when it does not exist yet), `name` including any suffix. */
function value(
  families: Map<string, Family>,
  family: string,
  labels: Record<string, string> = {},
  name = family,
) {
  const found = families
    .get(family)
    ?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  return found?.value ?? 0
}

const REQUESTS = 'syncstore_http_request_duration_seconds'
const requests = (m: Map<string, Family>, labels: Record<string, string>) =>
  value(m, REQUESTS, labels, `${REQUESTS}_count`)

async function getRecords(query: string, connectionId = 'c1') {
  const res = await fetch(`${t.url}/records?${query}`, {
    headers: {
      authorization: `Bearer ${t.key}`,
      'provider-config-key': 'shop',
      'connection-id': connectionId,
    },
  })
  return {
    status: res.status,
    body: (await res.json()) as { records: unknown[]; next_cursor: string | null },
  }
}

it('serves the text format: every family with its HELP and TYPE, Node metrics and the pool', async () => {
  const m = await scrape()
  const types = Object.fromEntries([...m.values()].map((f) => [f.name, f.type]))
  expect(types).toMatchObject({
    [REQUESTS]: 'histogram',
    syncstore_runs_total: 'counter',
    syncstore_run_duration_seconds: 'histogram',
    syncstore_records_written_total: 'counter',
    syncstore_records_read_total: 'counter',
    syncstore_oauth_refreshes_total: 'counter',
    syncstore_schedules_due_unstarted: 'gauge',
    syncstore_schedules_due_oldest_seconds: 'gauge',
    syncstore_webhook_deliveries_pending: 'gauge',
    syncstore_webhook_deliveries_due: 'gauge',
    nodejs_eventloop_lag_seconds: 'gauge',
    nodejs_eventloop_lag_p99_seconds: 'gauge',
    process_cpu_user_seconds_total: 'counter',
    process_resident_memory_bytes: 'gauge',
  })
  expect(value(m, 'process_resident_memory_bytes')).toBeGreaterThan(10 * 1024 * 1024)
  // Outcomes exist from the start, at 0, so a rate over them exists before the first event.
  for (const outcome of ['succeeded', 'failed', 'cancelled', 'expired', 'lost']) {
    expect(m.get('syncstore_runs_total')!.samples.some((s) => s.labels.outcome === outcome)).toBe(true)
  }
  if (testDatabaseKind === 'postgres') {
    expect(value(m, 'syncstore_db_pool_max')).toBe(10)
    expect(value(m, 'syncstore_db_pool_connections')).toBeGreaterThanOrEqual(1)
    // Callers waiting for a connection, including one being opened for them (this scrape's own queries).
    expect(m.get('syncstore_db_pool_waiting')!.type).toBe('gauge')
    expect(value(m, 'syncstore_db_pool_acquires_total')).toBeGreaterThan(0)
    expect(m.get('syncstore_db_pool_acquire_wait_seconds_total')!.type).toBe('counter')
  } else {
    // The embedded database is one connection in the process: no pool to report.
    expect([...m.keys()].filter((name) => name.startsWith('syncstore_db_pool'))).toEqual([])
  }
})

it('counts requests by route pattern and status, records read and written, and runs by outcome', async () => {
  const before = await scrape()
  const run = (await connect(t, 'shop', 'c1', ['items'])).items!
  expect(run.state).toBe('SUCCEEDED')
  const first = await getRecords('model=Item&limit=2')
  expect(first.body.records).toHaveLength(2)
  const second = await getRecords(`model=Item&limit=2&cursor=${encodeURIComponent(first.body.next_cursor!)}`)
  expect(second.body.records).toHaveLength(1)
  expect((await getRecords('model=Item', 'nobody')).status).toBe(400)
  expect((await api(t, 'GET', '/connections/c1?provider_config_key=shop')).status).toBe(200)
  const failed = (await connect(t, 'broken', 'c1', ['main'])).main!
  expect(failed.state).toBe('FAILED')

  // A run is counted just after its end is committed: wait for the scrape to show it.
  const after = await waitFor('both runs counted', async () => {
    const m = await scrape()
    const ended = (outcome: string) => value(m, 'syncstore_runs_total', { outcome })
    return ended('failed') >= 1 && ended('succeeded') >= 1 && m
  })
  const diff = (family: string, labels: Record<string, string> = {}, name = family) =>
    value(after, family, labels, name) - value(before, family, labels, name)

  expect(diff('syncstore_runs_total', { outcome: 'succeeded' })).toBe(1)
  expect(diff('syncstore_runs_total', { outcome: 'failed' })).toBe(1)
  expect(
    diff('syncstore_run_duration_seconds', { outcome: 'succeeded' }, 'syncstore_run_duration_seconds_count'),
  ).toBe(1)
  expect(
    diff('syncstore_run_duration_seconds', { outcome: 'succeeded' }, 'syncstore_run_duration_seconds_sum'),
  ).toBeGreaterThan(0)
  expect(diff('syncstore_records_written_total', { action: 'added' })).toBe(3)
  expect(diff('syncstore_records_written_total', { action: 'updated' })).toBe(0)
  expect(diff('syncstore_records_read_total')).toBe(3)

  expect(
    requests(after, { method: 'GET', route: '/records', status_code: '200' }) -
      requests(before, { method: 'GET', route: '/records', status_code: '200' }),
  ).toBe(2)
  expect(requests(after, { method: 'GET', route: '/records', status_code: '400' })).toBe(1)
  expect(requests(after, { method: 'GET', route: '/connections/:connectionId', status_code: '200' })).toBe(1)
  expect(requests(after, { method: 'POST', route: '/connections', status_code: '201' })).toBe(2)
  // The pattern, never the URL: no query string, no connection id in any label.
  for (const s of after.get(REQUESTS)!.samples) expect(s.labels.route).not.toMatch(/\?|c1|nobody/)
  expect(after.get(REQUESTS)!.samples.every((s) => s.labels.route && s.labels.method)).toBe(true)

  // Each histogram series: buckets never decrease with `le`, and +Inf is the count.
  for (const family of [...after.values()].filter((f) => f.type === 'histogram')) {
    const series = new Map<string, Sample[]>()
    for (const s of family.samples.filter((s) => s.name.endsWith('_bucket'))) {
      const { le, ...rest } = s.labels
      const key = JSON.stringify(rest)
      series.set(key, [...(series.get(key) ?? []), { ...s, value: s.value, labels: { le: le! } }])
    }
    expect(series.size).toBeGreaterThan(0)
    for (const [key, buckets] of series) {
      const sorted = [...buckets].sort((a, b) => Number(a.labels.le) - Number(b.labels.le))
      expect(sorted.at(-1)!.labels.le).toBe('+Inf')
      for (let i = 1; i < sorted.length; i++) {
        expect(sorted[i]!.value).toBeGreaterThanOrEqual(sorted[i - 1]!.value)
      }
      const count = family.samples.find(
        (s) => s.name === `${family.name}_count` && JSON.stringify(s.labels) === key,
      )
      expect(count?.value).toBe(sorted.at(-1)!.value)
    }
  }
})

it('shows the webhook backlog: a delivery to an endpoint that refuses stays pending', async () => {
  // The items run above changed one model: one delivery, to a port nothing listens on.
  const m = await waitFor('the failed delivery', async () => {
    const scraped = await scrape()
    return value(scraped, 'syncstore_webhook_deliveries_pending') === 1 && scraped
  })
  expect(value(m, 'syncstore_webhook_deliveries_due')).toBeLessThanOrEqual(1)
  // Its first attempt failed: it now waits out its backoff (10 s), so none is due.
  await waitFor('the delivery waiting for its retry', async () => {
    const scraped = await scrape()
    return (
      value(scraped, 'syncstore_webhook_deliveries_due') === 0 &&
      value(scraped, 'syncstore_webhook_deliveries_pending') === 1
    )
  })
})

it('shows a sync that is due and not started while every worker is busy, and not once it runs', async () => {
  expect(value(await scrape(), 'syncstore_schedules_due_unstarted')).toBe(0)
  const created = await api(t, 'POST', '/connections', { provider_config_key: 'slow', connection_id: 'c1' })
  expect(created.status).toBe(201)
  const slow = await syncId(t, 'slow', 'c1', 'main')
  await waitFor('the slow run holding the only worker', async () =>
    t.database.db.kysely
      .selectFrom('runs')
      .select('id')
      .where('sync_id', '=', slow)
      .where('state', '=', 'STARTED')
      .executeTakeFirst(),
  )
  const items = await syncId(t, 'shop', 'c1', 'items')
  const lastItems = (await runsOf(t, items)).at(-1)!.id
  const triggered = await api(t, 'POST', '/sync/trigger', {
    provider_config_key: 'shop',
    connection_id: 'c1',
    syncs: ['items'],
  })
  expect(triggered.status).toBe(200)

  let waiting = await scrape()
  expect(value(waiting, 'syncstore_schedules_due_unstarted')).toBe(1)
  expect(value(waiting, 'syncstore_schedules_due_oldest_seconds')).toBeGreaterThanOrEqual(0)
  expect(value(waiting, 'syncstore_schedules_due_oldest_seconds')).toBeLessThan(30)

  // A schedule that came due while no worker was free is not yet a run: counted as well.
  const broken = await syncId(t, 'broken', 'c1', 'main')
  const lastBroken = (await runsOf(t, broken)).at(-1)!.id
  await sql`UPDATE schedules SET next_due_at = now() - interval '5 seconds' WHERE sync_id = ${broken}`.execute(
    t.database.db.kysely,
  )
  waiting = await scrape()
  expect(value(waiting, 'syncstore_schedules_due_unstarted')).toBe(2)
  expect(value(waiting, 'syncstore_schedules_due_oldest_seconds')).toBeGreaterThanOrEqual(5)

  gate.open()
  expect((await waitForRun(t, items, lastItems)).state).toBe('SUCCEEDED')
  expect((await waitForRun(t, broken, lastBroken)).state).toBe('FAILED')
  const m = await scrape()
  expect(value(m, 'syncstore_schedules_due_unstarted')).toBe(0)
  expect(value(m, 'syncstore_schedules_due_oldest_seconds')).toBe(0)
})

it('keeps one registry per server: a second server in this process counts only its own', async () => {
  const other = await startTestServer({}, { SYNCSTORE_METRICS_PORT: '0' })
  try {
    countRefresh(t.database.db.kysely, 'failure')
    const mine = await scrape()
    const theirs = await scrape(other)
    expect(value(mine, 'syncstore_oauth_refreshes_total', { outcome: 'failure' })).toBe(1)
    expect(value(theirs, 'syncstore_oauth_refreshes_total', { outcome: 'failure' })).toBe(0)
    expect(value(theirs, 'syncstore_oauth_refreshes_total', { outcome: 'success' })).toBe(0)
    expect(requests(mine, { method: 'GET', route: '/records', status_code: '200' })).toBe(2)
    expect(requests(theirs, { method: 'GET', route: '/records', status_code: '200' })).toBe(0)
    expect(value(theirs, 'syncstore_records_read_total')).toBe(0)
    expect(value(theirs, 'syncstore_runs_total', { outcome: 'succeeded' })).toBe(0)
  } finally {
    await other.close()
  }
})

it('answers only GET and HEAD /metrics on its port, with the API error body otherwise', async () => {
  const base = t.server.metricsUrl!
  expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
  const missing = await fetch(`${base}/records`)
  expect(missing.status).toBe(404)
  expect(await missing.json()).toEqual({
    error: { code: 'not_found', message: expect.stringContaining('/metrics') },
  })
  const post = await fetch(`${base}/metrics`, { method: 'POST' })
  expect(post.status).toBe(405)
  expect(post.headers.get('allow')).toBe('GET, HEAD')
  expect(((await post.json()) as { error: { code: string } }).error.code).toBe('method_not_allowed')
  const head = await fetch(`${base}/metrics`, { method: 'HEAD' })
  expect(head.status).toBe(200)
  expect(Number(head.headers.get('content-length'))).toBeGreaterThan(1000)
  // Not on the API's port: a key of one environment does not read the whole instance.
  expect((await api(t, 'GET', '/metrics')).status).toBe(404)
})

it('is off unless SYNCSTORE_METRICS_PORT is set, and refuses the API port', () => {
  expect(loadConfig({}).metricsPort).toBeNull()
  expect(loadConfig({ SYNCSTORE_METRICS_PORT: '9464' }).metricsPort).toBe(9464)
  expect(() => loadConfig({ PORT: '9464', SYNCSTORE_METRICS_PORT: '9464' })).toThrow(
    new ConfigError(['SYNCSTORE_METRICS_PORT must differ from PORT']),
  )
  expect(() => loadConfig({ SYNCSTORE_METRICS_PORT: 'x' })).toThrow(
    /SYNCSTORE_METRICS_PORT must be an integer from 0 to 65535/,
  )
})
