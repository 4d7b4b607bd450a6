import { randomUUID } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { BASE_VARIANT } from '../../src/records/datasets.ts'
import { createProcessDatabase, type ProcessDatabase } from '../helpers/database.ts'
import { killAll, type ServerProcess, startServer } from '../helpers/process.ts'
import { batchSave } from '../helpers/records.ts'

/**
 * SPEC section 7, "slow and idle clients", against a real `syncstore serve` process (issue 8): 150
 * clients ask for a 10 MiB page and never read it, while the server's RSS is sampled and a normal
 * client pages; then slowloris, silent and idle kept-alive sockets, and a slow but steady reader.
 * Sockets are watched from the server's side (/proc/<pid>/fd and /proc/<pid>/net/tcp): a client that
 * does not read never sees the server close its socket.
 */

const KEY = randomUUID()
const IDLE_TIMEOUT_MS = 3000
const REQUEST_TIMEOUT_MS = 3000
const KEEP_ALIVE_TIMEOUT_MS = 2000
/** src/records/routes.ts: how long a page waits for page memory before it is 503. */
const PAGE_WAIT_MS = 2000
/** Node checks the request and headers timeouts once a second (src/app.ts); the rest is load. */
const MARGIN_MS = 3000
/**
 * A refused non-reader is closed right after its 503 (PAGE_WAIT_MS), one that got its page once
 * nothing moved for IDLE_TIMEOUT_MS after the server wrote what the socket took. On top: accepting
 * 150 connections and reading four 10 MiB pages from the embedded database on a busy 2-core machine
 * (measured: the last closed 6.8-7.5 s after the requests were sent).
 */
const NON_READERS_CLOSED_MS = PAGE_WAIT_MS + IDLE_TIMEOUT_MS + 5000

/** 120 records of ~100 KB: a page asking for 10,000 is cut at the 10 MiB page byte budget. */
const RECORDS = 120
const RECORD_CHARS = 100_000
const NON_READERS = 150
const MODEL = 'Blob'
/**
 * Peak RSS growth allowed while 150 clients ask for a 10 MiB page and never read it. Before issue 8
 * it was about 1.1 GB (671 to 1,755 MB); with the timeouts but no page memory budget, +416 MB within
 * 35 s and still rising. With the budget: the page memory (64 MiB; four 10 MiB pages get in), what
 * rendering a page costs on top, PGlite's buffers for the pages it reads and 150 sockets' buffers;
 * measured +65 to +95 MB, so 200 MB leaves room for GC timing and a busy machine.
 */
const MAX_RSS_GROWTH_MB = 200

const MB = 1024 * 1024
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const onLinux = existsSync('/proc/self/status')

let database: ProcessDatabase
let integrationsDir: string
let server: ServerProcess

function rssMb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(match![1]) / 1024
}

/** Remote ports of the TCP connections the process holds open on `port` (not yet closed by it). */
function openConnections(pid: number, port: number): Set<number> {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (match) inodes.add(match[1]!)
    } catch {
      // closed while we looked
    }
  }
  const ports = new Set<number>()
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/)
    if (cols.length < 10 || !inodes.has(cols[9]!)) continue
    const local = parseInt(cols[1]!.split(':')[1]!, 16)
    const remote = parseInt(cols[2]!.split(':')[1]!, 16)
    if (local === port && remote !== 0) ports.add(remote)
  }
  return ports
}

interface Sample {
  at: number
  rssMb: number
  open: Set<number>
}

/** Samples the server every 200 ms until stopped. */
function sampler(pid: number, port: number) {
  const samples: Sample[] = []
  const take = () =>
    samples.push({ at: performance.now(), rssMb: rssMb(pid), open: openConnections(pid, port) })
  take()
  const timer = setInterval(take, 200)
  return {
    samples,
    stop: () => clearInterval(timer),
    peakMb: () => Math.max(...samples.map((s) => s.rssMb)),
    /** When the server had closed every one of `ports` (ms after `since`), or undefined. */
    allClosedAfter(ports: readonly number[], since: number): number | undefined {
      const sample = samples.find((s) => s.at >= since && ports.every((p) => !s.open.has(p)))
      return sample && Math.round(sample.at - since)
    },
  }
}

const requestText = (url: string) =>
  `GET ${url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${KEY}\r\n` +
  `Connection-Id: slow\r\nProvider-Config-Key: acme\r\n\r\n`

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** A client socket, and when it closed (ms after it connected). */
async function probe(): Promise<{ socket: net.Socket; port: number; closedAfter: Promise<number> }> {
  const socket = await connect()
  const start = performance.now()
  socket.on('error', () => {})
  const closedAfter = new Promise<number>((resolve) =>
    socket.once('close', () => resolve(Math.round(performance.now() - start))),
  )
  return { socket, port: socket.localPort!, closedAfter }
}

async function getPage(
  url: string,
): Promise<{ status: number; ms: number; body: { next_cursor: string | null } }> {
  const start = performance.now()
  const res = await fetch(`${server.url}${url}`, {
    headers: { authorization: `Bearer ${KEY}`, 'connection-id': 'slow', 'provider-config-key': 'acme' },
  })
  const body = (await res.json()) as { next_cursor: string | null }
  return { status: res.status, ms: performance.now() - start, body }
}

const percentile = (values: number[], p: number) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!

describe.skipIf(process.env.SYNCSTORE_TEST_DB === 'postgres' || !onLinux)('slow and idle clients', () => {
  beforeAll(async () => {
    database = await createProcessDatabase({ kind: 'embedded' })
    integrationsDir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-integrations-'))
    const sealer = createSealer(null)
    await database.withDb(async (db) => {
      const env = await ensureEnvironment(db.kysely, 'dev')
      const { connection } = await upsertConnection(db.kysely, sealer, env.id, {
        providerConfigKey: 'acme',
        connectionId: 'slow',
      })
      const ds = { connectionPk: connection.id, model: MODEL, variant: BASE_VARIANT }
      for (let i = 0; i < RECORDS; i += 20) {
        const batch = Array.from({ length: 20 }, (_, n) => ({
          id: `r${i + n}`,
          text: `${i + n}:${'abcdefghij'.repeat(RECORD_CHARS / 10)}`,
        }))
        await batchSave(db.kysely, sealer, ds, batch)
      }
    })
    server = await startServer({
      ...database.env,
      NANGO_SECRET_KEY_DEV: KEY,
      // No integrations: no sync workers, whose memory would blur the figures.
      SYNCSTORE_INTEGRATIONS_DIR: integrationsDir,
      SYNCSTORE_IDLE_TIMEOUT_MS: String(IDLE_TIMEOUT_MS),
      SYNCSTORE_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      SYNCSTORE_KEEP_ALIVE_TIMEOUT_MS: String(KEEP_ALIVE_TIMEOUT_MS),
    })
  }, 180_000)

  afterAll(async () => {
    await killAll()
    await database?.destroy()
    if (integrationsDir) await rm(integrationsDir, { recursive: true, force: true })
  })

  it(
    '150 clients that never read a 10 MiB page hold bounded memory, are closed, and a normal client is served',
    {
      timeout: 60_000,
    },
    async () => {
      const freshMb = rssMb(server.pid)
      // One full page read to the end, so the baseline includes what serving one costs at all.
      const full = await getPage(`/records?model=${MODEL}&limit=10000`)
      expect(full.status).toBe(200)
      expect(full.body.next_cursor).not.toBeNull()
      await sleep(500)
      const baselineMb = rssMb(server.pid)

      const watch = sampler(server.pid, server.port)
      const nonReaders = await Promise.all(
        Array.from({ length: NON_READERS }, async () => {
          const socket = await connect()
          // Never read: what the server sends piles up in its socket, as with a stalled client.
          socket.pause()
          socket.on('error', () => {})
          socket.write(requestText(`/records?model=${MODEL}&limit=10000`))
          return socket
        }),
      )
      const sentAt = performance.now()
      const ports = nonReaders.map((s) => s.localPort!)
      // One more large page, from a client that would read it: refused like the rest, in the one
      // error body, with the hint to retry.
      const busy = fetch(`${server.url}/records?model=${MODEL}&limit=9999`, {
        headers: { authorization: `Bearer ${KEY}`, 'connection-id': 'slow', 'provider-config-key': 'acme' },
      }).then(async (res) => ({
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: (await res.json()) as unknown,
      }))

      // Meanwhile a normal client pages through small pages, again and again.
      const latencies: number[] = []
      const statuses: number[] = []
      const deadline = sentAt + NON_READERS_CLOSED_MS
      let cursor: string | null = null
      while (performance.now() < deadline && watch.allClosedAfter(ports, sentAt) === undefined) {
        const url = `/records?model=${MODEL}&limit=5${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
        const page = await getPage(url)
        latencies.push(page.ms)
        statuses.push(page.status)
        cursor = page.body.next_cursor
      }
      await sleep(400)
      watch.stop()
      nonReaders.forEach((s) => s.destroy())

      const closedAfter = watch.allClosedAfter(ports, sentAt)
      const stillOpen = ports.filter((p) => watch.samples.at(-1)!.open.has(p)).length
      // How many of the non-readers' sockets the server still held, each second.
      const timeline = watch.samples
        .filter((s, i) => s.at >= sentAt && i % 5 === 0)
        .map(
          (s) =>
            `${((s.at - sentAt) / 1000).toFixed(1)}s:${ports.filter((p) => s.open.has(p)).length}/${Math.round(s.rssMb)}MB`,
        )
        .join(' ')
      console.log(`[slow clients] open non-reader sockets / RSS over time: ${timeline}`)
      const peakMb = watch.peakMb()
      // A non-reader that got its page is never logged: its response never finished.
      const refused = server
        .logs()
        .filter(
          (l) => l.msg === 'request' && String(l.url).includes('limit=10000') && l.status === 503,
        ).length
      console.log(
        `[slow clients] RSS fresh ${freshMb.toFixed(0)} MB, baseline after one full page ${baselineMb.toFixed(0)} MB, ` +
          `peak with ${NON_READERS} non-reading clients ${peakMb.toFixed(0)} MB (+${(peakMb - baselineMb).toFixed(0)} MB); ` +
          `${refused} of them were answered 503 server_busy, ${NON_READERS - refused} were sent their page; ` +
          `the server had closed all their sockets after ` +
          `${closedAfter ?? 'never'} ms (${stillOpen} still open at the end); normal client: ${statuses.length} pages ` +
          `of 5 records, latency p50 ${percentile(latencies, 0.5).toFixed(0)} ms, ` +
          `p95 ${percentile(latencies, 0.95).toFixed(0)} ms, max ${Math.max(...latencies).toFixed(0)} ms`,
      )

      expect(peakMb - baselineMb).toBeLessThan(MAX_RSS_GROWTH_MB)
      expect(closedAfter).toBeDefined()
      expect(closedAfter!).toBeLessThan(NON_READERS_CLOSED_MS)
      expect(refused).toBeGreaterThan(NON_READERS / 2)
      expect(await busy).toEqual({
        status: 503,
        retryAfter: '2',
        body: { error: { code: 'server_busy', message: expect.any(String) } },
      })
      // Served throughout: before the budget, its one request waited 35 s behind the 150 pages.
      expect(statuses.length).toBeGreaterThanOrEqual(10)
      expect(statuses.every((s) => s === 200)).toBe(true)
      expect(percentile(latencies, 0.5)).toBeLessThan(1000)
    },
  )

  it(
    'closes slowloris, silent and idle kept-alive sockets within their timeouts, while a slow reader is served',
    {
      timeout: 60_000,
    },
    async () => {
      // A slow but steady reader: a 10 MiB page at about 1 MB/s outlasts the idle timeout twice over;
      // Node holds the timeout off while a write makes progress, so it gets the whole page.
      const reader = (async () => {
        const socket = await connect()
        const start = performance.now()
        let received = 0
        let windowBytes = 0
        let head = ''
        let expected = Infinity
        const throttle = setInterval(() => {
          windowBytes = 0
          socket.resume()
        }, 100)
        const complete = new Promise<boolean>((resolve) => {
          socket.on('data', (chunk: Buffer) => {
            received += chunk.length
            windowBytes += chunk.length
            if (windowBytes >= 100_000) socket.pause()
            if (expected === Infinity) {
              head += chunk.toString('latin1', 0, Math.min(chunk.length, 4096))
              const end = head.indexOf('\r\n\r\n')
              const length = /content-length: (\d+)/i.exec(head)
              if (end >= 0 && length) expected = end + 4 + Number(length[1])
            }
            if (received >= expected) resolve(true)
          })
          socket.once('close', () => resolve(false))
        })
        socket.write(requestText(`/records?model=${MODEL}&limit=10000`))
        await complete
        clearInterval(throttle)
        socket.destroy()
        return { complete: await complete, bytes: received, ms: Math.round(performance.now() - start) }
      })()

      const slowloris = await Promise.all(Array.from({ length: 5 }, () => probe()))
      const trickle = setInterval(() => slowloris.forEach((p) => p.socket.write('x')), 300)
      slowloris.forEach((p) =>
        p.socket.write(`GET /records?model=${MODEL} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: `),
      )
      const silent = await Promise.all(Array.from({ length: 5 }, () => probe()))
      const keptAlive = await Promise.all(
        Array.from({ length: 3 }, async () => {
          const p = await probe()
          p.socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
          p.socket.resume()
          return p
        }),
      )
      const [slowlorisMs, silentMs, keptAliveMs] = await Promise.all(
        [slowloris, silent, keptAlive].map((group) => Promise.all(group.map((p) => p.closedAfter))),
      )
      clearInterval(trickle)
      const slow = await reader
      console.log(
        `[slow clients] closed by the server after (ms): slowloris ${slowlorisMs!.join(', ')} ` +
          `(request timeout ${REQUEST_TIMEOUT_MS}); silent ${silentMs!.join(', ')} (idle ${IDLE_TIMEOUT_MS}, ` +
          `headers ${REQUEST_TIMEOUT_MS}); idle kept-alive ${keptAliveMs!.join(', ')} ` +
          `(keep-alive ${KEEP_ALIVE_TIMEOUT_MS}); slow reader got ${(slow.bytes / MB).toFixed(1)} MiB ` +
          `in ${slow.ms} ms, ${slow.complete ? 'complete' : 'CUT OFF'}`,
      )

      for (const ms of slowlorisMs!) expect(ms).toBeLessThan(REQUEST_TIMEOUT_MS + MARGIN_MS)
      const silentTimeout = Math.min(IDLE_TIMEOUT_MS, REQUEST_TIMEOUT_MS)
      for (const ms of silentMs!) expect(ms).toBeLessThan(silentTimeout + MARGIN_MS)
      for (const ms of keptAliveMs!) expect(ms).toBeLessThan(KEEP_ALIVE_TIMEOUT_MS + MARGIN_MS)
      expect(slow.complete).toBe(true)
      expect(slow.ms).toBeGreaterThan(IDLE_TIMEOUT_MS * 2)
    },
  )
})
