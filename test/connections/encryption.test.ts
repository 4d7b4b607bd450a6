import { randomBytes } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { setVariable } from '../../src/environments/variables-store.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'

/** Distinctive plaintexts, so a search of the raw rows cannot miss them. */
const SECRETS = {
  accessToken: 'tok-PLAINTEXT-4f1c',
  refreshToken: 'ref-PLAINTEXT-9b2e',
  metadata: 'meta-PLAINTEXT-77aa',
  variable: 'var-PLAINTEXT-31d0',
}
const credentials = { type: 'OAUTH2', access_token: SECRETS.accessToken, refresh_token: SECRETS.refreshToken }
const metadata = { note: SECRETS.metadata, nested: { list: [SECRETS.metadata] } }

async function seed(t: TestApp, connectionId: string) {
  const res = await t.app.inject({
    method: 'POST',
    url: '/connections',
    headers: bearer(t.keys.dev),
    payload: { provider_config_key: 'crypto', connection_id: connectionId, metadata, credentials },
  })
  expect(res.statusCode).toBe(201)
  await setVariable(t.db.kysely, t.sealer, t.envIds.dev, `VAR_${connectionId}`, SECRETS.variable)
}

async function rawRows(t: TestApp, connectionId: string) {
  const { rows: connections } = await sql<{ metadata: string; credentials: string }>`
    SELECT * FROM connections WHERE connection_id = ${connectionId}`.execute(t.db.kysely)
  const { rows: variables } = await sql<{ value: string }>`
    SELECT * FROM environment_variables WHERE name = ${`VAR_${connectionId}`}`.execute(t.db.kysely)
  expect(connections).toHaveLength(1)
  expect(variables).toHaveLength(1)
  return { connection: connections[0]!, variable: variables[0]! }
}

/** What the API answers: the plaintext, whatever is stored. */
async function expectPlaintextThroughApi(t: TestApp, connectionId: string) {
  const one = await t.app.inject({
    url: `/connections/${connectionId}?provider_config_key=crypto&refresh_token=true`,
    headers: bearer(t.keys.dev),
  })
  expect(one.statusCode).toBe(200)
  expect(one.json()).toMatchObject({ metadata, credentials: { ...credentials, raw: credentials } })
  const vars = await t.app.inject({ url: '/environment-variables', headers: bearer(t.keys.dev) })
  expect(vars.json()).toContainEqual({ name: `VAR_${connectionId}`, value: SECRETS.variable })
}

describe('with SYNCSTORE_ENCRYPTION_KEY', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startTestApp({ env: { SYNCSTORE_ENCRYPTION_KEY: randomBytes(32).toString('base64') } })
    await seed(t, 'sealed')
  })
  afterAll(() => t.close())

  it('stores credentials, metadata and variable values encrypted', async () => {
    const { connection, variable } = await rawRows(t, 'sealed')
    const raw = JSON.stringify({ connection, variable })
    for (const secret of Object.values(SECRETS)) expect(raw).not.toContain(secret)
    for (const stored of [connection.credentials, connection.metadata, variable.value]) {
      expect(stored).toMatch(/^enc:v1:[A-Za-z0-9+/]+=*$/)
    }
  })

  it('uses a fresh nonce for every value, so equal values do not look equal at rest', async () => {
    await seed(t, 'sealed-twin')
    const [a, b] = [await rawRows(t, 'sealed'), await rawRows(t, 'sealed-twin')]
    expect(a.connection.credentials).not.toBe(b.connection.credentials)
    expect(a.variable.value).not.toBe(b.variable.value)
  })

  it('still answers the plaintext through the API', () => expectPlaintextThroughApi(t, 'sealed'))

  it('never lists credentials, even for a key with list_credentials', async () => {
    const key = await t.keyWith(['environment:connections:list_credentials'])
    const res = await t.app.inject({ url: '/connections?integrationId=crypto', headers: bearer(key) })
    expect(res.statusCode).toBe(200)
    const { connections } = res.json()
    expect(connections.map((c: { connection_id: string }) => c.connection_id).sort()).toEqual([
      'sealed',
      'sealed-twin',
    ])
    for (const c of connections) expect(c).not.toHaveProperty('credentials')
    expect(res.body).not.toContain(SECRETS.accessToken)
    expect(res.body).not.toContain(SECRETS.refreshToken)
    expect(connections[0].metadata).toEqual(metadata)
  })
})

describe('without an encryption key', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startTestApp()
    await seed(t, 'plain')
  })
  afterAll(() => t.close())

  it('stores the values as plain JSON text', async () => {
    const { connection, variable } = await rawRows(t, 'plain')
    expect(JSON.parse(connection.credentials)).toEqual({ ...credentials, raw: credentials })
    expect(JSON.parse(connection.metadata)).toEqual(metadata)
    expect(JSON.parse(variable.value)).toBe(SECRETS.variable)
  })

  it('answers the same plaintext through the API', () => expectPlaintextThroughApi(t, 'plain'))

  it('never lists credentials', async () => {
    const res = await t.app.inject({ url: '/connections', headers: bearer(t.keys.dev) })
    expect(res.json().connections).toHaveLength(1)
    expect(res.json().connections[0]).not.toHaveProperty('credentials')
    expect(res.body).not.toContain(SECRETS.accessToken)
  })
})
