import http from 'node:http'
import type { AddressInfo } from 'node:net'

import { type TestServer, waitFor } from '../helpers/server.ts'

/**
 * Helpers for runtime and webhook tests: drive the whole server through its HTTP API (as a user's
 * backend would) and watch the `runs` table for the outcome.
 */

const FINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED']

export interface RunRow {
  id: number
  state: string
  type: string | null
  result: Record<string, { added: number; updated: number; deleted: number }> | null
  error: string | null
  started_at: Date | null
}

export async function api<T = unknown>(
  t: TestServer,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${t.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${t.key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T }
}

/** The sync row of a connection's sync variant (it exists once the connection does). */
export async function syncId(
  t: TestServer,
  pck: string,
  connectionId: string,
  name: string,
  variant = 'base',
): Promise<string> {
  return waitFor(`sync ${pck}/${connectionId}/${name}::${variant}`, async () => {
    const row = await t.database.db.kysely
      .selectFrom('syncs as s')
      .innerJoin('connections as c', 'c.id', 's.connection_pk')
      .select('s.id')
      .where('c.environment_id', '=', t.envId)
      .where('c.provider_config_key', '=', pck)
      .where('c.connection_id', '=', connectionId)
      .where('s.name', '=', name)
      .where('s.variant', '=', variant)
      .executeTakeFirst()
    return row?.id
  })
}

export async function runsOf(t: TestServer, sync: string): Promise<RunRow[]> {
  return (await t.database.db.kysely
    .selectFrom('runs')
    .select(['id', 'state', 'type', 'result', 'error', 'started_at'])
    .where('sync_id', '=', sync)
    .orderBy('id')
    .execute()) as RunRow[]
}

/** The first run of `sync` with an id above `afterId` that has ended. */
export async function waitForRun(
  t: TestServer,
  sync: string,
  afterId = 0,
  timeoutMs = 20_000,
): Promise<RunRow> {
  return waitFor(
    `a finished run of sync ${sync} after run ${afterId}`,
    async () => (await runsOf(t, sync)).find((r) => r.id > afterId && FINAL.includes(r.state)),
    { timeoutMs },
  )
}

/** Creates a connection (its syncs start at once) and waits for each named sync's first run. */
export async function connect(
  t: TestServer,
  pck: string,
  connectionId: string,
  syncs: string[],
  extra: { credentials?: Record<string, unknown>; metadata?: Record<string, unknown> } = {},
): Promise<Record<string, RunRow>> {
  const res = await api(t, 'POST', '/connections', {
    provider_config_key: pck,
    connection_id: connectionId,
    ...extra,
  })
  if (res.status !== 201) throw new Error(`POST /connections: ${res.status} ${JSON.stringify(res.body)}`)
  const out: Record<string, RunRow> = {}
  for (const name of syncs) out[name] = await waitForRun(t, await syncId(t, pck, connectionId, name))
  return out
}

/** POST /sync/trigger and wait for the run it asked for. */
export async function trigger(
  t: TestServer,
  pck: string,
  connectionId: string,
  name: string,
  variant = 'base',
  opts?: { reset?: boolean; emptyCache?: boolean },
): Promise<RunRow> {
  const sync = await syncId(t, pck, connectionId, name, variant)
  const before = Math.max(0, ...(await runsOf(t, sync)).map((r) => r.id))
  const res = await api(t, 'POST', '/sync/trigger', {
    provider_config_key: pck,
    connection_id: connectionId,
    syncs: [variant === 'base' ? name : { name, variant }],
    ...(opts ? { opts } : {}),
  })
  if (res.status !== 200) throw new Error(`POST /sync/trigger: ${res.status} ${JSON.stringify(res.body)}`)
  return waitForRun(t, sync, before)
}

export interface StatusItem {
  name: string
  variant: string
  status: string
  latestExecutionStatus?: string
  latestResult?: Record<string, { added: number; updated: number; deleted: number }>
  nextScheduledSyncAt: string | null
  recordCount: Record<string, number>
  checkpoint: Record<string, unknown> | null
}

export async function status(
  t: TestServer,
  pck: string,
  connectionId: string,
  name: string,
  variant = 'base',
) {
  const q = new URLSearchParams({
    provider_config_key: pck,
    connection_id: connectionId,
    syncs: `${name}::${variant}`,
  })
  const res = await api<{ syncs: StatusItem[] }>(t, 'GET', `/sync/status?${q}`)
  if (res.status !== 200) throw new Error(`GET /sync/status: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.syncs.find((s) => s.variant === variant)!
}

export type StoredRecord = Record<string, unknown> & {
  id: string
  _nango_metadata: { last_action: string; deleted_at: string | null }
}

/** Every record of a model (all pages, deleted ones included), keyed by id. */
export async function records(
  t: TestServer,
  pck: string,
  connectionId: string,
  model: string,
  variant?: string,
): Promise<Map<string, StoredRecord>> {
  const out = new Map<string, StoredRecord>()
  let cursor: string | null = null
  do {
    const q = new URLSearchParams({ model, limit: '1000', ...(variant ? { variant } : {}) })
    if (cursor) q.set('cursor', cursor)
    const res = await fetch(`${t.url}/records?${q}`, {
      headers: {
        authorization: `Bearer ${t.key}`,
        'provider-config-key': pck,
        'connection-id': connectionId,
      },
    })
    if (res.status !== 200) throw new Error(`GET /records: ${res.status} ${await res.text()}`)
    const page = (await res.json()) as { records: StoredRecord[]; next_cursor: string | null }
    for (const r of page.records) out.set(r.id, r)
    cursor = page.next_cursor
  } while (cursor)
  return out
}

export interface ApiRequest {
  method: string
  path: string
  query: URLSearchParams
  headers: http.IncomingHttpHeaders
  body: string
}

/** A JSON API on 127.0.0.1 for sync functions to call; `handle` answers, `requests` records what came in. */
export interface FakeApi {
  url: string
  requests: ApiRequest[]
  close(): Promise<void>
}

export async function startApi(
  handle: (req: ApiRequest) => {
    status?: number
    body?: unknown
    headers?: Record<string, string>
  },
): Promise<FakeApi> {
  const requests: FakeApi['requests'] = []
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const entry: ApiRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      body: '',
    }
    requests.push(entry)
    req.setEncoding('utf8').on('data', (chunk: string) => (entry.body += chunk))
    req.on('end', () => {
      let answer
      try {
        answer = handle(entry)
      } catch (err) {
        answer = { status: 500, body: { error: String(err) } }
      }
      res.writeHead(answer.status ?? 200, { 'content-type': 'application/json', ...answer.headers })
      res.end(answer.body === undefined ? '' : JSON.stringify(answer.body))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** integration.json pointing the proxy at a test API. */
export const integrationJson = (baseUrl: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ base_url: baseUrl, ...extra })
