import { Nango } from '@nangohq/node'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  api,
  startTestServer,
  syncStatusOf,
  type SyncRef,
  type TestServer,
  waitForStatus,
  withNewRuns,
} from '../helpers/server.ts'

/** PUT /sync/update-connection-frequency and the variant routes, through @nangohq/node and plain HTTP. */

let t: TestServer
let nango: Nango
beforeAll(async () => {
  t = await startTestServer({
    // Saves two records named after its variant; counts its runs in the checkpoint.
    'crm/syncs/contacts.ts': `
      import { createSync } from 'syncstore'
      export default createSync({
        description: 'Contacts', frequency: 'every hour',
        models: { Contact: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
        async exec(nango) {
          const n = ((await nango.getCheckpoint())?.n ?? 0) + 1
          await nango.batchSave([{ id: nango.variant + '-a' }, { id: nango.variant + '-b' }], 'Contact')
          await nango.saveCheckpoint({ n })
        },
      })`,
  })
  nango = new Nango({ host: t.url, secretKey: t.key })
  const created = await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: 'c1' })
  expect(created.status).toBe(201)
  await waitForStatus(t, contacts('c1'), (s) => s.latestExecutionStatus === 'SUCCESS')
})
afterAll(() => t?.close())

const contacts = (connection: string, variant = 'base'): SyncRef => ({
  pck: 'crm',
  connectionId: connection,
  name: 'contacts',
  variant,
})
const db = () => t.database.db.kysely
const ids = async (connection: string, variant?: string) =>
  (
    await nango.listRecords({
      providerConfigKey: 'crm',
      connectionId: connection,
      model: 'Contact',
      ...(variant ? { variant } : {}),
    })
  ).records.map((r) => r.id)

it('updateSyncConnectionFrequency overrides the frequency, and null reverts to the definition’s', async () => {
  const frequencyMs = async () => {
    const status = await syncStatusOf(t, 'crm', 'c1', 'contacts')
    const row = await db()
      .selectFrom('schedules')
      .select('frequency_ms')
      .where('sync_id', '=', status!.id)
      .executeTakeFirstOrThrow()
    return { frequency: status!.frequency, ms: Number(row.frequency_ms) }
  }
  expect(await nango.updateSyncConnectionFrequency('crm', 'contacts', 'c1', 'every 2 hours')).toEqual({
    frequency: '2 hours',
  })
  expect(await frequencyMs()).toEqual({ frequency: 'every 2 hours', ms: 7_200_000 })
  const half = await api(t, 'PUT', '/sync/update-connection-frequency', {
    sync_name: 'contacts',
    provider_config_key: 'crm',
    connection_id: 'c1',
    frequency: 'every half hour',
  })
  expect(half).toEqual({ status: 200, body: { frequency: '30m' } })
  expect(await nango.updateSyncConnectionFrequency('crm', 'contacts', 'c1', null)).toEqual({
    frequency: 'every hour',
  })
  expect(await frequencyMs()).toEqual({ frequency: 'every hour', ms: 3_600_000 })
})

describe('variants', () => {
  it('createSyncVariant makes a sync of its own, with its own records, checkpoint and schedule', async () => {
    const created = await nango.createSyncVariant({
      provider_config_key: 'crm',
      connection_id: 'c1',
      name: 'contacts',
      variant: 'v1',
    })
    expect(created).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name: 'contacts', variant: 'v1' })
    const status = await waitForStatus(
      t,
      contacts('c1', 'v1'),
      (s) => s.status === 'SUCCESS' && s.latestExecutionStatus === 'SUCCESS',
    )
    expect(status).toMatchObject({
      id: created.id,
      variant: 'v1',
      recordCount: { Contact: 2 },
      checkpoint: { n: 1 },
      frequency: 'every hour',
    })
    expect(await ids('c1', 'v1')).toEqual(['v1-a', 'v1-b'])
    expect(await ids('c1')).toEqual(['base-a', 'base-b'])
    const { syncs } = await nango.syncStatus('crm', [{ name: 'contacts', variant: 'v1' }], 'c1')
    expect(syncs.map((s) => s.id)).toEqual([created.id])

    // Emptying the variant's cache leaves the base variant's records alone.
    await withNewRuns(t, [contacts('c1', 'v1')], () =>
      nango.triggerSync('crm', [{ name: 'contacts', variant: 'v1' }], 'c1', {
        reset: true,
        emptyCache: true,
      }),
    )
    expect((await syncStatusOf(t, 'crm', 'c1', 'contacts', 'v1'))!.latestResult).toEqual({
      Contact: { added: 2, updated: 0, deleted: 0 },
    })
    expect((await syncStatusOf(t, 'crm', 'c1', 'contacts'))!.recordCount).toEqual({ Contact: 2 })
  })

  it('deleteSyncVariant removes the variant’s records, checkpoint and schedule', async () => {
    const id = (await syncStatusOf(t, 'crm', 'c1', 'contacts', 'v1'))!.id
    expect(
      await nango.deleteSyncVariant({
        provider_config_key: 'crm',
        connection_id: 'c1',
        name: 'contacts',
        variant: 'v1',
      }),
    ).toEqual({ success: true })
    expect(await syncStatusOf(t, 'crm', 'c1', 'contacts', 'v1')).toBeUndefined()
    expect(await ids('c1', 'v1')).toEqual([])
    expect(await ids('c1')).toEqual(['base-a', 'base-b'])
    for (const table of ['syncs', 'schedules', 'checkpoints', 'runs'] as const) {
      const column = table === 'syncs' ? 'id' : 'sync_id'
      const { rows } = await sql<{
        n: number
      }>`SELECT count(*)::int AS n FROM ${sql.table(table)} WHERE ${sql.ref(column)} = ${id}`.execute(db())
      expect({ table, n: rows[0]!.n }).toEqual({ table, n: 0 })
    }
    const { rows } = await sql<{
      n: number
    }>`SELECT count(*)::int AS n FROM datasets WHERE variant = 'v1'`.execute(db())
    expect(rows[0]!.n).toBe(0)
  })
})
