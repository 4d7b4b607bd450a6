import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { Ajv } from 'ajv'
import addFormats from 'ajv-formats'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { deployFolders } from '../../src/deployments/deploy.ts'
import { readFolders } from '../../src/deployments/folder.ts'
import { readDefinitions } from '../../src/deployments/store.ts'
import { findEnvironment } from '../../src/environments/store.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { api, startTestServer, waitFor } from '../helpers/server.ts'

/**
 * A folder written for Nango, as its users write it (zod models in a root `models.ts`, helpers in
 * `../helpers/`, `createSync` from 'nango', metadata and checkpoint schemas), deploys with nothing
 * installed beside it, and runs.
 */

const dirs: string[] = []
afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))))

async function folder(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-nango-'))
  dirs.push(dir)
  await write(dir, { 'package.json': '{"type":"module"}\n', ...files })
  return dir
}

async function write(dir: string, files: Record<string, string>): Promise<void> {
  for (const [file, source] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true })
    await writeFile(path.join(dir, file), source)
  }
}

const MODELS = `import * as z from 'zod'

export const Address = z.object({
  street: z.string(),
  city: z.string(),
  postcode: z.string().optional(),
})

export const Contact = z.object({
  id: z.string(),
  name: z.string(),
  email: z.string().nullable(),
  createdAt: z.date(),
  tags: z.array(z.string()),
  addresses: z.array(Address),
  owner: z.object({ id: z.number(), active: z.boolean() }).optional(),
})
export type Contact = z.infer<typeof Contact>
`

const HELPER = `import type { Contact } from '../../models.js'

export interface RawContact {
  id: number
  full_name: string
  email?: string
  created: string
  labels: string[]
  city: string
}

export function toContact(raw: RawContact): Contact {
  return {
    id: String(raw.id),
    name: raw.full_name,
    email: raw.email ?? null,
    createdAt: new Date(raw.created),
    tags: raw.labels,
    addresses: [{ street: '1 Main St', city: raw.city }],
  }
}
`

const SYNC = `import { createSync } from 'nango'
import type { ProxyConfiguration } from 'nango'
import * as z from 'zod'

import { Contact } from '../../models.js'
import { type RawContact, toContact } from '../helpers/mappers.js'

const sync = createSync({
  description: 'Contacts from the CRM',
  version: '1.2.0',
  frequency: 'every hour',
  autoStart: true,
  syncType: 'incremental',
  endpoints: [{ method: 'GET', path: '/contacts', group: 'Contacts' }],
  scopes: ['contacts.read'],
  webhookSubscriptions: ['contact.created'],
  models: { Contact },
  metadata: z.object({ region: z.string() }),
  checkpoint: z.object({ updatedAfter: z.string() }),
  exec: async (nango) => {
    const config: ProxyConfiguration = { endpoint: '/contacts', retries: 3 }
    void config
    const raw: RawContact[] = [
      { id: 1, full_name: 'Ada', email: 'ada@example.com', created: '2024-01-02T03:04:05.000Z', labels: ['vip'], city: 'London' },
      { id: 2, full_name: 'Grace', created: '2024-02-03T04:05:06.000Z', labels: [], city: 'New York' },
    ]
    // zod at run time too: the run's worker resolves it as the deploy did.
    const contacts = raw.map(toContact).map((c) => Contact.parse(c))
    await nango.batchSave(contacts, 'Contact')
  },
})

export default sync
`

/** What Nango's CLI leaves in a folder beside the integrations. */
const NANGO_FOLDER = {
  'models.ts': MODELS,
  'crm/helpers/mappers.ts': HELPER,
  'crm/syncs/contacts.ts': SYNC,
  'crm/actions/create-contact.ts': `import { createAction } from 'nango'
import * as z from 'zod'
export default createAction({
  description: 'Creates a contact',
  input: z.object({ name: z.string() }),
  output: z.object({ id: z.string() }),
  exec: async () => ({ id: '1' }),
})
`,
  'index.ts': "import './crm/syncs/contacts.js'\nimport './crm/actions/create-contact.js'\n",
  '.nango/schema.ts': 'export interface Contact { id: string }\n',
}

/** A sync file of our own for the folders that need one more. */
const nangoSync = (imports: string, body = '') => `import { createSync } from 'nango'
import * as z from 'zod'
${imports}
export default createSync({
  description: 'A sync',
  frequency: 'every day',
  models: { Item: z.object({ id: z.string() }) },
  exec: async (nango) => { ${body} await nango.batchSave([{ id: 'a' }], 'Item') },
})
`

const ajv = new Ajv({ strict: false })
addFormats.default(ajv)

describe('a folder written for Nango, with nothing installed beside it', () => {
  it('loads: zod models become draft-07 JSON Schema, Nango fields are kept, actions and tooling folders are not syncs', async () => {
    const dir = await folder({
      ...NANGO_FOLDER,
      // Build output, installed packages and Nango's own folder are not integrations.
      'build/crm_syncs_contacts.cjs': 'module.exports = {}\n',
      'build/syncs/old.ts': SYNC,
      'dist/syncs/old.ts': SYNC,
      'node_modules/left-pad/syncs/pad.ts': SYNC,
      '.nango/syncs/x.ts': SYNC,
    })
    const { integrations, refused } = await readFolders([dir])
    expect(refused).toEqual([])
    expect([...integrations.keys()]).toEqual(['crm'])
    const [contacts, ...others] = integrations.get('crm')!.syncs
    expect(others).toEqual([])
    expect(contacts).toMatchObject({
      name: 'contacts',
      file: path.join('crm', 'syncs', 'contacts.ts'),
      description: 'Contacts from the CRM',
      frequencyMs: 3_600_000,
      autoStart: true,
      syncType: 'incremental',
      trackDeletes: false,
      extra: {
        version: '1.2.0',
        endpoints: [{ method: 'GET', path: '/contacts', group: 'Contacts' }],
        scopes: ['contacts.read'],
        webhookSubscriptions: ['contact.created'],
        metadata: {
          type: 'object',
          properties: { region: { type: 'string' } },
          required: ['region'],
        },
        checkpoint: {
          type: 'object',
          properties: { updatedAfter: { type: 'string' } },
          required: ['updatedAfter'],
        },
      },
    })

    const model = contacts!.models.Contact as Record<string, unknown>
    expect(model).not.toHaveProperty('$schema')
    expect(model).toMatchObject({
      type: 'object',
      required: ['id', 'name', 'email', 'createdAt', 'tags', 'addresses'],
      properties: {
        email: { type: ['string', 'null'] },
        createdAt: { type: 'string', format: 'date-time' },
        tags: { type: 'array', items: { type: 'string' } },
        addresses: {
          type: 'array',
          items: { type: 'object', required: ['street', 'city'] },
        },
        owner: { type: 'object', required: ['id', 'active'] },
      },
    })
    expect(ajv.validateSchema({ ...model, $schema: 'http://json-schema.org/draft-07/schema#' })).toBe(true)
    const validate = ajv.compile(model)
    const record = {
      id: '1',
      name: 'Ada',
      email: null,
      createdAt: '2024-01-02T03:04:05.000Z',
      tags: ['vip'],
      addresses: [{ street: '1 Main St', city: 'London' }],
    }
    expect(validate(record)).toBe(true)
    expect(validate({ ...record, owner: { id: 7, active: true } })).toBe(true)
    const { name: _name, ...nameless } = record
    expect(validate(nameless)).toBe(false)
    expect(validate.errors?.[0]).toMatchObject({ params: { missingProperty: 'name' } })
    expect(validate({ ...record, addresses: [{ street: 'x' }] })).toBe(false)
    expect(validate({ ...record, createdAt: 'yesterday' })).toBe(false)

    // nango and zod are left to the worker (syncstore's copies), the team's files are inside.
    expect(contacts!.bundle.code).toMatch(/from "nango"/)
    expect(contacts!.bundle.code).toMatch(/from "zod"/)
    expect(contacts!.bundle.code).toContain('function toContact(')
  })

  it('zod 3 models (zod/v3) convert too, and soap, unzipper, url and crypto are provided', async () => {
    const dir = await folder({
      'legacy/syncs/v3.ts': `import { createSync } from 'nango'
import { z } from 'zod/v3'
export default createSync({
  description: 'zod 3',
  frequency: 'every day',
  models: { Ticket: z.object({ id: z.string(), opened: z.date(), note: z.string().optional() }) },
  exec: async (nango) => { await nango.batchSave([], 'Ticket') },
})
`,
      'legacy/syncs/soapy.ts': nangoSync(
        `import * as soap from 'soap'
import unzipper from 'unzipper'
import { URL } from 'url'
import { createHash } from 'node:crypto'
import crypto from 'crypto'
// Loading the bundle runs this: the modules are there, not just named.
if (typeof soap.createClientAsync !== 'function' || typeof unzipper.Open.buffer !== 'function') {
  throw new Error('soap or unzipper is missing')
}
void new URL('https://example.com'), createHash('sha1'), crypto.randomUUID()`,
      ),
    })
    const { integrations, refused } = await readFolders([dir])
    expect(refused).toEqual([])
    const syncs = integrations.get('legacy')!.syncs
    expect(syncs.find((s) => s.name === 'v3')!.models.Ticket).toMatchObject({
      type: 'object',
      properties: { id: { type: 'string' }, opened: { type: 'string', format: 'date-time' } },
      required: ['id', 'opened'],
    })
    expect(syncs.find((s) => s.name === 'soapy')!.bundle.code).toMatch(/from "soap"/)
  })

  it('a CommonJS file gets them through require() too', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-nango-cjs-'))
    dirs.push(dir)
    await write(dir, {
      'crm/syncs/items.js': `const { createSync } = require('nango')
const z = require('zod')
module.exports = createSync({
  description: 'CommonJS',
  frequency: 'every day',
  models: { Item: z.object({ id: z.string(), seen: z.date() }) },
  exec: async (nango) => { await nango.batchSave([], 'Item') },
})
`,
    })
    const { integrations, refused } = await readFolders([dir])
    expect(refused).toEqual([])
    expect(integrations.get('crm')!.syncs[0]!.models.Item).toMatchObject({
      properties: { seen: { type: 'string', format: 'date-time' } },
      required: ['id', 'seen'],
    })
  })

  it('a symlinked integration folder is followed', async () => {
    const elsewhere = await folder({ 'syncs/items.ts': nangoSync('') })
    const dir = await folder({})
    await symlink(elsewhere, path.join(dir, 'linked'))
    const { integrations, refused } = await readFolders([dir])
    expect(refused).toEqual([])
    expect(integrations.get('linked')!.syncs.map((s) => s.name)).toEqual(['items'])
  })

  it('refuses what Nango does not let a sync import, naming the file and the import', async () => {
    const dir = await folder({
      'crm/helpers/http.ts': "import axios from 'axios'\nexport const client = axios\n",
      'crm/syncs/helper.ts': nangoSync("import { client } from '../helpers/http.js'", 'void client;'),
      'crm/syncs/fs.ts': nangoSync("import { readFileSync } from 'node:fs'", 'void readFileSync;'),
      'crm/syncs/bot.ts': nangoSync("import * as bot from 'botbuilder'", 'void bot;'),
      // syncstore's own format keeps Node's built-ins.
      'crm/syncs/own.ts': `import { createSync } from 'syncstore'
import { readFileSync } from 'node:fs'
export default createSync({
  description: 'ours', frequency: 'every day', models: { Item: { type: 'object' } },
  exec: async (nango) => { void readFileSync; await nango.batchSave([], 'Item') },
})
`,
    })
    const { integrations, refused } = await readFolders([dir])
    const reasons = Object.fromEntries(refused.map((r) => [path.relative(dir, r.file), r.reason]))
    const allowed = '(allowed: nango, zod, url, crypto, soap, unzipper, botbuilder)'
    expect(reasons).toEqual({
      'crm/syncs/helper.ts': `imports "axios" (in crm/helpers/http.ts), which sync functions cannot import ${allowed}`,
      'crm/syncs/fs.ts': `imports "node:fs", which sync functions cannot import ${allowed}`,
      'crm/syncs/bot.ts':
        'imports "botbuilder", which is not installed beside the integrations (npm install it there)',
    })
    expect(integrations.get('crm')!.syncs.map((s) => s.name)).toEqual(['own'])
  })

  it("a copy of zod the team installed wins when it is another major version; the same major is syncstore's", async () => {
    const ours = path.dirname(createRequire(import.meta.url).resolve('zod/package.json'))
    const contactsSync = async (dir: string) => {
      const { integrations, refused } = await readFolders([dir])
      expect(refused).toEqual([])
      return integrations.get('crm')!.syncs[0]!
    }
    const bare = await contactsSync(await folder(NANGO_FOLDER))

    // zod 4 installed, as Nango's CLI wants it: syncstore's zod 4 serves it, nothing is bundled.
    const sameMajor = await folder(NANGO_FOLDER)
    await mkdir(path.join(sameMajor, 'node_modules'))
    await symlink(ours, path.join(sameMajor, 'node_modules', 'zod'))
    expect(await contactsSync(sameMajor)).toMatchObject({ bundle: bare.bundle, models: bare.models })

    // zod 3 installed (a stand-in: zod 4's own v3 API, under a 3.x version): that copy is bundled.
    const zod3 = await folder({
      ...NANGO_FOLDER,
      'node_modules/zod/package.json': JSON.stringify({
        name: 'zod',
        version: '3.25.76',
        type: 'module',
        main: 'index.js',
      }),
      'node_modules/zod/index.js': `export * from ${JSON.stringify(path.join(ours, 'v3', 'index.js'))}\n`,
    })
    const team = await contactsSync(zod3)
    expect(team.bundle.code).not.toMatch(/from "zod"/)
    expect(team.bundle.code).toMatch(/node_modules\/zod\/v3\//)
    expect(team.models.Contact).toMatchObject({
      type: 'object',
      required: ['id', 'name', 'email', 'createdAt', 'tags', 'addresses'],
      properties: {
        email: { type: ['string', 'null'] },
        createdAt: { type: 'string', format: 'date-time' },
        addresses: { type: 'array', items: { type: 'object', required: ['street', 'city'] } },
      },
    })
    expect(team.extra).toMatchObject({
      metadata: { required: ['region'] },
      checkpoint: { required: ['updatedAfter'] },
    })
  })
})

describe('deployed', () => {
  let database: TestDatabase
  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(() => database.destroy())

  it("Nango's old nango.yaml format gets one line naming the migration, and removes nothing deployed", async () => {
    const dir = await folder(NANGO_FOLDER)
    const deploy = () =>
      deployFolders(database.db.kysely, [dir], { source: dir, deployedBy: 'test', environments: ['dev'] })
    expect((await deploy()).environments[0]!.added).toEqual(['crm/contacts'])
    const dev = (await findEnvironment(database.db.kysely, 'dev'))!.id
    const before = await readDefinitions(database.db.kysely, dev)
    expect(before.find('crm', 'contacts')!.extra).toMatchObject({
      version: '1.2.0',
      scopes: ['contacts.read'],
    })

    await write(dir, { 'nango.yaml': 'integrations:\n  crm:\n    syncs: {}\n' })
    const report = await deployFolders(database.db.kysely, [dir], { source: dir, environments: ['dev'] })
    expect(report.refused.map((r) => `${path.relative(dir, r.file)}: ${r.reason}`)).toEqual([
      "nango.yaml: Nango's old nango.yaml format, which syncstore does not load: convert the folder with `npx nango migrate-to-zero-yaml` (run inside it)",
    ])
    expect(report.environments[0]).toMatchObject({ deploymentId: null, removed: [] })
    expect((await readDefinitions(database.db.kysely, dev)).find('crm', 'contacts')).toEqual(
      before.find('crm', 'contacts'),
    )
  })
})

it('runs through the whole server: the Nango-format sync saves its records, which page through GET /records', async () => {
  const t = await startTestServer(NANGO_FOLDER)
  try {
    const created = await api(t, 'POST', '/connections', { provider_config_key: 'crm', connection_id: 'c1' })
    expect(created.status).toBe(201)
    const nango = new Nango({ host: t.url, secretKey: t.key })
    const page = await waitFor(
      'the Nango-format sync saved its records',
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
    expect(page.records[0]).toMatchObject({
      id: '1',
      name: 'Ada',
      email: 'ada@example.com',
      createdAt: '2024-01-02T03:04:05.000Z',
      addresses: [{ street: '1 Main St', city: 'London' }],
    })
    expect(page.next_cursor).toBeTruthy()
    const next = await nango.listRecords({
      providerConfigKey: 'crm',
      connectionId: 'c1',
      model: 'Contact',
      cursor: page.next_cursor!,
    })
    expect(next.records.map((r) => [r.id, r.email])).toEqual([['2', null]])
  } finally {
    await t.close()
  }
})
