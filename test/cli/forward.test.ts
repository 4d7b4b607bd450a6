import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { acquireEmbeddedLock, lockHolder, lockPath } from '../../src/db/embedded-lock.ts'
import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { expectOneLineError } from '../helpers/cli-output.ts'
import {
  type CliResult,
  killAll,
  runCli,
  type ServerProcess,
  startIdleProcess,
  startServer,
  UUID_V4,
} from '../helpers/process.ts'

/**
 * Only one process may open an embedded data folder. While `syncstore serve` holds it, other
 * `syncstore` commands hand their arguments to the server (src/cli/forward.ts), so they work as
 * if they had opened the database themselves. Postgres has no such lock: nothing to test there.
 */
describe.skipIf(process.env.SYNCSTORE_TEST_DB === 'postgres')(
  'CLI commands while the server runs (embedded database)',
  { timeout: 120_000 },
  () => {
    let database: ProcessDatabase
    let server: ServerProcess
    let dataDir: string
    let key: string

    beforeAll(async () => {
      database = await createProcessDatabase({ kind: 'embedded' })
      dataDir = database.env.SYNCSTORE_DATA_DIR!
      server = await startServer(database.env)
    })
    afterAll(async () => {
      await killAll()
      await database?.destroy()
    })

    const cli = (...args: string[]) => runCli(args, database.env)
    const get = async (path: string) => {
      const res = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${key}` } })
      return { status: res.status, body: (await res.json()) as unknown }
    }

    it('keys create is run by the server, and the new key works on its HTTP API at once', async () => {
      // The server holds the lock and names its command socket in it; a CLI that ignored it and
      // opened the folder itself would fail with "in use".
      expect(await lockHolder(dataDir)).toMatchObject({ pid: server.pid, socket: expect.any(String) })

      const created = await cli('keys', 'create', '--env', 'dev')
      expect(created.code, created.stderr).toBe(0)
      expect(created.stdout).toMatch(/^[^\n]+\n$/)
      key = created.stdout.trim()
      expect(key).toMatch(UUID_V4)
      expect(created.stderr).toContain('for environment dev')

      expect(await get('/environment-variables')).toEqual({ status: 200, body: [] })
    })

    it('env-vars set is visible through GET /environment-variables', async () => {
      const set = await cli('env-vars', 'set', 'FORWARDED', 'through the socket')
      expect(set.code, set.stderr).toBe(0)
      expect(set.stderr).toContain('Set FORWARDED in environment dev')

      expect(await get('/environment-variables')).toEqual({
        status: 200,
        body: [{ name: 'FORWARDED', value: 'through the socket' }],
      })
    })

    it('connections create is visible through GET /connections, without credentials', async () => {
      const created = await cli(
        'connections',
        'create',
        '--integration',
        'hubspot',
        '--connection-id',
        'fwd-1',
        '--metadata',
        '{"region":"eu"}',
        '--credentials',
        '{"type":"API_KEY","apiKey":"sk-forwarded"}',
      )
      expect(created.code, created.stderr).toBe(0)

      const { status, body } = await get('/connections')
      expect(status).toBe(200)
      expect(JSON.stringify(body)).not.toContain('sk-forwarded')
      // (The embedded server may also have created the bundled example's connection.)
      expect((body as { connections: unknown[] }).connections).toContainEqual(
        expect.objectContaining({
          connection_id: 'fwd-1',
          provider_config_key: 'hubspot',
          metadata: { region: 'eu' },
        }),
      )
    })

    it('a forwarded command keeps its exit code and one-line error', async () => {
      const bad = await cli('connections', 'create', '--integration', 'hubspot', '--metadata', '{')
      expect(bad.code).toBe(2)
      expect(bad.stdout).toBe('')
      expect(bad.stderr).toMatch(/^error: --connection-id is required\n$/)

      const unknown = await cli('env-vars', 'list', '--env', 'nowhere')
      expect(unknown.code).toBe(1)
      expect(unknown.stderr).toMatch(/^error: unknown environment "nowhere"/)
    })

    it('after the server stops, the CLI opens the folder itself, unless another process holds it', async () => {
      server.kill('SIGTERM')
      expect(await server.waitForExit()).toEqual({ code: 0, signal: null })
      expect(await lockHolder(dataDir)).toBeUndefined()

      // A process that is not a server (no command socket) holds the lock: nothing to forward to.
      const other = startIdleProcess()
      try {
        await acquireEmbeddedLock(dataDir, { pid: other.pid })
        const blocked = await cli('env-vars', 'list')
        expect(blocked.code).toBe(1)
        expect(blocked.stdout).toBe('')
        expect(blocked.stderr).toBe(`error: The embedded database is in use by process ${other.pid}\n`)
      } finally {
        await other.kill()
      }

      // Its lock file is still there, naming a dead process: the CLI takes it over.
      expect(await lockHolder(dataDir)).toBeUndefined()
      const direct = await cli('env-vars', 'list', '--json')
      expect(direct.code, direct.stderr).toBe(0)
      expect(JSON.parse(direct.stdout)).toEqual([{ name: 'FORWARDED', value: 'through the socket' }])
      expect(await lockHolder(dataDir)).toBeUndefined()
    })
  },
)

/**
 * A server that dies while a CLI command waits on it (SIGKILL at any moment): the command says so
 * in one line on stderr and exits 1; never a stack trace. Each case names a fake server in the lock.
 */
describe.skipIf(process.env.SYNCSTORE_TEST_DB === 'postgres')(
  'CLI commands whose server died (embedded database)',
  { timeout: 120_000 },
  () => {
    let database: ProcessDatabase
    let dataDir: string
    const socketPath = path.join(os.tmpdir(), `syncstore-test-${process.pid}-${Date.now()}.sock`)

    beforeAll(async () => {
      database = await createProcessDatabase({ kind: 'embedded', empty: true })
      dataDir = database.env.SYNCSTORE_DATA_DIR!
    })
    afterAll(async () => {
      await killAll()
      await rm(socketPath, { force: true })
      await rm(lockPath(dataDir), { force: true })
      await database?.destroy()
    })

    /** Names `pid` and the socket in the lock, as a running server would, then runs a command. */
    async function cliAgainst(pid: number): Promise<CliResult> {
      await rm(lockPath(dataDir), { force: true })
      await acquireEmbeddedLock(dataDir, { pid, socket: socketPath })
      return runCli(['env-vars', 'set', 'NAME', 'value'], database.env)
    }

    it('a server killed (SIGKILL) while it runs the command', async () => {
      // A stand-in server in its own process: it reads the command, then dies on the spot.
      const script = `
        const server = require('node:net').createServer((socket) =>
          socket.once('data', () => process.kill(process.pid, 'SIGKILL')))
        server.listen(process.argv[1], () => console.log('listening'))`
      const child = spawn(process.execPath, ['-e', script, socketPath], {
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const exited = once(child, 'exit')
      try {
        await once(child.stdout, 'data')
        const result = await cliAgainst(child.pid!)
        expectOneLineError(result, 1, /the running server stopped before answering/)
        expect(await exited).toEqual([null, 'SIGKILL'])
      } finally {
        child.kill('SIGKILL')
        await rm(socketPath, { force: true })
      }
    })

    it('a server that closes the command socket without answering', async () => {
      const server = net.createServer((socket) => socket.once('data', () => socket.end()))
      await new Promise<void>((resolve) => server.listen(socketPath, resolve))
      try {
        // The test process stands in for the server's (live) process.
        expectOneLineError(await cliAgainst(process.pid), 1, /the running server stopped before answering/)
      } finally {
        await new Promise((resolve) => server.close(resolve))
      }
    })

    it('a live holder whose command socket is gone', async () => {
      await rm(socketPath, { force: true })
      expectOneLineError(
        await cliAgainst(process.pid),
        1,
        /could not reach the running server at .*\(ENOENT\)/,
      )
    })
  },
)
