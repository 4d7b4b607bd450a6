import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { listDeployments, readDefinitions } from '../../src/deployments/store.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { createKey } from '../../src/keys/store.ts'
import { api, type JsonBody, startTestServer, type TestServer, waitFor } from '../helpers/server.ts'

/**
 * Nango's own CLI deploys to syncstore: a folder kept as Nango's docs tell teams to (`.nango/`,
 * `index.ts` importing each function, `nango` and `zod` installed as devDependencies), deployed
 * with `nango deploy dev` (nango 0.71.10, this repository's dev dependency) against the whole
 * server; its sync then runs and its records page through GET /records. Then the two endpoints the
 * CLI calls, directly: Nango's plan, reconcile, versions, refusals, scope and environment.
 */

const own = createRequire(import.meta.url)
const NANGO_DIR = path.dirname(own.resolve('nango/package.json'))
const CLI = path.join(
  NANGO_DIR,
  (
    JSON.parse(await readFile(path.join(NANGO_DIR, 'package.json'), 'utf8')) as {
      bin: { nango: string }
    }
  ).bin.nango,
)
// The zod the CLI's example project pins (its own dependency): the one a team has installed.
const NANGO_ZOD_DIR = path.dirname(
  createRequire(path.join(NANGO_DIR, 'package.json')).resolve('zod/package.json'),
)

const PROJECT: Record<string, string> = {
  'package.json': JSON.stringify({
    name: 'nango-integrations',
    private: true,
    type: 'module',
    devDependencies: { nango: '0.71.10', zod: '4.3.6' },
  }),
  '.nango/.gitkeep': '',
  'index.ts': "import './crm/syncs/contacts.js';\n",
  'models.ts': `import * as z from 'zod';

export const Contact = z.object({
    id: z.string(),
    name: z.string(),
    email: z.string().nullable(),
    createdAt: z.date()
});
export type Contact = z.infer<typeof Contact>;
`,
  'crm/helpers/mappers.ts': `import type { Contact } from '../../models.js';

export interface RawContact {
    id: number;
    full_name: string;
    email?: string;
    created: string;
}

export function toContact(raw: RawContact): Contact {
    return { id: String(raw.id), name: raw.full_name, email: raw.email ?? null, createdAt: new Date(raw.created) };
}
`,
  'crm/syncs/contacts.ts': `import { createSync } from 'nango';
import * as z from 'zod';

import { Contact } from '../../models.js';
import { toContact } from '../helpers/mappers.js';
import type { RawContact } from '../helpers/mappers.js';

const sync = createSync({
    description: 'Contacts from the CRM',
    frequency: 'every hour',
    autoStart: true,
    syncType: 'full',
    endpoints: [{ method: 'GET', path: '/contacts', group: 'Contacts' }],
    scopes: ['contacts.read'],
    models: { Contact },
    metadata: z.object({ region: z.string() }),
    exec: async (nango) => {
        const raw: RawContact[] = [
            { id: 1, full_name: 'Ada', email: 'ada@example.com', created: '2024-01-02T03:04:05.000Z' },
            { id: 2, full_name: 'Grace', created: '2024-02-03T04:05:06.000Z' }
        ];
        // zod at run time too: the CommonJS bundle's require('zod') resolves in the run's worker.
        await nango.batchSave(raw.map((r) => Contact.parse(toContact(r))), 'Contact');
    }
});

export default sync;
`,
}

const dirs: string[] = []
let t: TestServer
let project: string

beforeAll(async () => {
  t = await startTestServer({})
  project = await mkdtemp(path.join(os.tmpdir(), 'syncstore-nango-cli-'))
  dirs.push(project)
  for (const [file, source] of Object.entries(PROJECT)) {
    await mkdir(path.dirname(path.join(project, file)), { recursive: true })
    await writeFile(path.join(project, file), source)
  }
  // As `npm install` leaves them (the CLI typechecks against both), without installing per test.
  await mkdir(path.join(project, 'node_modules'))
  await symlink(NANGO_DIR, path.join(project, 'node_modules', 'nango'), 'dir')
  await symlink(NANGO_ZOD_DIR, path.join(project, 'node_modules', 'zod'), 'dir')
})
afterAll(async () => {
  await t?.close()
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

/** `nango deploy <env> --auto-confirm` in `cwd`, offline but for syncstore. */
async function nangoDeploy(
  cwd: string,
  key: string,
  args: string[] = [],
): Promise<{ code: number; output: string }> {
  const config = await mkdtemp(path.join(os.tmpdir(), 'syncstore-nango-home-'))
  dirs.push(config)
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'deploy', 'dev', '--auto-confirm', ...args],
      {
        cwd,
        timeout: 150_000,
        env: {
          PATH: process.env.PATH,
          NANGO_HOSTPORT: t.url,
          NANGO_SECRET_KEY_DEV: key,
          // Non-interactive, no dependency install; and no registry check for a newer CLI.
          CI: 'true',
          NANGO_CLI_UPGRADE_MODE: 'ignore',
          // The CLI keeps a device id under ~/.config/nango: not in the real home.
          HOME: config,
          XDG_CONFIG_HOME: config,
          NO_COLOR: '1',
        },
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
        resolve({ code, output: `${stdout}${stderr}` })
      },
    )
  })
}

describe('nango deploy dev', () => {
  it('deploys the folder to the key environment; the sync runs and its records page', async () => {
    const { code, output } = await nangoDeploy(project, t.key)
    expect(output, output).toContain('- contacts@v1')
    expect(code, output).toBe(0)

    const deployments = await listDeployments(t.database.db.kysely, { environments: ['dev'], limit: 5 })
    expect(deployments[0]).toMatchObject({
      source: 'nango deploy (sdk 0.71.10-zero)',
      deployedBy: expect.stringMatching(/^api key /),
      summary: { integrations: ['crm'], added: ['crm/contacts'] },
    })
    const definitions = await readDefinitions(t.database.db.kysely, t.envId)
    expect(definitions.integrations.get('crm')).toMatchObject({ provider: 'crm', displayName: 'crm' })
    expect(definitions.find('crm', 'contacts')).toMatchObject({
      file: 'crm/syncs/contacts.ts',
      description: 'Contacts from the CRM',
      frequency: 'every hour',
      autoStart: true,
      syncType: 'full',
      models: {
        Contact: {
          type: 'object',
          properties: { createdAt: { type: 'string', format: 'date-time' } },
          required: ['id', 'name', 'email', 'createdAt'],
        },
      },
      extra: {
        version: '1',
        scopes: ['contacts.read'],
        endpoints: [{ method: 'GET', path: '/contacts', group: 'Contacts' }],
        metadata: { type: 'object', required: ['region'] },
      },
    })

    const created = await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: 'c1' })
    expect(created.status).toBe(201)
    const nango = new Nango({ host: t.url, secretKey: t.key })
    const page = await waitFor(
      'the CLI-deployed sync saved its records',
      async () => {
        const res = await nango.listRecords({
          providerConfigKey: 'crm',
          connectionId: 'c1',
          model: 'Contact',
          limit: 1,
        })
        return res.records.length > 0 ? res : undefined
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    )
    expect(page.records[0]).toMatchObject({ id: '1', name: 'Ada', createdAt: '2024-01-02T03:04:05.000Z' })
    const next = await nango.listRecords({
      providerConfigKey: 'crm',
      connectionId: 'c1',
      model: 'Contact',
      cursor: page.next_cursor!,
    })
    expect(next.records.map((r) => [r.id, r.email])).toEqual([['2', null]])
  }, 200_000)
})

describe('POST /sync/deploy/confirmation and /sync/deploy', () => {
  /** The flow the CLI sent for contacts, rebuilt from what it compiled into build/. */
  let contacts: JsonBody
  const body = (flowConfigs: JsonBody[], extra: Record<string, unknown> = {}) => ({
    flowConfigs,
    onEventScriptsByProvider: [],
    deployMode: 'all',
    reconcile: false,
    debug: false,
    sdkVersion: '0.71.10-zero',
    ...extra,
  })
  const deployBody = (flowConfigs: JsonBody[], extra: Record<string, unknown> = {}) =>
    body(flowConfigs, { reconcile: true, nangoYamlBody: '', source: 'repo', ...extra })

  beforeAll(async () => {
    contacts = {
      syncName: 'contacts',
      providerConfigKey: 'crm',
      models: ['Contact'],
      version: '',
      runs: 'every hour',
      track_deletes: false,
      auto_start: true,
      attributes: {},
      metadata: { description: 'Contacts from the CRM', scopes: ['contacts.read'] },
      input: 'SyncMetadata_crm_contacts',
      sync_type: 'full',
      type: 'sync',
      endpoints: [{ method: 'GET', path: '/contacts', group: 'Contacts' }],
      webhookSubscriptions: [],
      models_json_schema: (
        JSON.parse(await readFile(path.join(project, '.nango', 'nango.json'), 'utf8')) as JsonBody
      ).find((i: JsonBody) => i.providerConfigKey === 'crm').syncs[0].json_schema,
      features: [],
      fileBody: {
        js: await readFile(path.join(project, 'build', 'crm_syncs_contacts.cjs'), 'utf8'),
        ts: PROJECT['crm/syncs/contacts.ts'],
      },
    }
  })

  it('plans as Nango: new, updated, deleted syncs and models, with connection counts', async () => {
    const leads = { ...contacts, syncName: 'leads', auto_start: false }
    const res = await api(t, 'POST', '/sync/deploy/confirmation', body([leads]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body).toEqual({
      newSyncs: [{ name: 'leads', providerConfigKey: 'crm', connections: 1, auto_start: false }],
      updatedSyncs: [],
      deletedSyncs: [{ name: 'contacts', providerConfigKey: 'crm', connections: 1, auto_start: false }],
      newActions: [],
      updatedActions: [],
      deletedActions: [],
      deletedModels: [],
      newOnEventScripts: [],
      updatedOnEventScripts: [],
      deletedOnEventScripts: [],
    })
    const renamed = { ...contacts, models: ['Person'] }
    renamed.models_json_schema = { definitions: { Person: contacts.models_json_schema.definitions.Contact } }
    const single = await api(
      t,
      'POST',
      '/sync/deploy/confirmation',
      body([renamed], { deployMode: 'single' }),
    )
    expect(single.body).toMatchObject({
      newSyncs: [],
      updatedSyncs: [{ name: 'contacts', connections: 1 }],
      deletedSyncs: [],
      deletedModels: ['Contact'],
    })
  })

  it('redeploys nothing unchanged, bumps the version of a change, and reconciles what left', async () => {
    const before = await listDeployments(t.database.db.kysely, { environments: ['dev'], limit: 1 })
    const same = await api(t, 'POST', '/sync/deploy', deployBody([contacts]))
    expect(same.body).toEqual([
      { name: 'contacts', version: '1', providerConfigKey: 'crm', type: 'sync', models: ['Contact'] },
    ])
    expect(await listDeployments(t.database.db.kysely, { environments: ['dev'], limit: 1 })).toEqual(before)

    const changed = await api(t, 'POST', '/sync/deploy', deployBody([{ ...contacts, runs: 'every 2 hours' }]))
    expect(changed.body).toMatchObject([{ name: 'contacts', version: '2' }])
    const pinned = await api(
      t,
      'POST',
      '/sync/deploy',
      deployBody([
        { ...contacts, runs: 'every 2 hours', version: '3.0.0' },
        { ...contacts, syncName: 'leads' },
      ]),
    )
    expect(pinned.body.map((d: JsonBody) => `${d.name}@${d.version}`)).toEqual(['contacts@3.0.0', 'leads@1'])

    // A deployment without contacts removes it (its syncs stop, records kept); `single` removes nothing.
    await api(
      t,
      'POST',
      '/sync/deploy',
      deployBody([{ ...contacts, syncName: 'leads' }], { deployMode: 'single' }),
    )
    expect((await readDefinitions(t.database.db.kysely, t.envId)).find('crm', 'contacts')).toBeDefined()
    const removed = await api(t, 'POST', '/sync/deploy', deployBody([{ ...contacts, syncName: 'leads' }]))
    expect(removed.status).toBe(200)
    const [latest] = await listDeployments(t.database.db.kysely, { environments: ['dev'], limit: 1 })
    expect(latest!.summary).toMatchObject({ added: [], changed: [], removed: ['crm/contacts'] })
    const definitions = await readDefinitions(t.database.db.kysely, t.envId)
    expect(definitions.find('crm', 'contacts')).toBeUndefined()
    expect(definitions.find('crm', 'leads')).toBeDefined()
    const kept = await new Nango({ host: t.url, secretKey: t.key }).listRecords({
      providerConfigKey: 'crm',
      connectionId: 'c1',
      model: 'Contact',
    })
    expect(kept.records).toHaveLength(2)
  })

  it('refuses actions, on-event scripts and bundles that do not load, naming each', async () => {
    const action = await api(
      t,
      'POST',
      '/sync/deploy/confirmation',
      body([{ ...contacts, type: 'action', syncName: 'create-contact', runs: null }]),
    )
    expect(action.status).toBe(400)
    expect(action.body.error).toMatchObject({
      code: 'invalid_body',
      message: expect.stringContaining('crm/create-contact is an action'),
      errors: [{ path: ['flowConfigs', '0'] }],
    })
    const onEvent = await api(
      t,
      'POST',
      '/sync/deploy',
      deployBody([contacts], {
        onEventScriptsByProvider: [{ providerConfigKey: 'crm', scripts: [{ name: 'setup' }] }],
      }),
    )
    expect(onEvent.body.error.message).toContain('crm has on-event scripts')

    const broken = { ...contacts, syncName: 'broken', fileBody: { js: 'module.exports = {', ts: '' } }
    const noExec = {
      ...contacts,
      syncName: 'no-exec',
      fileBody: { js: 'module.exports.default = { description: "x" }', ts: '' },
    }
    const res = await api(t, 'POST', '/sync/deploy', deployBody([contacts, broken, noExec]))
    expect(res.status).toBe(400)
    expect(res.body.error.errors.map((e: JsonBody) => e.path[1])).toEqual(['1', '2'])
    expect(res.body.error.message).toMatch(
      /crm\/broken could not be loaded.*crm\/no-exec: exec must be a function/,
    )

    const unknownField = await api(t, 'POST', '/sync/deploy', deployBody([{ ...contacts, surprise: 1 }]))
    expect(unknownField.status).toBe(400)
    expect(unknownField.body.error.code).toBe('invalid_body')
  })

  it("needs environment:deploy, and deploys to the key's environment only", async () => {
    const { secret: reader } = await createKey(t.database.db.kysely, t.envId, ['environment:records:read'])
    const forbidden = await api(t, 'POST', '/sync/deploy', deployBody([contacts]), reader)
    expect(forbidden.status).toBe(403)

    const prod = await ensureEnvironment(t.database.db.kysely, 'prod')
    const { secret: deployKey } = await createKey(t.database.db.kysely, prod.id, ['environment:deploy'])
    const res = await api(
      t,
      'POST',
      '/sync/deploy',
      deployBody([{ ...contacts, syncName: 'prod-only' }]),
      deployKey,
    )
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect((await readDefinitions(t.database.db.kysely, prod.id)).find('crm', 'prod-only')).toBeDefined()
    expect((await readDefinitions(t.database.db.kysely, t.envId)).find('crm', 'prod-only')).toBeUndefined()
  })
})
