import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createKey } from '../../src/keys/store.ts'
import { api, type JsonBody, type TestServer, startTestServer } from '../helpers/server.ts'
import { connect, records, trigger } from '../runtime/harness.ts'
import { type OAuthServer, startOAuthServer, writeProvidersFile } from './oauth-server.ts'

/**
 * Issue 12, OAuth2 credentials that stay valid: a local OAuth2 server (oauth-server.ts) issues
 * tokens, a provider file names its token URL, and an integration created through the API holds the
 * client id and secret. Runs, GET /connections/{id} and nango.getToken() see refreshed tokens.
 */

// Calls the API stand-in with the connection's token (which answers 401 to an expired one) and
// saves the token it accepted beside the one nango.getToken() gives.
const meSync = `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'Who am I', frequency: 'every hour', models: { Me: { type: 'object' } },
    async exec(nango) {
      const res = await nango.get({ endpoint: '/me' })
      const token = await nango.getToken()
      await nango.batchSave([{ id: 'me', accepted: res.data.token, token: typeof token === 'string' ? token : token.token }], 'Me')
    },
  })`

let oauth: OAuthServer
let dir: string
let t: TestServer
let readOnlyKey: string

const inSeconds = (s: number) => new Date(Date.now() + s * 1000).toISOString()

beforeAll(async () => {
  oauth = await startOAuthServer()
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-refresh-'))
  const providersFile = await writeProvidersFile(dir, oauth)
  t = await startTestServer(
    {
      'crm/integration.json': JSON.stringify({ provider: 'test-oauth' }),
      'crm/syncs/me.ts': meSync,
      'machine/integration.json': JSON.stringify({ provider: 'test-cc' }),
      'machine/syncs/me.ts': meSync,
    },
    // Encrypted at rest: refreshed tokens must be stored sealed like imported ones.
    { SYNCSTORE_PROVIDERS_FILE: providersFile, SYNCSTORE_ENCRYPTION_KEY: randomBytes(32).toString('base64') },
  )
  const res = await api(t, 'PATCH', '/integrations/crm', {
    credentials: { type: 'OAUTH2', client_id: oauth.client.id, client_secret: oauth.client.secret },
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
  readOnlyKey = (await createKey(t.database.db.kysely, t.envId, ['environment:connections:read'])).secret
})
afterAll(async () => {
  await t?.close()
  await oauth?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** An OAUTH2 connection whose access token expired `ago` seconds ago (negative: expires in). */
async function importExpiring(connectionId: string, refreshToken: string, ago = 1) {
  const res = await api(t, 'POST', '/connections', {
    provider_config_key: 'crm',
    connection_id: connectionId,
    credentials: {
      type: 'OAUTH2',
      access_token: oauth.grantAccessToken(-ago),
      refresh_token: refreshToken,
      expires_at: inSeconds(-ago),
    },
  })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
}

const getConnection = (connectionId: string, query = '', key = t.key) =>
  api(t, 'GET', `/connections/${connectionId}?provider_config_key=crm${query}`, undefined, key)

describe('refresh before use', () => {
  it('a run after its token expired gets a new one, for the proxy and nango.getToken(); the next run reuses it', async () => {
    const refreshes = oauth.counts.refresh_token
    const expired = oauth.grantAccessToken(-1)
    const res = await api(t, 'POST', '/connections', {
      provider_config_key: 'crm',
      connection_id: 'after-expiry',
      credentials: {
        type: 'OAUTH2',
        access_token: expired,
        refresh_token: oauth.grantRefreshToken(),
        expires_at: inSeconds(-1),
      },
    })
    expect(res.status).toBe(201)
    const { runs } = await waitForFirstRun('after-expiry')
    expect(runs.state, runs.error ?? '').toBe('SUCCEEDED')
    expect(oauth.counts.refresh_token - refreshes).toBe(1)
    const newest = oauth.issued.at(-1)!
    const me = (await records(t, 'crm', 'after-expiry', 'Me')).get('me')!
    expect(me).toMatchObject({ accepted: newest, token: newest })
    expect(newest).not.toBe(expired)

    // Stored: the next run uses the new token without asking the provider again.
    const again = await trigger(t, 'crm', 'after-expiry', 'me')
    expect(again.state, again.error ?? '').toBe('SUCCEEDED')
    expect(oauth.counts.refresh_token - refreshes).toBe(1)

    const conn = await getConnection('after-expiry', '&refresh_token=true')
    expect(conn.status).toBe(200)
    const credentials = conn.body.credentials as JsonBody
    expect(credentials).toMatchObject({ type: 'OAUTH2', access_token: newest })
    // The response had no refresh token: the old one is kept; `raw` is what the provider sent.
    expect(typeof credentials.refresh_token).toBe('string')
    expect(credentials.raw).toMatchObject({ access_token: newest, expires_in: 3600 })
    expect(Date.parse(credentials.expires_at) - Date.now()).toBeGreaterThan(3500_000)
    expect(conn.body.errors).toEqual([])

    // Stored sealed; the expiry beside it in plain, for finding expiring tokens without decrypting.
    const row = await t.database.db.kysely
      .selectFrom('connections')
      .select(['credentials', 'credentials_expires_at', 'last_refresh_success'])
      .where('connection_id', '=', 'after-expiry')
      .executeTakeFirstOrThrow()
    expect(row.credentials).toMatch(/^enc:v1:/)
    expect(row.credentials).not.toContain(newest)
    expect(row.credentials_expires_at?.toISOString()).toBe(credentials.expires_at)
    expect(row.last_refresh_success).toBeInstanceOf(Date)
  })

  it('GET /connections/{id}: refreshes an expiring token, and force_refresh=true a fresh one', async () => {
    await importExpiring('get-me', oauth.grantRefreshToken(), -60)
    const before = oauth.counts.refresh_token
    const first = await getConnection('get-me')
    expect(first.status, JSON.stringify(first.body)).toBe(200)
    expect(first.body.credentials.access_token).toBe(oauth.issued.at(-1))
    expect(first.body.credentials).not.toHaveProperty('refresh_token')
    expect(oauth.counts.refresh_token - before).toBe(1)

    // Fresh now: read as stored.
    const second = await getConnection('get-me')
    expect(second.body.credentials.access_token).toBe(first.body.credentials.access_token)
    expect(oauth.counts.refresh_token - before).toBe(1)

    const forced = await getConnection('get-me', '&force_refresh=true')
    expect(forced.status).toBe(200)
    expect(oauth.counts.refresh_token - before).toBe(2)
    expect(forced.body.credentials.access_token).toBe(oauth.issued.at(-1))
    expect(forced.body.credentials.access_token).not.toBe(first.body.credentials.access_token)
    // Client id and secret went in the form (the provider's default)
    expect(oauth.lastClientAuth).toBe('body')

    // A key without read_credentials sees no credentials and refreshes nothing.
    const plain = await getConnection('get-me', '', readOnlyKey)
    expect(plain.status).toBe(200)
    expect(plain.body.credentials).toEqual({})
    const refused = await getConnection('get-me', '&force_refresh=true', readOnlyKey)
    expect(refused.status).toBe(403)
    expect(oauth.counts.refresh_token - before).toBe(2)
  })

  it('20 concurrent reads of an expiring connection cause one refresh', async () => {
    await importExpiring('crowd', oauth.grantRefreshToken())
    const before = oauth.counts.refresh_token
    oauth.tokenDelayMs = 200
    try {
      const answers = await Promise.all(Array.from({ length: 20 }, () => getConnection('crowd')))
      expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200))
      const tokens = new Set(answers.map((a) => a.body.credentials.access_token))
      expect(tokens).toEqual(new Set([oauth.issued.at(-1)]))
    } finally {
      oauth.tokenDelayMs = 0
    }
    expect(oauth.counts.refresh_token - before).toBe(1)
  })
})

describe('a failed refresh', () => {
  it('fails the run with a clear message, shows on the connection, and is cleared by a later refresh', async () => {
    const refreshToken = oauth.grantRefreshToken()
    oauth.revoke(refreshToken)
    await importExpiring('revoked', refreshToken)
    const { runs } = await waitForFirstRun('revoked')
    expect(runs.state).toBe('FAILED')
    expect(runs.error).toMatch(
      /^CredentialsError: Refreshing the credentials of connection 'revoked' of integration 'crm' failed: the token endpoint answered 400: .*invalid_grant/,
    )

    // Recorded on the connection, for every reader.
    const plain = await getConnection('revoked', '', readOnlyKey)
    expect(plain.status).toBe(200)
    expect(plain.body.errors).toEqual([
      {
        type: 'auth',
        message: expect.stringMatching(/^the token endpoint answered 400: .*refresh token revoked/),
        failed_at: expect.any(String),
        attempts: 1,
      },
    ])
    const list = await api(t, 'GET', '/connections?connectionId=revoked')
    expect(list.body.connections[0].errors[0]).toMatchObject({ type: 'auth', attempts: 1 })

    // Within 30 s the failure is repeated rather than the provider asked again.
    const refreshes = oauth.counts.refresh_token
    const cooling = await getConnection('revoked')
    expect(cooling.status).toBe(424)
    expect(cooling.body.error.code).toBe('invalid_credentials')
    expect(cooling.body.error.message).toMatch(/invalid_grant.*force_refresh=true retries now/)
    expect(oauth.counts.refresh_token).toBe(refreshes)

    // force_refresh asks at once: still revoked, a second attempt in a row.
    const forcedFailure = await getConnection('revoked', '&force_refresh=true')
    expect(forcedFailure.status).toBe(400)
    expect(forcedFailure.body.error).toMatchObject({ code: 'invalid_credentials' })
    expect((await getConnection('revoked', '', readOnlyKey)).body.errors[0].attempts).toBe(2)

    // The provider takes the refresh token again: the next refresh succeeds and clears the failure.
    oauth.restore(refreshToken)
    const fixed = await getConnection('revoked', '&force_refresh=true')
    expect(fixed.status, JSON.stringify(fixed.body)).toBe(200)
    expect(fixed.body.errors).toEqual([])
    expect(fixed.body.credentials.access_token).toBe(oauth.issued.at(-1))
    const run = await trigger(t, 'crm', 'revoked', 'me')
    expect(run.state, run.error ?? '').toBe('SUCCEEDED')
  })
})

it('OAUTH2_CC: the token comes from the client_credentials grant (HTTP Basic), once while it is fresh', async () => {
  const before = oauth.counts.client_credentials
  const res = await api(t, 'POST', '/connections', {
    provider_config_key: 'machine',
    connection_id: 'robot',
    credentials: {
      type: 'OAUTH2_CC',
      token: 'expired-cc-token',
      client_id: oauth.client.id,
      client_secret: oauth.client.secret,
      expires_at: inSeconds(-5),
    },
  })
  expect(res.status).toBe(201)
  const { runs } = await waitForFirstRun('robot', 'machine')
  expect(runs.state, runs.error ?? '').toBe('SUCCEEDED')
  expect(oauth.counts.client_credentials - before).toBe(1)
  expect(oauth.lastClientAuth).toBe('basic')
  const issued = oauth.issued.at(-1)!
  const me = (await records(t, 'machine', 'robot', 'Me')).get('me')!
  expect(me).toMatchObject({ accepted: issued, token: issued })

  const conn = await api(t, 'GET', '/connections/robot?provider_config_key=machine')
  expect(conn.body.credentials).toMatchObject({
    type: 'OAUTH2_CC',
    token: issued,
    client_id: oauth.client.id,
  })
  expect(oauth.counts.client_credentials - before).toBe(1)
})

it('refresh latency: 50 forced refreshes, one after another', async () => {
  await importExpiring('timed', oauth.grantRefreshToken(), -3600)
  const before = oauth.counts.refresh_token
  const ms: number[] = []
  for (let i = 0; i < 50; i++) {
    const started = performance.now()
    const res = await getConnection('timed', '&force_refresh=true')
    ms.push(performance.now() - started)
    expect(res.status).toBe(200)
  }
  expect(oauth.counts.refresh_token - before).toBe(50)
  ms.sort((a, b) => a - b)
  console.info(
    `force_refresh latency (${t.database.target.kind}): p50 ${ms[24]!.toFixed(1)} ms, p90 ${ms[44]!.toFixed(1)} ms`,
  )
})

/** The first run of the connection's sync `me`, which starts when the connection is imported. */
async function waitForFirstRun(connectionId: string, pck = 'crm') {
  const { me } = await connectQuietly(pck, connectionId)
  return { runs: me! }
}

/** connect() without importing again: the connection exists, its first run is awaited. */
async function connectQuietly(pck: string, connectionId: string) {
  const { syncId, waitForRun } = await import('../runtime/harness.ts')
  return { me: await waitForRun(t, await syncId(t, pck, connectionId, 'me')) }
}

void connect
