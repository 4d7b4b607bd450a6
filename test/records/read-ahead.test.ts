import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { deleteConnection, upsertConnection } from '../../src/connections/store.ts'
import { resetDatasets } from '../../src/records/datasets.ts'
import { decodeCursor, encodeCursor } from '../../src/records/cursor.ts'
import { PageMemory } from '../../src/records/page-memory.ts'
import { ReadAhead, type ReadAheadOptions, type ReadAheadOutcome } from '../../src/records/read-ahead.ts'
import type { Page as ReadPage, PageQuery, PageTarget } from '../../src/records/read.ts'
import { runRetention } from '../../src/records/retention.ts'
import { bearer, startTestApp, type TestApp } from '../helpers/app.ts'
import {
  batchDelete,
  batchSave,
  batchUpdate,
  pruneRecords,
  trackDeletesEnd,
  trackDeletesStart,
} from '../helpers/records.ts'
import { waitFor } from '../helpers/server.ts'

/**
 * GET /records reads the page after the one it served before its reader asks for it
 * (src/records/read-ahead.ts), and serves it only if its dataset has not changed since. Every
 * answer must be what a read at that moment returns: here each way of changing a dataset lands
 * between the read-ahead and the request, and the request must see it.
 */

type Page = {
  next_cursor: string | null
  records: { id: string; _nango_metadata: Record<string, unknown> }[]
}

const PCK = 'crm'
let t: TestApp
let conn: number

const ds = (model: string) => ({ connectionPk: conn, model, variant: 'base' })
const ids = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `r${String(from + i).padStart(2, '0')}`)

async function get(model: string, cursor?: string | null, connectionId = 'c1') {
  return t.app.inject({
    url: `/records?model=${model}&limit=10${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    headers: { ...bearer(t.keys.dev), 'connection-id': connectionId, 'provider-config-key': PCK },
  })
}
async function page(model: string, cursor?: string | null, connectionId?: string): Promise<Page> {
  const res = await get(model, cursor, connectionId)
  expect(res.statusCode, res.body).toBe(200)
  return res.json()
}
const idsOf = (p: Page) => p.records.map((r) => r.id)

async function outcomes(): Promise<Record<ReadAheadOutcome, number>> {
  const metric = await t.metrics!.registry.getSingleMetric('syncstore_records_read_ahead_total')!.get()
  const count = (outcome: string) => metric.values.find((v) => v.labels.outcome === outcome)?.value ?? 0
  return { read: count('read'), served: count('served'), changed: count('changed'), unused: count('unused') }
}

/** 30 records in three batches of ten: three full pages of limit 10. */
async function seed(model: string, connectionPk = conn) {
  for (const from of [1, 11, 21]) {
    const records = ids(from, from + 9).map((id) => ({ id, v: 1 }))
    await batchSave(t.db.kysely, t.sealer, { connectionPk, model, variant: 'base' }, records)
  }
}

/** Reads the first page, then waits until the page after it has been read ahead. */
async function firstPageReadAhead(model: string, connectionId?: string): Promise<Page> {
  const before = (await outcomes()).read
  const first = await page(model, null, connectionId)
  await waitFor('the next page read ahead', async () => (await outcomes()).read > before, { intervalMs: 5 })
  return first
}

beforeAll(async () => {
  t = await startTestApp({ metrics: true })
  const input = { providerConfigKey: PCK, connectionId: 'c1' }
  conn = (await upsertConnection(t.db.kysely, t.sealer, t.envIds.dev, input)).connection.id
})
afterAll(() => t.close())

it('serves a reader paging in order from read-ahead, the same pages a fresh read returns', async () => {
  await seed('Ordered')
  const before = await outcomes()
  const pages = [await page('Ordered')]
  while (pages.at(-1)!.next_cursor) pages.push(await page('Ordered', pages.at(-1)!.next_cursor))
  expect(pages.map(idsOf)).toEqual([ids(1, 10), ids(11, 20), ids(21, 30)])
  const after = await outcomes()
  // Pages 2 and 3 came from read-ahead; nothing changed in between.
  expect(after.served - before.served).toBe(2)
  expect(after.changed - before.changed).toBe(0)

  // Asked again, each page is read afresh (what was read ahead has been served), byte for byte alike.
  for (const [i, p] of pages.entries()) {
    if (i === 0) continue
    expect(await page('Ordered', pages[i - 1]!.next_cursor)).toEqual(p)
  }
})

const r15 = (p: Page) => p.records.find((r) => r.id === 'r15')

it.each<[string, (model: string) => Promise<unknown>, (second: Page) => void]>([
  [
    'a save that changes a record of the page moves it to the end',
    (model) => batchSave(t.db.kysely, t.sealer, ds(model), [{ id: 'r15', v: 2 }]),
    (second) => expect(idsOf(second)).toEqual([...ids(11, 14), ...ids(16, 21)]),
  ],
  [
    'an update (merge) moves its record to the end',
    (model) => batchUpdate(t.db.kysely, t.sealer, ds(model), [{ id: 'r15', extra: true }]),
    (second) => expect(idsOf(second)).toEqual([...ids(11, 14), ...ids(16, 21)]),
  ],
  [
    'a delete moves its record to the end',
    (model) => batchDelete(t.db.kysely, ds(model), [{ id: 'r15' }]),
    (second) => expect(idsOf(second)).toEqual([...ids(11, 14), ...ids(16, 21)]),
  ],
  [
    'the end of a delete-tracking window deletes what was not seen',
    async (model) => {
      await trackDeletesStart(t.db.kysely, ds(model))
      await batchSave(
        t.db.kysely,
        t.sealer,
        ds(model),
        ids(1, 10).map((id) => ({ id, v: 1 })),
      )
      await trackDeletesEnd(t.db.kysely, ds(model))
    },
    // r11..r30 are deleted, and so modified after r01..r10 were saved again: all move to the end.
    (second) =>
      expect(second.records.map((r) => r._nango_metadata.last_action)).toEqual(Array(10).fill('DELETED')),
  ],
  [
    'a prune empties the payloads',
    async (model) => {
      const { rows } = await sql<{
        at: string
        id: number
      }>`SELECT last_modified_at::text AS at, id::int AS id
        FROM records WHERE connection_pk = ${conn} AND model = ${model} AND external_id = 'r15'`.execute(
        t.db.kysely,
      )
      await pruneRecords(t.db.kysely, ds(model), { modifiedAt: rows[0]!.at, id: rows[0]!.id }, 100)
    },
    (second) => {
      expect(idsOf(second)).toEqual(ids(11, 20))
      expect(r15(second)).toEqual({
        id: 'r15',
        _nango_metadata: expect.objectContaining({ pruned_at: expect.any(String) }),
      })
    },
  ],
  [
    'a reset that empties the cache removes the dataset',
    (model) => resetDatasets(t.db.kysely, conn, [model], 'base', true),
    (second) => expect(second).toEqual({ next_cursor: null, records: [] }),
  ],
])('%s: the request sees it', async (_name, change, check) => {
  const model = `Change${Math.random().toString(36).slice(2, 8)}`
  await seed(model)
  const first = await firstPageReadAhead(model)
  expect(idsOf(first)).toEqual(ids(1, 10))
  const before = await outcomes()
  await change(model)
  const second = await page(model, first.next_cursor)
  check(second)
  expect((await outcomes()).changed - before.changed).toBe(1)
  expect(await page(model, first.next_cursor)).toEqual(second)
})

it('a connection deleted after the read-ahead is unknown to the next request', async () => {
  const input = { providerConfigKey: PCK, connectionId: 'short-lived' }
  const pk = (await upsertConnection(t.db.kysely, t.sealer, t.envIds.dev, input)).connection.id
  await seed('Leaving', pk)
  const first = await firstPageReadAhead('Leaving', 'short-lived')
  expect(await deleteConnection(t.db.kysely, t.envIds.dev, PCK, 'short-lived')).toBe(true)
  const res = await get('Leaving', first.next_cursor, 'short-lived')
  expect(res.statusCode).toBe(400)
  expect(res.json().error.code).toBe('unknown_connection')

  // Created again under the same name with the same records: a new dataset, read afresh.
  const again = (await upsertConnection(t.db.kysely, t.sealer, t.envIds.dev, input)).connection.id
  await seed('Leaving', again)
  const before = await outcomes()
  const fresh = await firstPageReadAhead('Leaving', 'short-lived')
  await batchSave(t.db.kysely, t.sealer, { connectionPk: again, model: 'Leaving', variant: 'base' }, [
    { id: 'r12', v: 3 },
  ])
  expect(idsOf(await page('Leaving', fresh.next_cursor, 'short-lived'))).toEqual(['r11', ...ids(13, 21)])
  expect((await outcomes()).changed - before.changed).toBe(1)
})

it('retention deleting a dataset after the read-ahead leaves the request an empty page', async () => {
  await seed('Retained')
  const first = await firstPageReadAhead('Retained')
  const later = new Date(Date.now() + 400 * 86_400_000)
  const { deleted } = await runRetention(t.db.kysely, { pruneAfterDays: 0, deleteAfterDays: 30 }, later)
  expect(deleted).toBeGreaterThanOrEqual(30)
  expect(await page('Retained', first.next_cursor)).toEqual({ next_cursor: null, records: [] })
  const { rows } = await sql<{
    n: number
  }>`SELECT count(*)::int AS n FROM records WHERE model = 'Retained'`.execute(t.db.kysely)
  expect(rows[0]!.n).toBe(0)
})

describe('ReadAhead', () => {
  const aTarget: PageTarget = {
    environmentId: 1,
    providerConfigKey: PCK,
    connectionId: 'c1',
    model: 'M',
    variant: 'base',
  }
  const cursorAt = (n: number) => encodeCursor('2024-01-01T00:00:00.000001+00:00', n)
  const queryAt = (n: number | null): PageQuery => ({
    after: n === null ? undefined : decodeCursor(cursorAt(n)),
    limit: 10,
    maxBytes: 64 * 1024,
  })
  /** A dataset of pages 0, 1, 2, ... whose mark tests can move; records every page read. */
  function fakeDataset() {
    const state = { mark: '1' as string | null, reads: [] as (number | null)[] }
    const read = (_t: PageTarget, q: PageQuery): Promise<ReadPage> => {
      const at = q.after?.id ?? 0
      state.reads.push(q.after?.id ?? null)
      return Promise.resolve({
        body: Buffer.from(`page after ${at}`),
        count: 10,
        hasMore: true,
        nextCursor: cursorAt(at + 10),
        maxRecordBytes: 100,
        mark: state.mark,
      })
    }
    return { state, read, mark: () => Promise.resolve(state.mark) }
  }
  function readAheadOf(options: Partial<ReadAheadOptions> = {}) {
    const data = fakeDataset()
    const memory = new PageMemory(1024 * 1024, 100)
    const counted: ReadAheadOutcome[] = []
    const ra = new ReadAhead(memory, data.read, data.mark, {
      maxPages: 4,
      waitMs: 5000,
      count: (o) => counted.push(o),
      ...options,
    })
    /** A request for the page after `n` by `reader`, answered as the route does. */
    async function request(reader: object, n: number | null, model = 'M') {
      const q = queryAt(n)
      const target = { ...aTarget, model }
      const ahead = await ra.take(target, q)
      const page = ahead?.page ?? (await data.read(target, q))
      ahead?.held.release()
      ra.follow(reader, n === null ? undefined : cursorAt(n), target, q, page, ahead !== null)
      await new Promise((resolve) => setImmediate(resolve))
      return { page, ahead: ahead !== null }
    }
    return { ra, data, memory, counted, request }
  }

  it('follows a reader that sends back its next_cursor, never one that jumps between cursors', async () => {
    const { data, request, counted } = readAheadOf()
    const jumper = {}
    await request(jumper, 50)
    await request(jumper, 20)
    await request(jumper, 90)
    expect(data.state.reads).toEqual([50, 20, 90])

    const reader = {}
    expect((await request(reader, null)).ahead).toBe(false)
    expect((await request(reader, 10)).ahead).toBe(true)
    expect((await request(reader, 20)).ahead).toBe(true)
    // Each page read once: the first by the request, the rest ahead of it (and the one after 20).
    expect(data.state.reads.slice(3)).toEqual([null, 10, 20, 30])
    expect(counted.filter((o) => o === 'served')).toHaveLength(2)
  })

  it('reads a page again when the mark moved, and never serves a page of no dataset', async () => {
    const { data, request, counted } = readAheadOf()
    const reader = {}
    await request(reader, null)
    data.state.mark = '2'
    expect((await request(reader, 10)).ahead).toBe(false)
    expect(counted).toContain('changed')

    data.state.mark = null
    await request(reader, 20)
    expect((await request(reader, 30)).ahead).toBe(false)
  })

  it('holds at most maxPages, drops pages unasked after waitMs, and gives their memory back', async () => {
    const { ra, memory, request, counted } = readAheadOf({ maxPages: 2, waitMs: 50 })
    for (let i = 0; i < 3; i++) await request({}, null)
    // Three readers of one model started; the page after their first is one key, held once.
    expect(ra.size).toBe(1)
    await request({}, null, 'Other')
    await request({}, null, 'Third')
    expect(ra.size).toBe(2)
    await waitFor('pages dropped', () => ra.size === 0 && memory.usedBytes === 0, { intervalMs: 10 })
    expect(counted.filter((o) => o === 'unused').length).toBeGreaterThanOrEqual(2)
  })

  it('reads the mark while the page is still being read, and serves it only if both saw one mark', async () => {
    for (const change of [false, true]) {
      const data = fakeDataset()
      let release!: () => void
      const gate = new Promise<void>((resolve) => (release = resolve))
      const events: string[] = []
      // The page read ahead takes its snapshot only once the gate opens.
      const read = async (t: PageTarget, q: PageQuery) => {
        if (q.after) await gate
        events.push(`read ${data.state.mark}`)
        return data.read(t, q)
      }
      const mark = () => {
        events.push(`mark ${data.state.mark}`)
        return data.mark()
      }
      const counted: ReadAheadOutcome[] = []
      const ra = new ReadAhead(new PageMemory(1024 * 1024, 100), read, mark, {
        maxPages: 4,
        waitMs: 5000,
        count: (o) => counted.push(o),
      })
      const reader = {}
      const first = (await read(aTarget, queryAt(null)))!
      ra.follow(reader, undefined, aTarget, queryAt(null), first, false)
      const taking = ra.take(aTarget, queryAt(10))
      await new Promise((resolve) => setImmediate(resolve))
      // A change that commits after the mark was read and before the page's snapshot
      if (change) data.state.mark = '2'
      release()
      const taken = await taking
      expect(events).toEqual(['read 1', 'mark 1', `read ${change ? 2 : 1}`])
      expect(taken === null).toBe(change)
      expect(counted).toContain(change ? 'changed' : 'served')
      taken?.held.release()
    }
  })

  it('reads nothing ahead with maxPages 0', async () => {
    const { data, request } = readAheadOf({ maxPages: 0 })
    const reader = {}
    await request(reader, null)
    await request(reader, 10)
    expect(data.state.reads).toEqual([null, 10])
  })
})
