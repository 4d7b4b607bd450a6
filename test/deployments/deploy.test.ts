import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { importConnection } from '../../src/connections/service.ts'
import { createSealer } from '../../src/crypto.ts'
import { DeployError, deployFolders } from '../../src/deployments/deploy.ts'
import { readFolders } from '../../src/deployments/folder.ts'
import type { LoadResult } from '../../src/deployments/load.worker.ts'
import { knownBundles, readDefinitions } from '../../src/deployments/store.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'

/**
 * A deployment in one transaction: what it adds, changes and removes, what it records, what a
 * refused file keeps, and the provisioning it implies for connections old and new.
 */

const sealer = createSealer(null)
let database: TestDatabase
let dir: string
let dev: number
let prod: number

beforeAll(async () => {
  database = await createTestDatabase()
  dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-deploy-'))
  await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n')
  dev = (await findEnvironment(database.db.kysely, 'dev'))!.id
  prod = (await findEnvironment(database.db.kysely, 'prod'))!.id
})
afterAll(async () => {
  await database.destroy()
  await rm(dir, { recursive: true, force: true })
})

const sync = (frequency = 'every hour', extra = '') => `import { createSync } from 'syncstore'
export default createSync({
  description: 'A sync',
  frequency: '${frequency}',
  models: { Item: { type: 'object', properties: { id: { type: 'string' } } } },
  exec: async (nango) => { ${extra} await nango.batchSave([{ id: 'a' }], 'Item') },
})
`

async function write(files: Record<string, string | null>): Promise<void> {
  for (const [file, source] of Object.entries(files)) {
    const full = path.join(dir, file)
    if (source === null) {
      await rm(full, { force: true })
      continue
    }
    await mkdir(path.dirname(full), { recursive: true })
    await writeFile(full, source)
  }
}

const deploy = (options: Partial<Parameters<typeof deployFolders>[2]> = {}) =>
  deployFolders(database.db.kysely, [dir], { source: dir, deployedBy: 'test', ...options })

async function schedulesOf(connectionId: string) {
  return database.db.kysely
    .selectFrom('schedules as x')
    .innerJoin('syncs as s', 's.id', 'x.sync_id')
    .innerJoin('connections as c', 'c.id', 's.connection_pk')
    .select(['s.name', 'x.state', 'x.frequency_ms', 'c.environment_id'])
    .where('c.connection_id', '=', connectionId)
    .orderBy('s.name')
    .execute()
}

const hashes = async (environmentId: number) =>
  Object.fromEntries(
    [...(await readDefinitions(database.db.kysely, environmentId)).integrations.values()].flatMap((i) =>
      i.syncs.map((s) => [`${i.key}/${s.name}`, s.bundleHash]),
    ),
  )

describe('deployFolders', () => {
  it('adds to the named environments only, and a connection created later gets the syncs in its transaction', async () => {
    await write({
      // Keys in an order jsonb does not keep: reading them back must not look like a change.
      'crm/integration.json': JSON.stringify({
        provider: 'hubspot',
        display_name: 'CRM',
        base_url: 'https://x.example',
      }),
      'crm/syncs/contacts.ts': sync(),
      'crm/syncs/deals.ts': sync('every day'),
    })
    const report = await deploy({ environments: ['dev'] })
    expect(report.refused).toEqual([])
    expect(report.environments).toMatchObject([
      {
        environment: 'dev',
        added: ['crm/contacts', 'crm/deals'],
        changed: [],
        removed: [],
        integrations: ['crm'],
      },
    ])
    expect(Object.keys(await hashes(dev))).toEqual(['crm/contacts', 'crm/deals'])
    expect(await hashes(prod)).toEqual({})

    await importConnection(database.db.kysely, sealer, dev, {
      provider_config_key: 'crm',
      connection_id: 'd1',
    })
    await importConnection(database.db.kysely, sealer, prod, {
      provider_config_key: 'crm',
      connection_id: 'p1',
    })
    expect(await schedulesOf('d1')).toEqual([
      { name: 'contacts', state: 'STARTED', frequency_ms: expect.anything(), environment_id: dev },
      { name: 'deals', state: 'STARTED', frequency_ms: expect.anything(), environment_id: dev },
    ])
    expect(await schedulesOf('p1')).toEqual([])
  })

  it('a deployment of the same folder changes nothing and records nothing', async () => {
    const before = await database.db.kysely.selectFrom('deployments').select('id').execute()
    const report = await deploy({ environments: ['dev'] })
    expect(report.environments).toMatchObject([
      { environment: 'dev', deploymentId: null, unchanged: 2, added: [], changed: [], integrations: [] },
    ])
    expect(await database.db.kysely.selectFrom('deployments').select('id').execute()).toEqual(before)
  })

  it('deploying to every environment provisions existing connections there', async () => {
    const report = await deploy()
    expect(report.environments.map((e) => [e.environment, e.added.length, e.unchanged])).toEqual([
      ['dev', 0, 2],
      ['prod', 2, 0],
    ])
    expect((await schedulesOf('p1')).map((s) => [s.name, s.state])).toEqual([
      ['contacts', 'STARTED'],
      ['deals', 'STARTED'],
    ])
  })

  it('a changed file is a new version; a removed one stops its syncs (schedule DELETED) and comes back when redeployed', async () => {
    const old = await hashes(dev)
    await write({ 'crm/syncs/contacts.ts': sync('every 2 hours'), 'crm/syncs/deals.ts': null })
    const report = await deploy()
    expect(report.environments[0]).toMatchObject({ changed: ['crm/contacts'], removed: ['crm/deals'] })
    const now = await hashes(dev)
    expect(now['crm/contacts']).not.toBe(old['crm/contacts'])
    expect(now['crm/deals']).toBeUndefined()
    expect((await schedulesOf('d1')).map((s) => [s.name, s.state, Number(s.frequency_ms)])).toEqual([
      ['contacts', 'STARTED', 7_200_000],
      ['deals', 'DELETED', 86_400_000],
    ])
    // The old bundle stays: a run that started on it finishes on it.
    const bundles = await database.db.kysely.selectFrom('bundles').select('hash').execute()
    expect(bundles.map((b) => b.hash)).toContain(old['crm/contacts'])

    await write({ 'crm/syncs/deals.ts': sync('every day') })
    expect((await deploy()).environments[0]).toMatchObject({ added: ['crm/deals'] })
    expect((await schedulesOf('d1')).map((s) => s.state)).toEqual(['STARTED', 'STARTED'])
  })

  it('a broken file never replaces its working version, and --strict deploys nothing', async () => {
    const before = await hashes(dev)
    await write({
      'crm/syncs/contacts.ts': sync('every 10 seconds'),
      'crm/syncs/notes.ts': sync(),
    })
    await expect(deploy({ strict: true })).rejects.toBeInstanceOf(DeployError)
    expect(await hashes(dev)).toEqual(before)

    const report = await deploy()
    expect(report.refused).toEqual([
      expect.objectContaining({ file: path.join(dir, 'crm/syncs/contacts.ts'), name: 'contacts' }),
    ])
    expect(report.environments[0]).toMatchObject({ added: ['crm/notes'], changed: [], removed: [] })
    expect((await hashes(dev))['crm/contacts']).toBe(before['crm/contacts'])
    const [recorded] = await database.db.kysely
      .selectFrom('deployments')
      .select(['summary', 'deployed_by', 'source'])
      .where('environment_id', '=', dev)
      .orderBy('id', 'desc')
      .limit(1)
      .execute()
    expect(recorded).toMatchObject({
      deployed_by: 'test',
      source: dir,
      summary: { added: ['crm/notes'], refused: [{ file: path.join(dir, 'crm/syncs/contacts.ts') }] },
    })
  })

  it('without pruning only adds and changes; an unknown environment is refused', async () => {
    await write({ 'crm/syncs/notes.ts': null, 'crm/syncs/contacts.ts': sync() })
    const report = await deploy({ prune: false })
    expect(report.environments[0]).toMatchObject({ removed: [], changed: ['crm/contacts'] })
    expect(Object.keys(await hashes(dev))).toContain('crm/notes')
    await expect(deploy({ environments: ['nope'] })).rejects.toThrow(/Unknown environment "nope"/)
  })

  it('an integration created through the API keeps its provider and name, and no deployment removes it', async () => {
    const db = database.db.kysely
    const integration = (key: string) =>
      db
        .selectFrom('integrations')
        .select(['provider', 'display_name', 'config'])
        .where('environment_id', '=', dev)
        .where('unique_key', '=', key)
        .executeTakeFirst()
    await db
      .insertInto('integrations')
      .values([
        {
          environment_id: dev,
          unique_key: 'gh',
          provider: 'github',
          display_name: 'GitHub',
          config: '{}',
          created_by: 'api',
        },
        {
          environment_id: dev,
          unique_key: 'idle',
          provider: 'slack',
          display_name: 'Slack',
          config: '{}',
          created_by: 'api',
        },
      ])
      .execute()
    await write({ 'gh/syncs/issues.ts': sync(), 'gh/integration.json': '{"base_url": "http://127.0.0.1:1"}' })
    const report = await deploy({ environments: ['dev'] })
    expect(report.environments[0]).toMatchObject({ added: ['gh/issues'], integrations: ['gh'] })
    expect(await integration('gh')).toEqual({
      provider: 'github',
      display_name: 'GitHub',
      config: { base_url: 'http://127.0.0.1:1' },
    })
    expect(await integration('idle')).toMatchObject({ provider: 'slack' })

    await rm(path.join(dir, 'gh'), { recursive: true })
    const removed = await deploy({ environments: ['dev'] })
    expect(removed.environments[0]).toMatchObject({ removed: ['gh/issues'], integrations: [] })
    expect(await integration('gh')).toMatchObject({ provider: 'github', display_name: 'GitHub' })
    expect(await integration('idle')).toMatchObject({ provider: 'slack' })
  })

  it('a bundle already deployed is not loaded again: its stored definition stands for it', async () => {
    const deployed = await hashes(dev)
    const known = await knownBundles(database.db.kysely, Object.values(deployed))
    expect(known.size).toBe(new Set(Object.values(deployed)).size)
    // Marked, so the test can tell the stored definition from a fresh load of the file.
    const marked = new Map<string, LoadResult>()
    for (const [hash, result] of known) {
      marked.set(
        hash,
        'definition' in result
          ? { ...result, definition: { ...result.definition, description: 'stored' } }
          : result,
      )
    }
    const folder = await readFolders(
      [dir],
      async (wanted) => new Map(wanted.filter((h) => marked.has(h)).map((h) => [h, marked.get(h)!])),
    )
    const syncs = folder.integrations.get('crm')!.syncs
    expect(syncs.map((s) => [s.name, s.description])).toEqual([
      ['contacts', 'stored'],
      ['deals', 'stored'],
    ])
  })
})
