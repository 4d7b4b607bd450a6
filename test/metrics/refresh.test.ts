import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { type OAuthServer, startOAuthServer, writeProvidersFile } from '../credentials/oauth-server.ts'
import { api, startTestServer, type TestServer } from '../helpers/server.ts'
import { parsePrometheus } from './prometheus.ts'

/**
 * syncstore_oauth_refreshes_total counts the token requests a refresh makes, by outcome: a local
 * OAuth2 server (test/credentials/oauth-server.ts) refreshes one connection and refuses a revoked one.
 */

let oauth: OAuthServer
let dir: string
let t: TestServer

beforeAll(async () => {
  oauth = await startOAuthServer()
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-metrics-refresh-'))
  t = await startTestServer(
    { 'crm/integration.json': JSON.stringify({ provider: 'test-oauth' }) },
    { SYNCSTORE_PROVIDERS_FILE: await writeProvidersFile(dir, oauth), SYNCSTORE_METRICS_PORT: '0' },
  )
  const res = await api(t, 'PATCH', '/integrations/crm', {
    credentials: { type: 'OAUTH2', client_id: oauth.client.id, client_secret: oauth.client.secret },
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
})
afterAll(async () => {
  await t?.close()
  await oauth?.close()
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function refreshes(): Promise<Record<string, number>> {
  const text = await (await fetch(`${t.server.metricsUrl}/metrics`)).text()
  const family = parsePrometheus(text).get('syncstore_oauth_refreshes_total')!
  expect(family.type).toBe('counter')
  return Object.fromEntries(family.samples.map((s) => [s.labels.outcome!, s.value]))
}

/** An OAUTH2 connection whose access token has expired. */
async function importExpired(connectionId: string, refreshToken: string) {
  const res = await api(t, 'POST', '/connections', {
    provider_config_key: 'crm',
    connection_id: connectionId,
    credentials: {
      type: 'OAUTH2',
      access_token: oauth.grantAccessToken(-1),
      refresh_token: refreshToken,
      expires_at: new Date(Date.now() - 1000).toISOString(),
    },
  })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
}

it('counts a refresh that succeeded and one the provider refused, once each', async () => {
  expect(await refreshes()).toEqual({ success: 0, failure: 0 })

  await importExpired('fresh', oauth.grantRefreshToken())
  const fresh = await api(t, 'GET', '/connections/fresh?provider_config_key=crm')
  expect(fresh.status, JSON.stringify(fresh.body)).toBe(200)
  expect(oauth.counts.refresh_token).toBe(1)
  expect(await refreshes()).toEqual({ success: 1, failure: 0 })

  const revoked = oauth.grantRefreshToken()
  oauth.revoke(revoked)
  await importExpired('revoked', revoked)
  expect((await api(t, 'GET', '/connections/revoked?provider_config_key=crm')).status).toBe(400)
  expect(oauth.counts.refresh_token).toBe(2)
  // Within the cooldown the failure is repeated, not asked again: nothing more is counted.
  expect((await api(t, 'GET', '/connections/revoked?provider_config_key=crm')).status).toBe(424)
  expect(oauth.counts.refresh_token).toBe(2)
  expect(await refreshes()).toEqual({ success: 1, failure: 1 })
})
