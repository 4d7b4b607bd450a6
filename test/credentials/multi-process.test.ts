import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, type ServerProcess, startServer } from '../helpers/process.ts'
import type { JsonBody } from '../helpers/server.ts'
import { type OAuthServer, startOAuthServer, writeProvidersFile } from './oauth-server.ts'

/**
 * Issue 12: concurrent refreshes of one connection across processes are one refresh. Two
 * `syncstore serve` processes on one Postgres answer 20 concurrent proxy calls of a connection
 * whose token has expired; the local OAuth2 server counts the refresh requests it gets.
 */

const KEY = randomUUID()

async function call(
  server: ServerProcess,
  method: string,
  url: string,
  { body, headers = {} }: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: JsonBody }> {
  const res = await fetch(`${server.url}${url}`, {
    method,
    headers: {
      authorization: `Bearer ${KEY}`,
      ...headers,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(20_000),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : undefined }
}

const onPostgres = describe.skipIf(process.env.SYNCSTORE_TEST_DB !== 'postgres')

onPostgres('token refresh across two serve processes on one Postgres', { timeout: 60_000 }, () => {
  let database: ProcessDatabase
  let dir: string
  let oauth: OAuthServer
  let a: ServerProcess
  let b: ServerProcess

  beforeAll(async () => {
    oauth = await startOAuthServer()
    dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-refresh-multi-'))
    const providersFile = await writeProvidersFile(dir, oauth)
    database = await createProcessDatabase({ kind: 'postgres' })
    const env = {
      ...database.env,
      NANGO_SECRET_KEY_DEV: KEY,
      LOG_LEVEL: 'info', // the helper waits for the "listening" line
      SYNCSTORE_INTEGRATIONS_DIR: path.join(dir, 'none'),
      SYNCSTORE_PROVIDERS_FILE: providersFile,
    }
    ;[a, b] = await Promise.all([startServer(env), startServer(env)])
  }, 120_000)

  afterAll(async () => {
    await killAll()
    await database?.destroy()
    await oauth?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('20 concurrent proxy calls, half on each process, cause exactly one refresh', async () => {
    const created = await call(a, 'POST', '/integrations', {
      body: {
        unique_key: 'crm',
        provider: 'test-oauth',
        credentials: { type: 'OAUTH2', client_id: oauth.client.id, client_secret: oauth.client.secret },
      },
    })
    expect(created.status, JSON.stringify(created.body)).toBe(200)
    const expired = oauth.grantAccessToken(-1)
    const imported = await call(b, 'POST', '/connections', {
      body: {
        provider_config_key: 'crm',
        connection_id: 'shared',
        credentials: {
          type: 'OAUTH2',
          access_token: expired,
          refresh_token: oauth.grantRefreshToken(),
          expires_at: new Date(Date.now() - 1000).toISOString(),
        },
      },
    })
    expect(imported.status, JSON.stringify(imported.body)).toBe(201)

    // The token endpoint takes 300 ms: every call arrives while the first refresh is under way.
    oauth.tokenDelayMs = 300
    const headers = { 'connection-id': 'shared', 'provider-config-key': 'crm' }
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => call(i % 2 === 0 ? a : b, 'GET', '/proxy/me', { headers })),
    )
    oauth.tokenDelayMs = 0

    expect(answers.map((r) => r.status)).toEqual(Array(20).fill(200))
    expect(oauth.counts.refresh_token).toBe(1)
    // Every call, on either process, used the one new token, which the API accepted.
    const fresh = oauth.issued.at(-1)
    expect(new Set(answers.map((r) => r.body.token))).toEqual(new Set([fresh]))
    expect(fresh).not.toBe(expired)
  })
})
