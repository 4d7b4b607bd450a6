import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { afterAll, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, startServer } from '../helpers/process.ts'
import { waitFor } from '../helpers/server.ts'

/** `syncstore serve --watch`: an edited sync file is deployed and its next run uses it, no restart. */

const cleanup: (() => Promise<void>)[] = []
afterAll(async () => {
  await killAll()
  for (const fn of cleanup) await fn()
})

const source = (version: number) => `import { createSync } from 'syncstore'
export default createSync({
  description: 'Writes its version',
  frequency: 'every day',
  models: { Version: { type: 'object', properties: { id: { type: 'string' }, version: { type: 'number' } } } },
  exec: async (nango) => { await nango.batchSave([{ id: 'v', version: ${version} }], 'Version') },
})
`

it(
  'serve --watch deploys an edited sync within seconds, and the next run executes it',
  { timeout: 180_000 },
  async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-watch-'))
    const database: ProcessDatabase = await createProcessDatabase()
    cleanup.push(
      () => rm(dir, { recursive: true, force: true }),
      () => database.destroy(),
    )
    await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n')
    const file = path.join(dir, 'app', 'syncs', 'version.ts')
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, source(1))

    const key = randomUUID()
    const server = await startServer(
      { ...database.env, SYNCSTORE_INTEGRATIONS_DIR: dir, NANGO_SECRET_KEY_DEV: key },
      { args: ['--watch'] },
    )
    const call = async (method: string, url: string, body?: unknown) => {
      const res = await fetch(`${server.url}${url}`, {
        method,
        headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      })
      return (await res.json()) as Record<string, never>
    }
    const versionSynced = (version: number) =>
      waitFor(
        `version ${version} synced`,
        async () => {
          const res = await fetch(`${server.url}/records?model=Version`, {
            headers: { authorization: `Bearer ${key}`, 'connection-id': 'c1', 'provider-config-key': 'app' },
          })
          const body = (await res.json()) as { records?: { version: number }[] }
          return body.records?.[0]?.version === version
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      )

    await call('POST', '/connections', { provider_config_key: 'app', connection_id: 'c1' })
    await versionSynced(1)

    const edited = Date.now()
    await writeFile(file, source(2))
    const deployed = await server.waitForLog(
      (line) => line.msg === 'deployed' && line.environment === 'dev' && Number(line.deploymentId) > 1,
    )
    expect(deployed).toMatchObject({ changed: ['app/version'], added: [], removed: [] })
    const deployMs = Date.now() - edited
    expect(
      await call('POST', '/sync/trigger', {
        provider_config_key: 'app',
        connection_id: 'c1',
        syncs: ['version'],
      }),
    ).toEqual({
      success: true,
    })
    await versionSynced(2)
    console.log(
      `serve --watch: edit to deployed ${deployMs} ms, edit to records of the new version ${Date.now() - edited} ms`,
    )

    // A broken edit is refused with its file named, and the working version stays deployed.
    await writeFile(file, source(3).replace('exec:', 'exec: 42, nothing:'))
    const refused = await server.waitForLog((line) => line.msg === 'sync file refused')
    expect(String(refused.file)).toBe(file)
    expect(String(refused.reason)).toContain('exec must be a function')
    const integrations = (await call('GET', '/integrations')) as unknown as {
      data: { syncs: { name: string }[] }[]
    }
    expect(integrations.data[0]!.syncs.map((s) => s.name)).toEqual(['version'])
    server.kill('SIGTERM')
    expect(await server.waitForExit()).toMatchObject({ code: 0 })
  },
)
