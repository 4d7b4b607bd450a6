import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type { Static } from 'typebox'

import { loadConfig } from '../../src/config.ts'
import { createSealer, type Sealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { resolveBootstrapKeys } from '../../src/keys/bootstrap.ts'
import { createKey } from '../../src/keys/store.ts'
import { createLogger } from '../../src/logger.ts'
import { type Server, startServer } from '../../src/server.ts'
import type { SyncStatus } from '../../src/syncs/schemas.ts'
import { createTestDatabase, type TestDatabase } from './database.ts'

export interface TestServer {
  server: Server
  database: TestDatabase
  sealer: Sealer
  url: string
  key: string
  envId: number
  integrationsDir: string
  close(): Promise<void>
}

/**
 * The whole server (API, scheduler, runtime, webhooks) as `syncstore serve` assembles it, on a
 * fresh test database, with sync definitions written into a temporary integrations folder:
 * `files` maps paths like `github/syncs/issues.ts` to their source.
 */
export async function startTestServer(
  files: Record<string, string>,
  env: Record<string, string> = {},
  /** Reuse a database (e.g. to restart on it): close() then leaves it to the caller. */
  options: { database?: TestDatabase } = {},
): Promise<TestServer> {
  const integrationsDir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-integrations-'))
  // Definitions are ES modules, as in a project with "type": "module". (CommonJS folders work in
  // the real server; inside vitest's forked workers tsx cannot require() them, see test/syncs/definitions.)
  await writeFile(path.join(integrationsDir, 'package.json'), '{"type":"module"}\n')
  for (const [file, source] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(integrationsDir, file)), { recursive: true })
    await writeFile(path.join(integrationsDir, file), source)
  }
  const database = options.database ?? (await createTestDatabase())
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    SYNCSTORE_INTEGRATIONS_DIR: integrationsDir,
    SYNCSTORE_HEARTBEAT_INTERVAL_MS: '200',
    SYNCSTORE_HEARTBEAT_TIMEOUT_MS: '2000',
    SYNCSTORE_POLL_INTERVAL_MS: '200',
    ...(database.target.kind === 'postgres' ? { DATABASE_URL: database.target.url } : {}),
    ...env,
  })
  const sealer = createSealer(config.encryptionKey)
  const logger = createLogger(config.logLevel)
  const bootstrapKeys = await resolveBootstrapKeys(database.db.kysely, config)
  const server = await startServer({ config, db: database.db, logger, sealer, bootstrapKeys })
  const url = await server.app.listen({ port: 0, host: '127.0.0.1' })
  const dev = await ensureEnvironment(database.db.kysely, 'dev')
  const { secret } = await createKey(database.db.kysely, dev.id, ['environment:*'])
  return {
    server,
    database,
    sealer,
    url,
    key: secret,
    envId: dev.id,
    integrationsDir,
    async close() {
      await server.close(1000)
      if (!options.database) await database.destroy()
      await rm(integrationsDir, { recursive: true, force: true })
    },
  }
}

/**
 * Polls `check` until it answers something other than undefined / false / null, and resolves with
 * that; throws after `timeoutMs` naming `what` and the last answer. For conditions that the server
 * reaches on its own (a run finished, a status changed): never a fixed sleep.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  { timeoutMs = 15_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    last = await check()
    if (last !== undefined && last !== null && last !== false) return last as T
    if (Date.now() > deadline) {
      throw new Error(`waitFor ${what}: not reached within ${timeoutMs} ms (last: ${JSON.stringify(last)})`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** A parsed JSON response body, as loosely typed as a test needs it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type JsonBody = any
export type SyncStatusItem = Static<typeof SyncStatus>

/** An authenticated JSON request to the test server (default key: full access). */
export async function api(
  t: TestServer,
  method: string,
  url: string,
  body?: unknown,
  key = t.key,
): Promise<{ status: number; body: JsonBody }> {
  const res = await fetch(`${t.url}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : undefined }
}

/** GET /sync/status of one sync of one connection (undefined when it does not exist). */
export async function syncStatusOf(
  t: TestServer,
  pck: string,
  connectionId: string,
  name: string,
  variant = 'base',
): Promise<SyncStatusItem | undefined> {
  const q = new URLSearchParams({
    syncs: `${name}::${variant}`,
    provider_config_key: pck,
    connection_id: connectionId,
  })
  const res = await api(t, 'GET', `/sync/status?${q}`)
  if (res.status !== 200) throw new Error(`GET /sync/status: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.syncs[0]
}

/** Polls GET /sync/status until the sync's status matches `predicate`; resolves with that status. */
export function waitForStatus(
  t: TestServer,
  sync: SyncRef,
  predicate: (status: SyncStatusItem) => boolean,
  timeoutMs = 15_000,
): Promise<SyncStatusItem> {
  return waitFor(
    `status of ${sync.name}::${sync.variant ?? 'base'} on ${sync.connectionId}`,
    async () => {
      const status = await syncStatusOf(t, sync.pck, sync.connectionId, sync.name, sync.variant)
      return status && predicate(status) ? status : undefined
    },
    { timeoutMs },
  )
}

/** The runs of one sync, oldest first, straight from the `runs` table. */
export async function runsOf(t: TestServer, sync: SyncRef) {
  return t.database.db.kysely
    .selectFrom('runs as r')
    .innerJoin('syncs as s', 's.id', 'r.sync_id')
    .innerJoin('connections as c', 'c.id', 's.connection_pk')
    .select([
      'r.id',
      'r.state',
      'r.reason',
      'r.reset',
      'r.empty_cache',
      'r.result',
      'r.error',
      's.id as sync_id',
    ])
    .where('c.provider_config_key', '=', sync.pck)
    .where('c.connection_id', '=', sync.connectionId)
    .where('s.name', '=', sync.name)
    .where('s.variant', '=', sync.variant ?? 'base')
    .orderBy('r.id')
    .execute()
}

/** One sync of one connection, as the routes name it. */
export interface SyncRef {
  pck: string
  /** the connection's public id */
  connectionId: string
  name: string
  variant?: string
}

/**
 * Does `action` (a trigger, a start...) and waits until each sync has exactly one more run, and it
 * succeeded; resolves with those runs.
 */
export async function withNewRuns(t: TestServer, syncs: SyncRef[], action: () => Promise<unknown>) {
  const before = await Promise.all(syncs.map(async (s) => (await runsOf(t, s)).length))
  await action()
  return Promise.all(
    syncs.map(async (s, i) => {
      const what = `a new run of ${s.name}::${s.variant ?? 'base'} on ${s.connectionId}`
      await waitFor(what, async () => {
        const runs = await runsOf(t, s)
        return runs.length > before[i]! && runs.at(-1)!.state === 'SUCCEEDED'
      })
      const runs = await runsOf(t, s)
      if (runs.length !== before[i]! + 1) throw new Error(`${what}: ${runs.length - before[i]!} new runs`)
      return runs.at(-1)!
    }),
  )
}
