import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  api,
  runsOf,
  startTestServer,
  syncStatusOf,
  type TestServer,
  type SyncRef,
  waitForStatus,
  withNewRuns,
} from '../helpers/server.ts'

/** The /sync routes through @nangohq/node and plain HTTP, on the whole server: every state change shows in status. */

let t: TestServer
let nango: Nango
let gate: string
beforeAll(async () => {
  gate = await mkdtemp(path.join(os.tmpdir(), 'syncstore-gate-'))
  const hold = JSON.stringify(path.join(gate, 'hold'))
  t = await startTestServer({
    // Waits while the "hold" file exists; saves two records named after its variant, counts its runs in the checkpoint.
    'crm/syncs/contacts.ts': `
      import { existsSync } from 'node:fs'
      import { createSync } from 'syncstore'
      export default createSync({
        description: 'Contacts', frequency: 'every hour',
        models: { Contact: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
        async exec(nango) {
          const until = Date.now() + 15000
          while (existsSync(${hold}) && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
          const n = ((await nango.getCheckpoint())?.n ?? 0) + 1
          await nango.batchSave([{ id: nango.variant + '-a' }, { id: nango.variant + '-b' }], 'Contact')
          await nango.saveCheckpoint({ n })
        },
      })`,
    'crm/syncs/manual.ts': `
      export default {
        description: 'Started by hand', frequency: 'every day', autoStart: false,
        models: { Item: { type: 'object' } },
        async exec(nango) { await nango.batchSave([{ id: 'i1' }], 'Item') },
      }`,
    'other/integration.json': JSON.stringify({ display_name: 'Other API' }),
    'other/syncs/things.ts': `export default { description: 'Things', frequency: '2h', models: { Thing: {} }, async exec() {} }`,
  })
  nango = new Nango({ host: t.url, secretKey: t.key })
})
afterAll(async () => {
  await t?.close()
  await rm(gate, { recursive: true, force: true })
})

type Sync = SyncRef
const contacts = (connection: string, variant = 'base'): Sync => ({
  pck: 'crm',
  connectionId: connection,
  name: 'contacts',
  variant,
})
const manual = (connection: string): Sync => ({ pck: 'crm', connectionId: connection, name: 'manual' })
const db = () => t.database.db.kysely

const createConnection = async (connection: string) =>
  expect(
    (await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: connection })).status,
  ).toBe(201)
const ids = async (connection: string, variant?: string) =>
  (
    await nango.listRecords({
      providerConfigKey: 'crm',
      connectionId: connection,
      model: 'Contact',
      ...(variant ? { variant } : {}),
    })
  ).records.map((r) => r.id)

it('GET /integrations lists the integrations and their syncs', async () => {
  const raw = await api(t, 'GET', '/integrations')
  expect(raw.status).toBe(200)
  const { configs } = await nango.listIntegrations()
  expect(configs).toEqual(raw.body.data)
  const crm = raw.body.data.find((i: { unique_key: string }) => i.unique_key === 'crm')
  expect(crm.syncs).toEqual([
    {
      name: 'contacts',
      description: 'Contacts',
      frequency: 'every hour',
      models: ['Contact'],
      auto_start: true,
      sync_type: 'full',
      track_deletes: false,
    },
    {
      name: 'manual',
      description: 'Started by hand',
      frequency: 'every day',
      models: ['Item'],
      auto_start: false,
      sync_type: 'full',
      track_deletes: false,
    },
  ])
  expect(raw.body.data.find((i: { unique_key: string }) => i.unique_key === 'other')).toMatchObject({
    display_name: 'Other API',
    syncs: [{ name: 'things', frequency: '2h', models: ['Thing'] }],
  })
})

it('a new connection gets a base sync per sync of its integration, with all of Nango’s status fields', async () => {
  await createConnection('c1')
  await waitForStatus(
    t,
    contacts('c1'),
    (s) => s.status === 'SUCCESS' && s.latestExecutionStatus === 'SUCCESS',
  )
  const { syncs } = await nango.syncStatus('crm', '*', 'c1')
  expect(syncs.map((s) => [s.name, (s as unknown as { variant: string }).variant])).toEqual([
    ['contacts', 'base'],
    ['manual', 'base'],
  ])
  const [ran, paused] = syncs as unknown as Record<string, unknown>[]
  expect(ran).toEqual({
    id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    connection_id: 'c1',
    type: 'INITIAL',
    finishedAt: expect.any(String),
    nextScheduledSyncAt: expect.any(String),
    name: 'contacts',
    variant: 'base',
    status: 'SUCCESS',
    frequency: 'every hour',
    latestResult: { Contact: { added: 2, updated: 0, deleted: 0 } },
    latestExecutionStatus: 'SUCCESS',
    recordCount: { Contact: 2 },
    checkpoint: { n: 1 },
  })
  const next = Date.parse(ran!.nextScheduledSyncAt as string)
  expect(next).toBeGreaterThan(Date.now())
  expect(next).toBeLessThanOrEqual(Date.now() + 3_600_000)
  // autoStart: false -> created paused, never run.
  expect(paused).toEqual({
    id: expect.any(String),
    connection_id: 'c1',
    type: 'INITIAL',
    nextScheduledSyncAt: null,
    name: 'manual',
    variant: 'base',
    status: 'PAUSED',
    frequency: 'every day',
    recordCount: { Item: 0 },
    checkpoint: null,
  })
  expect(await ids('c1')).toEqual(['base-a', 'base-b'])
})

describe('triggerSync', () => {
  it('runs the sync now: RUNNING, then SUCCESS, with its records', async () => {
    await writeFile(path.join(gate, 'hold'), '')
    await nango.triggerSync('crm', ['contacts'], 'c1')
    const running = await waitForStatus(t, contacts('c1'), (s) => s.status === 'RUNNING')
    expect(running).toMatchObject({ latestExecutionStatus: 'RUNNING' })
    expect(running).not.toHaveProperty('finishedAt')
    await rm(path.join(gate, 'hold'))
    const done = await waitForStatus(t, contacts('c1'), (s) => s.status === 'SUCCESS')
    expect(done).toMatchObject({
      latestResult: { Contact: { added: 0, updated: 0, deleted: 0 } },
      checkpoint: { n: 2 },
    })
    expect(await ids('c1')).toEqual(['base-a', 'base-b'])
  })

  it('accepts {name, variant} objects, [] for every sync, and no connection for every connection', async () => {
    await withNewRuns(t, [contacts('c1')], () =>
      nango.triggerSync('crm', [{ name: 'contacts', variant: 'base' }], 'c1'),
    )
    await withNewRuns(t, [contacts('c1')], () =>
      api(t, 'POST', '/sync/trigger', {
        provider_config_key: 'crm',
        connection_id: 'c1',
        syncs: ['contacts::base'],
      }),
    )
    // [] = all syncs of the connection: the paused one runs once and stays paused.
    await withNewRuns(t, [contacts('c1'), manual('c1')], () => nango.triggerSync('crm', [], 'c1'))
    expect(await syncStatusOf(t, 'crm', 'c1', 'manual')).toMatchObject({
      status: 'PAUSED',
      nextScheduledSyncAt: null,
      recordCount: { Item: 1 },
    })
    await createConnection('c2')
    await waitForStatus(
      t,
      contacts('c2'),
      (s) => s.status === 'SUCCESS' && s.latestExecutionStatus === 'SUCCESS',
    )
    await withNewRuns(t, [contacts('c1'), contacts('c2')], () => nango.triggerSync('crm', ['contacts']))
  })

  it('maps opts and the legacy fourth argument to reset / emptyCache as Nango does', async () => {
    type Opts = { reset?: boolean; emptyCache?: boolean } | boolean | 'full_refresh_and_clear_cache'
    const cases: [Opts, boolean, boolean][] = [
      [{ reset: true }, true, false],
      [{ reset: true, emptyCache: true }, true, true],
      [{ emptyCache: true }, false, false], // emptyCache alone is ignored
      [true, true, false], // sync_mode full_refresh
      [false, false, false], // sync_mode incremental
      ['full_refresh_and_clear_cache', true, true],
    ]
    // Typed as two overloads (opts / legacy sync mode): one call site takes both.
    const trigger = nango.triggerSync.bind(nango) as (...args: unknown[]) => Promise<void>
    for (const [opts, reset, emptyCache] of cases) {
      const [run] = await withNewRuns(t, [contacts('c1')], () => trigger('crm', ['contacts'], 'c1', opts))
      expect({ opts, reset: run!.reset, emptyCache: run!.empty_cache }).toEqual({ opts, reset, emptyCache })
      const status = await syncStatusOf(t, 'crm', 'c1', 'contacts')
      // A reset run starts from no checkpoint: it counts from 1 again.
      if (reset) expect(status!.checkpoint).toEqual({ n: 1 })
      else expect((status!.checkpoint as { n: number }).n).toBeGreaterThan(1)
    }
    expect(await ids('c1')).toEqual(['base-a', 'base-b'])
  })
})

describe('pause and start', () => {
  it('pauseSync: PAUSED, and a due slot creates no run', async () => {
    await nango.pauseSync('crm', ['contacts'], 'c1')
    const status = await syncStatusOf(t, 'crm', 'c1', 'contacts')
    expect(status).toMatchObject({ status: 'PAUSED', nextScheduledSyncAt: null })
    const before = (await runsOf(t, contacts('c1'))).length
    await sql`UPDATE schedules SET next_due_at = now() - interval '1 hour' WHERE sync_id = ${status!.id}`.execute(
      db(),
    )
    // The server's dispatcher takes due schedules oldest first: once c2's slot, due after c1's,
    // has run, a claim has passed c1's.
    const c2 = (await syncStatusOf(t, 'crm', 'c2', 'contacts'))!.id
    await withNewRuns(t, [contacts('c2')], () =>
      sql`UPDATE schedules SET next_due_at = now() WHERE sync_id = ${c2}`.execute(db()),
    )
    expect(await runsOf(t, contacts('c1'))).toHaveLength(before)
  })

  it('a trigger on a paused sync runs it once and it stays paused', async () => {
    await withNewRuns(t, [contacts('c1')], () => nango.triggerSync('crm', ['contacts'], 'c1'))
    expect(await syncStatusOf(t, 'crm', 'c1', 'contacts')).toMatchObject({
      status: 'PAUSED',
      nextScheduledSyncAt: null,
    })
  })

  it('startSync on a paused sync runs it at once, then on its frequency; on a started sync it does nothing', async () => {
    const [run] = await withNewRuns(t, [contacts('c1')], () => nango.startSync('crm', ['contacts'], 'c1'))
    expect(run!.reason).toBe('start')
    const status = await syncStatusOf(t, 'crm', 'c1', 'contacts')
    expect(status).toMatchObject({ status: 'SUCCESS' })
    const next = Date.parse(status!.nextScheduledSyncAt!)
    expect(next).toBeGreaterThan(Date.now())
    expect(next).toBeLessThanOrEqual(Date.now() + 3_600_000)

    const before = await runsOf(t, contacts('c1'))
    await nango.startSync('crm', ['contacts'], 'c1')
    // A requested run would be in the table before the response: there is none.
    expect(await runsOf(t, contacts('c1'))).toEqual(before)
    expect(await syncStatusOf(t, 'crm', 'c1', 'contacts')).toMatchObject({
      nextScheduledSyncAt: status!.nextScheduledSyncAt,
    })
  })
})
