import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli, type ServerProcess, startServer } from '../helpers/process.ts'
import { type JsonBody, waitFor } from '../helpers/server.ts'
import { expectOneLineError } from '../helpers/cli-output.ts'
import { authWebhook, type NangoStandIn, postWebhook, startNangoStandIn } from './nango-api.ts'

/**
 * A syncstore environment paired with a Nango (the stand-in of its API): `syncstore nango pair` in
 * a process of its own, a separately started `syncstore serve` receiving Nango's signed auth
 * webhooks and reconciling every second, checked over the HTTP API as a user would.
 */

const KEY = 'c2b5a7e1-3f4d-4a6b-8c9d-0e1f2a3b4c5d'
const NANGO_KEY = 'nango-secret-key-of-dev'
const WEBHOOK_SECRET = 'nango-webhook-signing-secret'

let database: ProcessDatabase
let integrationsDir: string
let server: ServerProcess
let nango: NangoStandIn

const SYNC = `
  import { createSync } from 'syncstore'
  export default createSync({
    description: 'items', frequency: 'every hour', models: { Item: { type: 'object' } },
    async exec(nango) {
      const metadata = await nango.getMetadata()
      await nango.batchSave([{ id: nango.connectionId, team: metadata.team ?? null }], 'Item')
    },
  })`

beforeAll(async () => {
  nango = await startNangoStandIn(NANGO_KEY)
  database = await createProcessDatabase()
  integrationsDir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-nango-'))
  await writeFile(path.join(integrationsDir, 'package.json'), '{"type":"module"}\n')
  await mkdir(path.join(integrationsDir, 'acme/syncs'), { recursive: true })
  await writeFile(path.join(integrationsDir, 'acme/syncs/items.ts'), SYNC)
  server = await startServer({
    ...database.env,
    SYNCSTORE_INTEGRATIONS_DIR: integrationsDir,
    NANGO_SECRET_KEY_DEV: KEY,
    SYNCSTORE_NANGO_RECONCILE_MS: '1000',
    SYNCSTORE_POLL_INTERVAL_MS: '50',
  })
})
afterAll(async () => {
  await killAll()
  await nango?.close()
  await database?.destroy()
  if (integrationsDir) await rm(integrationsDir, { recursive: true, force: true })
})

// The same configuration as the server, as in a deployment: the pairing's next reconcile is due a
// reconcile interval after the first.
const cli = (...args: string[]) => runCli(args, { ...database.env, SYNCSTORE_NANGO_RECONCILE_MS: '1000' })

async function api(pathAndQuery: string): Promise<{ status: number; body: JsonBody }> {
  const res = await fetch(`${server.url}${pathAndQuery}`, { headers: { authorization: `Bearer ${KEY}` } })
  return { status: res.status, body: await res.json() }
}

const connection = (pck: string, id: string) =>
  api(`/connections/${id}?provider_config_key=${pck}`).then((r) => (r.status === 200 ? r.body : undefined))

/** GET /records names the connection in headers, as Nango's does. */
async function records(id: string): Promise<JsonBody[]> {
  const res = await fetch(`${server.url}/records?model=Item`, {
    headers: { authorization: `Bearer ${KEY}`, 'connection-id': id, 'provider-config-key': 'acme' },
  })
  return ((await res.json()) as JsonBody).records ?? []
}

const syncStatus = async (id: string) =>
  (await api(`/sync/status?provider_config_key=acme&syncs=*&connection_id=${id}`)).body.syncs as JsonBody[]

const webhookUrl = (env = 'dev') => `${server.url}/webhooks/nango/${env}`

describe('syncstore nango', { timeout: 240_000 }, () => {
  it('refuses to pair with a Nango that is down or refuses the key, in one line, saving nothing', async () => {
    // A port nothing listens on: the stand-in down.
    const down = await startNangoStandIn(NANGO_KEY)
    await down.close()
    expectOneLineError(
      await cli('nango', 'pair', '--url', down.url, '--secret-key', NANGO_KEY),
      1,
      new RegExp(`cannot pair: Nango is unreachable at ${down.url} \\(ECONNREFUSED\\)`),
    )
    expectOneLineError(
      await cli('nango', 'pair', '--url', nango.url, '--secret-key', 'wrong'),
      1,
      /cannot pair: Nango refused the secret key \(401/,
    )
    const status = await cli('nango', 'status')
    expect(status.stderr).toMatch(/No environment is paired with Nango/)
  })

  it('pairs, and the first reconcile takes the connections Nango already has', async () => {
    nango.put({
      connection_id: 'pre-1',
      provider_config_key: 'acme',
      provider: 'acme-api',
      metadata: { team: 'a' },
    })
    const paired = await cli(
      'nango',
      'pair',
      '--url',
      nango.url,
      '--secret-key',
      NANGO_KEY,
      '--webhook-secret',
      WEBHOOK_SECRET,
    )
    expect(paired.code, paired.stderr).toBe(0)
    expect(paired.stderr).toMatch(/First reconcile: 1 connection\(s\) in Nango, 1 added/)
    expect(paired.stderr).not.toContain(NANGO_KEY)
    expect(await connection('acme', 'pre-1')).toMatchObject({ metadata: { team: 'a' } })
    // Its sync runs here, with the metadata read from Nango.
    const saved = await waitFor('the first run of pre-1', async () => (await records('pre-1'))?.[0])
    expect(saved).toMatchObject({ id: 'pre-1', team: 'a' })

    const status = await cli('nango', 'status', '--env', 'dev')
    expect(status.stdout).toContain(`dev: paired with ${nango.url}`)
    expect(status.stdout).toMatch(/last reconcile: \S+ succeeded \(listed 1, added [01], deleted 0, kept 0\)/)
  })

  it('a creation webhook creates the connection with its syncs, committed before the 200', async () => {
    const c = { connection_id: 'hook-1', provider_config_key: 'acme', provider: 'acme-api' }
    nango.put({ ...c, metadata: { team: 'b' }, connection_config: { subdomain: 'x' } })
    const res = await postWebhook(webhookUrl(), authWebhook('creation', c), WEBHOOK_SECRET)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ handled: 'auth creation: created acme/hook-1' })
    // No waiting: the 200 came after the commit.
    const stored = await connection('acme', 'hook-1')
    expect(stored).toMatchObject({ metadata: { team: 'b' }, connection_config: { subdomain: 'x' } })
    expect((await syncStatus('hook-1')).map((s) => s.name)).toEqual(['items'])
    const saved = await waitFor('the first run of hook-1', async () => (await records('hook-1'))?.[0])
    expect(saved).toMatchObject({ id: 'hook-1', team: 'b' })

    const status = await cli('nango', 'status')
    expect(status.stdout).toMatch(/last webhook: \S+ auth creation: created acme\/hook-1/)
  })

  it('an override updates the metadata; a creation for an integration without syncs still creates it', async () => {
    const c = { connection_id: 'hook-1', provider_config_key: 'acme', provider: 'acme-api' }
    nango.put({ ...c, metadata: { team: 'c' } })
    const res = await postWebhook(webhookUrl(), authWebhook('override', c), WEBHOOK_SECRET)
    expect(await res.json()).toEqual({ handled: 'auth override: updated acme/hook-1' })
    expect(await connection('acme', 'hook-1')).toMatchObject({ metadata: { team: 'c' } })

    const other = { connection_id: 'o-1', provider_config_key: 'crm', provider: 'hubspot' }
    nango.put(other)
    const created = await postWebhook(webhookUrl(), authWebhook('creation', other), WEBHOOK_SECRET)
    expect(created.status).toBe(200)
    expect(await connection('crm', 'o-1')).toMatchObject({ connection_id: 'o-1', provider: 'hubspot' })
  })

  it('refuses unsigned, forged and wrongly keyed webhooks with 401 and changes nothing', async () => {
    // Not in Nango either: the reconcile never adds it, so only a processed webhook would ask for it.
    const c = { connection_id: 'forged-1', provider_config_key: 'acme', provider: 'acme-api' }
    const body = authWebhook('creation', c)
    for (const signWith of [null, 'not-the-secret', NANGO_KEY]) {
      const res = await postWebhook(webhookUrl(), body, signWith)
      expect(res.status).toBe(401)
      expect(((await res.json()) as JsonBody).error.code).toBe('invalid_signature')
    }
    // Signed over other bytes than those sent.
    const res = await fetch(webhookUrl(), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-nango-hmac-sha256': (await import('node:crypto'))
          .createHmac('sha256', WEBHOOK_SECRET)
          .update(JSON.stringify(body))
          .digest('hex'),
      },
      body: JSON.stringify(body, null, 1),
    })
    expect(res.status).toBe(401)
    expect(await connection('acme', 'forged-1')).toBeUndefined()
    expect(nango.requests.filter((r) => r.includes('forged-1'))).toEqual([])
    expect((await cli('nango', 'status')).stdout).toMatch(/last webhook: \S+ auth creation: created crm\/o-1/)

    // prod is not paired; nope does not exist: 404 whatever the signature.
    for (const env of ['prod', 'nope']) {
      const r = await postWebhook(webhookUrl(env), body, WEBHOOK_SECRET)
      expect(r.status).toBe(404)
      expect(((await r.json()) as JsonBody).error.code).toBe('not_paired')
    }
  })

  it('records a failed refresh on the connection, and ignores a failed creation and other webhooks', async () => {
    const c = { connection_id: 'hook-1', provider_config_key: 'acme', provider: 'acme-api' }
    const refresh = await postWebhook(webhookUrl(), authWebhook('refresh', c, false), WEBHOOK_SECRET)
    expect(await refresh.json()).toEqual({ handled: 'auth refresh: refresh failure recorded on acme/hook-1' })
    // (checked in the database at the end)

    const failed = { connection_id: 'never-1', provider_config_key: 'acme', provider: 'acme-api' }
    const ignored = await postWebhook(webhookUrl(), authWebhook('creation', failed, false), WEBHOOK_SECRET)
    expect(await ignored.json()).toEqual({ handled: 'ignored auth creation (success: false)' })
    const sync = await postWebhook(webhookUrl(), { type: 'sync', from: 'nango' }, WEBHOOK_SECRET)
    expect(await sync.json()).toEqual({ handled: 'ignored sync' })
    expect(await connection('acme', 'never-1')).toBeUndefined()
  })

  it('the reconcile adds a connection whose webhook was lost', async () => {
    nango.put({
      connection_id: 'lost-1',
      provider_config_key: 'acme',
      provider: 'acme-api',
      metadata: { team: 'd' },
    })
    await waitFor('lost-1 reconciled', () => connection('acme', 'lost-1'), { timeoutMs: 10_000 })
    const saved = await waitFor('the first run of lost-1', async () => (await records('lost-1'))?.[0])
    expect(saved).toMatchObject({ id: 'lost-1', team: 'd' })
  })

  it('a listing that fails part-way deletes nothing', async () => {
    // Five connections in pages of two: page 1 fails, after page 0 was read.
    nango.failPage = 1
    nango.remove('acme', 'lost-1')
    const before = nango.requests.length
    await waitFor('two failed reconciles', () =>
      nango.requests.slice(before).filter((r) => r.includes('page=1')).length >= 2 ? true : undefined,
    )
    const status = await cli('nango', 'status', '--env', 'dev')
    expect(status.stdout).toMatch(
      /last reconcile: \S+ failed .*Nango answered 500 to GET \/connections \(page 1\)/,
    )
    expect((await syncStatus('lost-1'))[0].status).not.toBe('STOPPED')
    nango.failPage = null
  })

  it('a connection deleted in Nango stops its syncs, leaves the connections list and keeps its records', async () => {
    await waitFor(
      'lost-1 stopped',
      async () => ((await syncStatus('lost-1'))[0].status === 'STOPPED' ? true : undefined),
      {
        timeoutMs: 10_000,
      },
    )
    expect(await records('lost-1')).toHaveLength(1)
    // Gone from the connections list; its records page as before.
    const listed = await api('/connections')
    expect(listed.status).toBe(200)
    const ids = (listed.body.connections as { connection_id: string }[]).map((c) => c.connection_id)
    expect(ids).not.toContain('lost-1')
    expect(ids.length).toBeGreaterThan(0)
    const status = await cli('nango', 'status', '--env', 'dev')
    expect(status.stdout).toMatch(/last reconcile: \S+ succeeded \(listed 3, added 0, deleted \d, kept 0\)/)
  })

  it('measures the time from a creation webhook to the first run’s records (p50 of 10)', async () => {
    const times: number[] = []
    for (let i = 0; i < 10; i++) {
      const c = { connection_id: `timed-${i}`, provider_config_key: 'acme', provider: 'acme-api' }
      nango.put(c)
      const started = performance.now()
      const res = await postWebhook(webhookUrl(), authWebhook('creation', c), WEBHOOK_SECRET)
      expect(res.status).toBe(200)
      await waitFor(`records of ${c.connection_id}`, async () => (await records(c.connection_id))?.[0], {
        intervalMs: 10,
      })
      times.push(performance.now() - started)
    }
    times.sort((a, b) => a - b)
    const p50 = (times[4]! + times[5]!) / 2
    console.log(
      `nango creation webhook -> first run's records: p50 ${p50.toFixed(0)} ms, ` +
        `min ${times[0]!.toFixed(0)} ms, max ${times[9]!.toFixed(0)} ms (${database.kind})`,
    )
    expect(times).toHaveLength(10)
  })

  it('unpairs: webhooks are then refused with 404', async () => {
    const unpaired = await cli('nango', 'unpair', '--env', 'dev')
    expect(unpaired.code, unpaired.stderr).toBe(0)
    const c = { connection_id: 'late-1', provider_config_key: 'acme', provider: 'acme-api' }
    expect((await postWebhook(webhookUrl(), authWebhook('creation', c), WEBHOOK_SECRET)).status).toBe(404)
    expectOneLineError(await cli('nango', 'unpair', '--env', 'dev'), 1, /not paired/)
  })

  it('after the server stops: the deleted connection’s schedule is DELETED and its records are kept', async () => {
    server.kill('SIGTERM')
    await server.waitForExit()
    await database.withDb(async (db) => {
      const rows = await db.kysely
        .selectFrom('schedules as s')
        .innerJoin('connections as c', 'c.id', 's.connection_pk')
        .innerJoin('datasets as d', 'd.connection_pk', 'c.id')
        .select(['s.state', 'c.deleted_upstream_at', 'd.record_count'])
        .where('c.connection_id', '=', 'lost-1')
        .execute()
      expect(rows).toHaveLength(1)
      expect(rows[0]).toMatchObject({ state: 'DELETED' })
      expect(Number(rows[0]!.record_count)).toBe(1)
      expect(rows[0]!.deleted_upstream_at).toBeInstanceOf(Date)
      const refreshed = await db.kysely
        .selectFrom('connections')
        .select(['refresh_error', 'refresh_attempts'])
        .where('connection_id', '=', 'hook-1')
        .executeTakeFirstOrThrow()
      expect(refreshed).toEqual({ refresh_error: 'invalid_grant', refresh_attempts: 1 })
    })
  })
})
