import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { Nango } from '@nangohq/node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { type CliResult, killAll, runCli, type ServerProcess, startServer } from '../helpers/process.ts'
import { expectOneLineError } from '../helpers/cli-output.ts'

/**
 * `syncstore integrations` as a user runs it (the real binary, one process per command) and the
 * integrations it makes as a separately started `syncstore serve` shows them over HTTP.
 */

const KEY = 'b4a3f0e2-6c1d-4e8f-9a7b-2d5c8e1f0a93'

let database: ProcessDatabase
let integrationsDir: string
let server: ServerProcess | undefined

beforeAll(async () => {
  database = await createProcessDatabase()
  // An empty folder: serve deploys it at start, and must leave API-made integrations alone.
  integrationsDir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-integrations-cli-'))
})
afterAll(async () => {
  await killAll()
  await database?.destroy()
  if (integrationsDir) await rm(integrationsDir, { recursive: true, force: true })
})

const cli = (...args: string[]) => runCli(args, database.env)

function expectOk(result: CliResult): void {
  expect(result.code, result.stderr).toBe(0)
}

// One process per step, and on the embedded database one at a time (they share its lock).
describe('syncstore integrations', { timeout: 240_000 }, () => {
  it('creates, lists and updates integrations, and refuses bad input in one line', async () => {
    const created = await cli(
      'integrations',
      'create',
      'gh',
      '--provider',
      'github',
      '--display-name',
      'GitHub',
      '--client-id',
      'cid-1',
      '--client-secret',
      'csecret-1',
      '--scopes',
      'repo,user',
    )
    expectOk(created)
    expect(created.stderr).toMatch(/Created integration gh \(provider github\) in environment dev/)
    expect(created.stderr).not.toContain('csecret-1')

    expectOk(await cli('integrations', 'create', 'notes', '--provider', 'notion'))
    expectOneLineError(
      await cli('integrations', 'create', 'gh', '--provider', 'slack'),
      1,
      /Unique key already exists/,
    )
    expectOneLineError(await cli('integrations', 'create', 'x'), 2, /--provider is required/)
    expectOneLineError(
      await cli('integrations', 'create', 'x', '--provider', 'git hub'),
      2,
      /^error: provider: /,
    )
    expectOneLineError(
      await cli('integrations', 'create', 'x', '--provider', 'github', '--client-id', 'only-id'),
      2,
      /credentials/,
    )
    expectOneLineError(
      await cli('integrations', 'update', 'nope', '--display-name', 'N'),
      1,
      /Integration "nope" does not exist/,
    )

    // Only the scopes change: the stored client id and secret stay.
    expectOk(await cli('integrations', 'update', 'notes', '--display-name', 'Notion notes'))
    expectOk(await cli('integrations', 'update', 'gh', '--scopes', 'repo'))

    const list = await cli('integrations', 'list', '--json')
    expectOk(list)
    const rows = JSON.parse(list.stdout) as Record<string, unknown>[]
    expect(rows.map((r) => [r.uniqueKey, r.provider, r.displayName, r.hasCredentials])).toEqual([
      ['gh', 'github', 'GitHub', true],
      ['notes', 'notion', 'Notion notes', false],
    ])
    expect(list.stdout).not.toContain('cid-1')
    const table = await cli('integrations', 'list')
    expectOk(table)
    expect(table.stdout).toMatch(/^KEY +PROVIDER +DISPLAY NAME +CREDENTIALS +CREATED BY\n/)
    expect(table.stdout).toMatch(/\ngh +github +GitHub +yes +api\n/)
  })

  it('a separately started server shows them, and deleting one over HTTP removes its connections', async () => {
    server = await startServer({
      ...database.env,
      NANGO_SECRET_KEY_DEV: KEY,
      SYNCSTORE_INTEGRATIONS_DIR: integrationsDir,
    })
    const nango = new Nango({ host: server.url, secretKey: KEY })

    const { configs } = await nango.listIntegrations()
    expect(configs.map((c) => [c.unique_key, c.provider, c.display_name])).toEqual([
      ['gh', 'github', 'GitHub'],
      ['notes', 'notion', 'Notion notes'],
    ])
    const { data } = await nango.getIntegration({ uniqueKey: 'gh' }, { include: ['credentials'] })
    expect(data.credentials).toEqual({
      type: 'OAUTH2',
      client_id: 'cid-1',
      client_secret: 'csecret-1',
      scopes: 'repo',
    })

    for (const [pck, id] of [
      ['gh', 'gh-1'],
      ['gh', 'gh-2'],
      ['notes', 'notes-1'],
    ]) {
      const res = await fetch(`${server.url}/connections`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ provider_config_key: pck, connection_id: id }),
      })
      expect(res.status).toBe(201)
    }

    const deleted = await nango.deleteIntegration('gh')
    expect(deleted.data).toEqual({ success: true })
    const { connections } = await nango.listConnections()
    expect(connections.map((c) => c.connection_id)).toEqual(['notes-1'])

    // The CLI sees the same database (forwarded to the server on the embedded one).
    const list = await cli('integrations', 'list', '--json')
    expectOk(list)
    expect((JSON.parse(list.stdout) as { uniqueKey: string }[]).map((r) => r.uniqueKey)).toEqual(['notes'])

    const removed = await cli('integrations', 'delete', 'notes')
    expectOk(removed)
    expect(removed.stderr).toMatch(/Deleted integration notes from environment dev, with 1 connection\(s\)/)
    expect((await nango.listIntegrations()).configs).toEqual([])
    expect((await nango.listConnections()).connections).toEqual([])
    expectOneLineError(await cli('integrations', 'delete', 'notes'), 1, /Integration does not exist/)
  })
})
