import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { adminRows, createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, type ServerProcess, startServer } from '../helpers/process.ts'

/**
 * Graceful shutdown of the real process (SPEC: ordered and bounded; a second signal exits at once).
 * An import whose body is only half sent is a request in flight that the test controls exactly.
 */

const KEY = randomUUID()
/** Short enough to keep the suite quick, long enough that "exited before the grace ran out" means something. */
const GRACE_MS = 8_000

const databases: ProcessDatabase[] = []
const sockets: net.Socket[] = []
let noIntegrations: string | undefined
afterAll(async () => {
  sockets.forEach((socket) => socket.destroy())
  await killAll()
  await Promise.all(databases.map((d) => d.destroy()))
  if (noIntegrations) await rm(noIntegrations, { recursive: true, force: true })
})

async function startFresh(): Promise<{ database: ProcessDatabase; server: ServerProcess }> {
  const database = await createProcessDatabase()
  databases.push(database)
  // No sync definitions (not even the bundled example): only HTTP requests are in flight here, so
  // the timings below are the HTTP shutdown's alone.
  noIntegrations ??= await mkdtemp(path.join(os.tmpdir(), 'syncstore-no-integrations-'))
  const server = await startServer({
    ...database.env,
    NANGO_SECRET_KEY_DEV: KEY,
    SYNCSTORE_SHUTDOWN_GRACE_MS: String(GRACE_MS),
    SYNCSTORE_INTEGRATIONS_DIR: noIntegrations,
  })
  return { database, server }
}

interface RawResponse {
  status: number
  headers: string
  body: string
}

function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * POST /connections over a raw socket, stopping half-way through the body. `Expect: 100-continue`
 * makes the server confirm it has parsed the headers, so the request is in flight, not merely queued.
 */
async function startSlowImport(port: number, connectionId: string) {
  const body = JSON.stringify({
    provider_config_key: 'github',
    connection_id: connectionId,
    metadata: { n: 1 },
  })
  const socket = net.connect(port, '127.0.0.1')
  sockets.push(socket)
  let received = ''
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk))
  socket.on('error', () => {}) // a reset shows up as 'close'
  socket.write(
    [
      'POST /connections HTTP/1.1',
      'Host: 127.0.0.1',
      `Authorization: Bearer ${KEY}`,
      'Content-Type: application/json',
      `Content-Length: ${Buffer.byteLength(body)}`,
      'Expect: 100-continue',
      '',
      '',
    ].join('\r\n'),
  )
  const continued = new Promise<void>((resolve) => {
    const check = () => received.includes('100 Continue\r\n\r\n') && (socket.off('data', check), resolve())
    socket.on('data', check)
  })
  await bounded(continued, 10_000, '100 Continue')
  const half = Math.floor(body.length / 2)
  socket.write(body.slice(0, half))

  return {
    socket,
    ended,
    /** Sends the rest of the body and reads the response, which ends the connection while closing. */
    async finish(): Promise<RawResponse> {
      socket.write(body.slice(half))
      await bounded(ended, 10_000, 'the rest of the response')
      const final = received.slice(received.indexOf('100 Continue\r\n\r\n') + '100 Continue\r\n\r\n'.length)
      const [head = '', text = ''] = final.split('\r\n\r\n')
      return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), headers: head, body: text }
    },
  }
}

/** A new request: 'refused' when nothing listens any more, else its status. */
async function tryNewRequest(url: string): Promise<'refused' | number> {
  try {
    return (await fetch(`${url}/health`, { signal: AbortSignal.timeout(5_000) })).status
  } catch (err) {
    const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code
    if (code === 'ECONNREFUSED' || code === 'ECONNRESET') return 'refused'
    throw err
  }
}

/** Postgres: the server's sessions are gone once it has exited (the pool was closed or died with it). */
async function expectNoSessionsLeft(database: ProcessDatabase): Promise<void> {
  if (database.kind !== 'postgres') return
  const sessions = () =>
    adminRows<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'syncstore'`,
      [database.name],
    )
  // A backend notices its client has gone within milliseconds; allow 5 s on a loaded machine.
  const deadline = Date.now() + 5_000
  while ((await sessions()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  expect(await sessions()).toEqual([])
}

describe('graceful shutdown of the real process', { timeout: 120_000 }, () => {
  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s lets the request in flight finish, refuses new ones, then exits 0',
    async (signal) => {
      const { database, server } = await startFresh()
      if (database.kind === 'postgres') {
        const open = await adminRows(
          `SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name = 'syncstore'`,
          [database.name],
        )
        expect(open.length).toBeGreaterThan(0)
      }
      const connectionId = `in-flight-${signal.toLowerCase()}`
      const slow = await startSlowImport(server.port, connectionId)

      const signalledAt = performance.now()
      server.kill(signal)
      await server.waitForLog((line) => line.msg === 'shutting down' && line.signal === signal, 10_000)
      // Held open by the unfinished request.
      await expect(server.waitForExit(300)).rejects.toThrow(/still running/)
      expect(['refused', 503]).toContain(await tryNewRequest(server.url))

      const response = await slow.finish()
      expect(response.status).toBe(201)
      expect(JSON.parse(response.body)).toMatchObject({ connection_id: connectionId, metadata: { n: 1 } })
      // Told to close, so a keep-alive client does not hold the shutdown open.
      expect(response.headers).toMatch(/^connection: close$/im)

      expect(await server.waitForExit(GRACE_MS + 5_000)).toEqual({ code: 0, signal: null })
      expect(performance.now() - signalledAt).toBeLessThan(GRACE_MS)
      expect(server.logs().map((line) => line.msg)).toContain('shutdown complete')
      await expectNoSessionsLeft(database)

      // The import was committed before the database closed.
      const stored = await database.withDb((db) =>
        db.kysely
          .selectFrom('connections')
          .select('connection_id')
          .where('connection_id', '=', connectionId)
          .execute(),
      )
      expect(stored).toEqual([{ connection_id: connectionId }])
    },
  )

  it('a second SIGTERM while a request holds the shutdown exits at once, non-zero', async () => {
    const { database, server } = await startFresh()
    const slow = await startSlowImport(server.port, 'never-finished')

    server.kill('SIGTERM')
    await server.waitForLog((line) => line.msg === 'shutting down', 10_000)
    await expect(server.waitForExit(500)).rejects.toThrow(/still running/)

    const secondAt = performance.now()
    server.kill('SIGTERM')
    const exit = await server.waitForExit(5_000)
    expect(exit.code).not.toBe(0)
    expect(exit.code).not.toBeNull()
    // Far sooner than the grace period would have allowed.
    expect(performance.now() - secondAt).toBeLessThan(GRACE_MS / 2)
    await bounded(slow.ended, 5_000, 'the unfinished request to be cut')
    await expectNoSessionsLeft(database)
  })
})
