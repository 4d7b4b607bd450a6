import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { readFolders } from '../../src/deployments/folder.ts'
import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli, startServer } from '../helpers/process.ts'
import { waitFor } from '../helpers/server.ts'

/** Reading a folder for a deployment: what loads, what is refused (naming the file and the problem), through the real binary too. */

const dirs: string[] = []
const databases: ProcessDatabase[] = []
afterAll(async () => {
  await killAll()
  await Promise.all(databases.map((d) => d.destroy()))
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

/** A temporary integrations folder with these files; ES modules unless `commonjs`. */
async function folder(files: Record<string, string>, { commonjs = false } = {}): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-defs-'))
  dirs.push(dir)
  if (!commonjs) await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n')
  for (const [file, source] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true })
    await writeFile(path.join(dir, file), source)
  }
  return dir
}

/** A definition's source, with some fields replaced or removed (undefined). */
function sync(overrides: Record<string, string | undefined> = {}, { plain = false } = {}): string {
  const fields: Record<string, string | undefined> = {
    description: "'A sync'",
    frequency: "'every hour'",
    models: "{ Contact: { type: 'object', properties: { id: { type: 'string' } } } }",
    exec: 'async (nango) => { await nango.batchSave([], "Contact") }',
    ...overrides,
  }
  const body = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `  ${k}: ${v},`)
    .join('\n')
  return plain
    ? `export default {\n${body}\n}\n`
    : `import { createSync } from 'syncstore'\nexport default createSync({\n${body}\n})\n`
}

/** "file: reason" for each refused file. */
async function problemsOf(dir: string): Promise<string[]> {
  const { refused } = await readFolders([dir])
  return refused.map((r) => `${r.file}: ${r.reason}`)
}

/** A folder's syncs, as a deployment would store them. */
async function definitionsIn(dir: string) {
  const { integrations, refused } = await readFolders([dir])
  expect(refused).toEqual([])
  return {
    integrations,
    find: (integration: string, name: string) =>
      integrations.get(integration)?.syncs.find((s) => s.name === name),
  }
}

describe('readFolders', () => {
  it('loads .ts, .js and .mjs definitions, createSync or a plain object, named by file and folder', async () => {
    const dir = await folder({
      'crm/syncs/contacts.ts': sync({ autoStart: 'false', syncType: "'incremental'", trackDeletes: 'true' }),
      'crm/syncs/deals.js': sync({ frequency: "'30 minutes'" }, { plain: true }),
      'crm/syncs/notes.mjs': sync({ frequency: "'every day'" }),
      'crm/syncs/README.md': '# not a definition',
      'crm/syncs/types.d.ts': 'export type X = 1',
      'crm/integration.json': JSON.stringify({ base_url: 'https://api.example.com', display_name: 'CRM' }),
      'tickets/syncs/issues.ts': sync({ frequency: "'2h'" }, { plain: true }),
    })
    const defs = await definitionsIn(dir)
    expect([...defs.integrations.keys()].sort()).toEqual(['crm', 'tickets'])
    const crm = defs.integrations.get('crm')!
    expect(crm.config).toEqual({ base_url: 'https://api.example.com', display_name: 'CRM' })
    expect(crm.syncs.map((s) => s.name).sort()).toEqual(['contacts', 'deals', 'notes'])
    expect(defs.find('crm', 'contacts')).toMatchObject({
      integration: 'crm',
      name: 'contacts',
      file: path.join('crm', 'syncs', 'contacts.ts'),
      description: 'A sync',
      frequency: 'every hour',
      frequencyMs: 3_600_000,
      models: { Contact: { type: 'object', properties: { id: { type: 'string' } } } },
      autoStart: false,
      syncType: 'incremental',
      trackDeletes: true,
    })
    expect(defs.find('crm', 'deals')).toMatchObject({
      frequencyMs: 1_800_000,
      autoStart: true,
      syncType: 'full',
    })
    expect(defs.find('crm', 'notes')).toMatchObject({ frequencyMs: 86_400_000, trackDeletes: false })
    expect(defs.find('tickets', 'issues')).toMatchObject({ integration: 'tickets', frequencyMs: 7_200_000 })
    expect(defs.integrations.get('tickets')!.config).toEqual({})
    expect(defs.find('crm', 'README')).toBeUndefined()
  })

  it('a missing folder means no definitions', async () => {
    const folder = await readFolders([path.join(os.tmpdir(), `syncstore-none-${randomUUID()}`)])
    expect(folder).toEqual({ integrations: new Map(), refused: [] })
  })

  it('reports every invalid definition at once, each with its file and its problem', async () => {
    const bad: Record<string, [string, RegExp]> = {
      'a/syncs/too-often.ts': [
        sync({ frequency: "'every 10 seconds'" }),
        /frequency "every 10 seconds" is not valid/,
      ],
      'a/syncs/vague.ts': [sync({ frequency: "'sometimes'" }), /frequency "sometimes" is not valid/],
      'a/syncs/too-rare.ts': [
        sync({ frequency: "'every 366 days'" }),
        /frequency "every 366 days" is not valid: .*\(30 s to 365 days\)/,
      ],
      'a/syncs/lower.ts': [sync({ models: "{ contact: { type: 'object' } }" }), /model name "contact"/],
      'a/syncs/colons.ts': [
        sync({ models: "{ 'Bad::Name': { type: 'object' } }" }),
        /model name "Bad::Name"/,
      ],
      'a/syncs/no-exec.ts': [sync({ exec: undefined }), /exec must be a function/],
      'a/syncs/no-description.ts': [
        sync({ description: undefined }),
        /description must be a non-empty string/,
      ],
      'a/syncs/no-models.ts': [sync({ models: '{}' }), /models must map at least one model/],
      'a/syncs/yes.ts': [sync({ autoStart: "'yes'" }), /autoStart must be true or false/],
      'a/syncs/throws.ts': ["throw new Error('boom at import')\n", /could not be loaded: .*boom at import/],
      // The first file (by name) wins; the second is reported, naming the first.
      'b/syncs/twice.js': [sync(), /./],
      'b/syncs/twice.ts': [sync(), /sync "twice" is also defined in .*twice\.js/],
    }
    const dir = await folder({
      ...Object.fromEntries(Object.entries(bad).map(([file, [source]]) => [file, source])),
      'a/syncs/fine.ts': sync(),
    })
    const problems = await problemsOf(dir)
    // One problem per bad file (a duplicate once, on the file that lost).
    expect(problems).toHaveLength(Object.keys(bad).length - 1)
    for (const [file, [, pattern]] of Object.entries(bad)) {
      if (file === 'b/syncs/twice.js') continue
      const line = problems.find((p) => p.startsWith(`${path.join(dir, file)}: `))
      expect(line, `a problem naming ${file}`).toBeDefined()
      expect(line).toMatch(pattern)
    }
    // The valid file beside them is read.
    expect((await readFolders([dir])).integrations.get('a')!.syncs.map((s) => s.name)).toEqual(['fine'])
  })

  it('an invalid integration.json is reported with its file', async () => {
    const dir = await folder({
      'x/integration.json': '{"base_url": "not a url"',
      'x/syncs/s.ts': sync(),
      'y/integration.json': JSON.stringify({ base_url: 'https://ok.example.com', colour: 'red' }),
    })
    const problems = await problemsOf(dir)
    expect(problems).toHaveLength(2)
    expect(problems[0]).toMatch(new RegExp(`^${path.join(dir, 'x/integration.json')}: not valid JSON`))
    expect(problems[1]).toContain(path.join(dir, 'y/integration.json'))
  })
})

describe('through the real binary', { timeout: 180_000 }, () => {
  const database = async () => {
    const d = await createProcessDatabase()
    databases.push(d)
    return d
  }

  it('deploy names each refused file and its problem, deploys the rest, and exits 1; --strict deploys nothing', async () => {
    const dir = await folder({
      'crm/syncs/broken.ts': sync({ frequency: "'every 10 seconds'", models: '{ contact: {} }' }),
      'crm/syncs/fine.ts': sync(),
    })
    const env = (await database()).env
    const strict = await runCli(['deploy', dir, '--strict'], env)
    expect(strict.code).toBe(1)
    expect(strict.stderr).toContain('broken.ts: frequency "every 10 seconds" is not valid')
    expect(strict.stderr).toContain('Nothing was deployed (--strict)')
    expect((await runCli(['deployments', 'list'], env)).stdout.trim().split('\n')).toHaveLength(1)

    const result = await runCli(['deploy', dir, '--env', 'dev'], env)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('broken.ts: frequency "every 10 seconds" is not valid')
    expect(result.stderr).toContain('model name "contact"')
    expect(result.stdout).toMatch(/^dev: deployment \d+ \(0 unchanged\)\n {2}added {2}crm\/fine$/m)
    const listed = await runCli(['deployments', 'list'], env)
    expect(listed.code).toBe(0)
    expect(listed.stdout).toMatch(/^\d+ +dev .* crm\/fine +- +- /m)
    expect(listed.stdout).not.toMatch(/ prod /)
  })

  it('a definition in a folder without package.json (CommonJS) that imports syncstore loads and runs', async () => {
    const dir = await folder(
      {
        'legacy/syncs/things.ts': sync({
          models: "{ Thing: { type: 'object' } }",
          exec: "async (nango) => { await nango.batchSave([{ id: 'one' }], 'Thing') }",
        }),
      },
      { commonjs: true },
    )
    const key = randomUUID()
    const server = await startServer({
      ...(await database()).env,
      SYNCSTORE_INTEGRATIONS_DIR: dir,
      NANGO_SECRET_KEY_DEV: key,
    })
    const call = async (method: string, url: string, body?: unknown) => {
      const res = await fetch(`${server.url}${url}`, {
        method,
        headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      })
      return { status: res.status, body: (await res.json()) as Record<string, never> }
    }
    const integrations = await call('GET', '/integrations')
    expect(integrations.status).toBe(200)
    expect(integrations.body).toMatchObject({
      data: [
        { unique_key: 'legacy', syncs: [{ name: 'things', frequency: 'every hour', models: ['Thing'] }] },
      ],
    })
    const created = await call('POST', '/connections', { provider_config_key: 'legacy', connection_id: 'c1' })
    expect(created.status).toBe(201)
    const records = await waitFor(
      'the sync ran',
      async () => {
        const res = await fetch(`${server.url}/records?model=Thing`, {
          headers: { authorization: `Bearer ${key}`, 'connection-id': 'c1', 'provider-config-key': 'legacy' },
        })
        const body = (await res.json()) as { records?: { id: string }[] }
        return body.records?.length ? body.records : undefined
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    )
    expect(records.map((r) => r.id)).toEqual(['one'])
    server.kill('SIGTERM')
    expect(await server.waitForExit()).toMatchObject({ code: 0 })
  })
})
