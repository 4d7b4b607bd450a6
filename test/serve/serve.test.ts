import { randomUUID } from 'node:crypto'

import { afterAll, describe, expect, it } from 'vitest'

import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, runCli, type ServerProcess, startServer, UUID_V4 } from '../helpers/process.ts'

/** `syncstore serve` as a user starts it: the real process, on a database of its own. */

const databases: ProcessDatabase[] = []
afterAll(async () => {
  await killAll()
  await Promise.all(databases.map((d) => d.destroy()))
})

async function freshDatabase(options: { empty?: boolean } = {}): Promise<ProcessDatabase> {
  const database = await createProcessDatabase(options)
  databases.push(database)
  return database
}

const getJson = async (url: string, key?: string) => {
  const res = await fetch(url, { headers: key ? { authorization: `Bearer ${key}` } : {} })
  return { status: res.status, body: (await res.json()) as unknown }
}

async function stop(server: ServerProcess): Promise<void> {
  server.kill('SIGTERM')
  expect(await server.waitForExit()).toEqual({ code: 0, signal: null })
}

describe('first start and restart', { timeout: 180_000 }, () => {
  let database: ProcessDatabase
  let key: string
  /** Spawn to "listening" as the test sees it, and the server's own figure (config parsed to listening). */
  const startup: Record<string, string> = {}
  const measure = (server: ServerProcess) =>
    `${server.startupMs} ms (server's own startupMs: ${server.logs().find((l) => l.startupMs)?.startupMs} ms)`

  afterAll(() => {
    // A figure to watch, not a pass/fail threshold: it depends on the machine and its load.
    console.log(
      `[${database?.kind}] spawn to "listening": first start on an empty database ${startup.first}, ` +
        `restart ${startup.restart}`,
    )
  })

  it('a first start migrates an empty database and prints a dev key once, with a curl line that works', async () => {
    database = await freshDatabase({ empty: true })
    const server = await startServer(database.env)
    startup.first = measure(server)

    expect(server.logs()).toContainEqual(
      expect.objectContaining({
        msg: 'applied migrations',
        migrations: expect.arrayContaining(['0001_foundation']),
      }),
    )
    // Written to stderr just after the "listening" line on stdout; the two pipes are not ordered.
    await server.waitForStderr(/^ {2}curl .*\n/m)
    const banner = server.stderr()
    expect(banner).toContain('First start: created a secret key for the dev environment')
    key = /shown this once:\n\n {2}(\S+)\n/.exec(banner)![1]!
    expect(key).toMatch(UUID_V4)
    // Printed on stderr only, so a log collector reading stdout never stores it.
    expect(server.stdout()).not.toContain(key)

    const curl = /^ {2}curl -s (\S+) -H "Authorization: Bearer (\S+)"$/m.exec(banner)
    expect(curl).not.toBeNull()
    const [, curlUrl, curlKey] = curl!
    expect(curlKey).toBe(key)
    expect(curlUrl).toBe(`http://localhost:${server.port}/environment-variables`)
    expect(await getJson(curlUrl!, curlKey)).toEqual({ status: 200, body: [] })

    // Forwarded to the server on the embedded database, run directly on Postgres.
    const set = await runCli(['env-vars', 'set', 'KEPT', 'across restarts'], database.env)
    expect(set.code, set.stderr).toBe(0)
    await stop(server)
  })

  it('a restart keeps the data and does not print a key again', async () => {
    expect(key, 'needs the first start').toBeDefined()
    const server = await startServer(database.env)
    startup.restart = measure(server)

    expect(await getJson(`${server.url}/environment-variables`, key)).toEqual({
      status: 200,
      body: [{ name: 'KEPT', value: 'across restarts' }],
    })
    await stop(server)
    // Checked once the process is gone, when its output is complete.
    expect(server.stderr()).not.toContain('First start')
    expect(server.stderr()).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-4/)
    expect(server.logs()).not.toContainEqual(expect.objectContaining({ msg: 'applied migrations' }))
  })
})

describe('configuration', { timeout: 120_000 }, () => {
  it('NANGO_SECRET_KEY_DEV works as a full-access key, and then no key is generated', async () => {
    const database = await freshDatabase()
    const devKey = randomUUID()
    const server = await startServer({ ...database.env, NANGO_SECRET_KEY_DEV: devKey })

    expect(await getJson(`${server.url}/environment-variables`, devKey)).toEqual({ status: 200, body: [] })
    const connections = await getJson(`${server.url}/connections`, devKey)
    expect(connections).toMatchObject({ status: 200, body: { connections: expect.any(Array) } })
    const other = await getJson(`${server.url}/environment-variables`, randomUUID())
    expect(other.status).toBe(401)
    expect(other.body).toMatchObject({ error: { code: 'unknown_account' } })

    expect(await getJson(`${server.url}/health`)).toEqual({ status: 200, body: { status: 'ok' } })
    expect(await getJson(`${server.url}/ready`)).toEqual({ status: 200, body: { status: 'ready' } })
    await stop(server)
    expect(server.stderr()).not.toContain('First start')
    expect(server.stdout() + server.stderr()).not.toContain(devKey)
  })

  it('invalid configuration exits non-zero, reporting every problem in one message', async () => {
    const database = await freshDatabase()
    const result = await runCli(['serve'], { ...database.env, PORT: 'abc', LOG_LEVEL: 'loud' })

    expect(result.code).not.toBe(0)
    expect(result.stdout).toBe('')
    expect(result.stderr.match(/error:/g)).toHaveLength(1)
    expect(result.stderr).toMatch(/^error: Invalid configuration:\n/)
    expect(result.stderr).toContain('PORT must be an integer from 0 to 65535 (got "abc")')
    expect(result.stderr).toContain('LOG_LEVEL must be one of')
  })
})
