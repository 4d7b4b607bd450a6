/**
 * Model-based property test of the records store and cursor paging (issue 3, SPEC sections 4-5).
 *
 * fast-check generates streams of writes (saves of new, changed and unchanged records with
 * duplicates in a batch, deletes, updates, prunes up to a cursor), each followed by a few pages
 * read by one long-lived paging reader that keeps its cursor. A plain in-memory model predicts
 * every write result and the state of every record. Checked:
 *  (a) after all writes, a fresh reader paging from the start with random page sizes sees every
 *      record exactly once, in strictly increasing (last_modified_at, id) order, in write order,
 *      with the latest payload, deleted and pruned state;
 *  (b) the long-lived reader sees a record again exactly when it was changed (saved with new data,
 *      deleted, undeleted, updated) after the reader passed it, and never because of an unchanged
 *      save or a prune; at the end it has seen every record's latest version;
 *  (c) no page holds an id twice, and next_cursor is the last record's cursor exactly when more
 *      records follow.
 *
 * Reproduce a failure with FC_SEED=<seed> (and FC_PATH=<path> from fast-check's report);
 * FC_RUNS sets the number of runs (default 30).
 */
import { sql } from 'kysely'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { upsertConnection } from '../../src/connections/store.ts'
import { createSealer, type Sealer } from '../../src/crypto.ts'
import { ensureEnvironment } from '../../src/environments/store.ts'
import { decodeCursor, encodeCursor, pgTimestampToRfc3339 } from '../../src/records/cursor.ts'
import { BASE_VARIANT, type Dataset, recordCount } from '../../src/records/datasets.ts'
import { type PageTarget, readPage } from '../../src/records/read.ts'
import type { WriteResult } from '../../src/records/write-result.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts'
import { batchDelete, batchSave, batchUpdate, pruneRecords } from '../helpers/records.ts'

const NUM_RUNS = Number(process.env.FC_RUNS ?? 30)
const SEED = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED)
const PATH = process.env.FC_PATH
// Runs and shrinking stop after this long (then fail, reporting the smallest case found so far).
const TIME_LIMIT_MS = Math.max(50_000, NUM_RUNS * 1000)
const BIG_PAGE_BYTES = 10 * 1024 * 1024

// ---- generated operations ---------------------------------------------------------------------

type SaveItem =
  | { kind: 'new'; pad: number }
  | { kind: 'changed'; pick: number; pad: number }
  | { kind: 'same'; pick: number }
type Patch = Record<string, unknown>
type Op =
  | { kind: 'save'; items: SaveItem[]; duplicateFirst: boolean }
  | { kind: 'delete'; picks: number[]; unknown: boolean }
  | { kind: 'update'; picks: number[]; patch: Patch }
  | { kind: 'prune'; at: number; limit: number }
/** One page request: `tight` pages use a byte budget small enough to cut pages short. */
interface PageSpec {
  limit: number
  tight: boolean
}

const pick = fc.nat({ max: 1000 })
const pad = fc.nat({ max: 300 })
const saveItem: fc.Arbitrary<SaveItem> = fc.oneof(
  fc.record({ kind: fc.constant('new' as const), pad }),
  fc.record({ kind: fc.constant('changed' as const), pick, pad }),
  fc.record({ kind: fc.constant('same' as const), pick }),
)
const patch: fc.Arbitrary<Patch> = fc.oneof(
  fc.record({ nested: fc.record({ a: fc.nat({ max: 2 }) }) }),
  fc.record({ nested: fc.record({ tags: fc.array(fc.constantFrom('x', 'y', 'z'), { maxLength: 3 }) }) }),
  fc.record({ colour: fc.constantFrom('red', 'blue') }),
  fc.record({ name: fc.constantFrom('n0', 'n1') }),
)
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('save' as const),
      items: fc.array(saveItem, { minLength: 1, maxLength: 8 }),
      duplicateFirst: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('delete' as const),
      picks: fc.array(pick, { minLength: 1, maxLength: 4 }),
      unknown: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('update' as const),
      picks: fc.array(pick, { minLength: 1, maxLength: 4 }),
      patch,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('prune' as const),
      at: pick,
      limit: fc.integer({ min: 1, max: 20 }),
    }),
  },
)
const pageSpec: fc.Arbitrary<PageSpec> = fc.record({
  limit: fc.integer({ min: 1, max: 20 }),
  tight: fc.boolean(),
})
const steps = fc.array(fc.record({ op, reads: fc.array(pageSpec, { maxLength: 3 }) }), {
  minLength: 1,
  maxLength: 40,
})
const finalPages = fc.array(pageSpec, { minLength: 1, maxLength: 5 })

// ---- the model ---------------------------------------------------------------------------------

interface ModelRecord {
  /** The payload last saved or merged (without `id`); kept while pruned, as the caller knows it */
  data: Record<string, unknown>
  deleted: boolean
  pruned: boolean
  action: 'ADDED' | 'UPDATED' | 'DELETED'
  /** How often the record's cursor moved (every version a reader can see) */
  moves: number
  /** The step that last moved it: cursor order must follow write order */
  movedAtStep: number
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** The documented merge, written independently: objects merge recursively, the rest replaces. */
function merge(base: Record<string, unknown>, update: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(update)) {
    const current = out[key]
    out[key] = isObject(current) && isObject(value) ? merge(current, value) : value
  }
  return out
}

const sorted = (ids: string[]) => [...ids].sort()

function expectResult(actual: WriteResult, expected: Partial<WriteResult>) {
  const all = { added: [], updated: [], deleted: [], unchanged: [], duplicates: [], ignored: [], ...expected }
  for (const key of Object.keys(all) as (keyof WriteResult)[]) {
    expect(sorted(actual[key]), key).toEqual(sorted(all[key]))
  }
}

// ---- reading -----------------------------------------------------------------------------------

interface WireRecord {
  id: string
  _nango_metadata: {
    first_seen_at: string
    last_modified_at: string
    last_action: string
    deleted_at: string | null
    pruned_at: string | null
    cursor: string
  }
  [key: string]: unknown
}

/** A cursor's position as a sortable pair; Postgres may print fewer than 6 fractional digits. */
function position(cursor: string): [bigint, number] {
  const decoded = decodeCursor(cursor)
  expect(decoded, `cursor ${cursor} decodes`).toBeDefined()
  const m = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\+00:00$/.exec(decoded!.modifiedAt)
  expect(m, `UTC timestamp in ${decoded!.modifiedAt}`).not.toBeNull()
  const micros = BigInt(Date.parse(`${m![1]}Z`)) * 1000n + BigInt((m![2] ?? '').padEnd(6, '0'))
  return [micros, decoded!.id]
}
const after = (a: [bigint, number], b: [bigint, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1])

describe('paging with next_cursor under random writes (property)', () => {
  let database: TestDatabase
  let sealer: Sealer
  let connection: { id: number; environmentId: number; providerConfigKey: string; connectionId: string }
  let runCounter = 0
  /** What the runs exercised, so a generator change cannot quietly stop testing something. */
  const coverage = {
    reappeared: 0,
    prunedRecords: 0,
    unchangedSaves: 0,
    undeleted: 0,
    cutByBytes: 0,
    ignoredUpdates: 0,
  }

  beforeAll(async () => {
    database = await createTestDatabase()
    sealer = createSealer(null)
    const env = await ensureEnvironment(database.db.kysely, 'dev')
    const { connection: c } = await upsertConnection(database.db.kysely, sealer, env.id, {
      providerConfigKey: 'prop',
      connectionId: 'paging',
    })
    connection = c
  })
  afterAll(async () => {
    await database?.destroy()
  })

  it(
    'every record exactly once, in order, latest version; changed records reappear, others do not',
    async () => {
      const db = database.db.kysely

      const property = fc.asyncProperty(steps, finalPages, async (stepList, finalPageSpecs) => {
        // Every run (and every shrink attempt) gets its own dataset.
        const model = `m${++runCounter}`
        const ds: Dataset = { connectionPk: connection.id, model, variant: BASE_VARIANT }
        const target: PageTarget = {
          environmentId: connection.environmentId,
          providerConfigKey: connection.providerConfigKey,
          connectionId: connection.connectionId,
          model,
          variant: BASE_VARIANT,
        }
        const records = new Map<string, ModelRecord>()
        const ids: string[] = [] // every id ever saved, in order: what picks index into
        let rev = 0
        let unknownIds = 0
        const freshData = (padding: number) => {
          rev++
          return { name: `n${rev % 2}`, rev, nested: { a: rev % 3, tags: ['x'] }, pad: 'p'.repeat(padding) }
        }

        /** Checks a record on the wire against the model's current state (reads happen between writes). */
        const expectCurrent = (rec: WireRecord) => {
          const m = records.get(rec.id)
          expect(m, `record ${rec.id} is known`).toBeDefined()
          const meta = rec._nango_metadata
          expect(meta.last_action, `last_action of ${rec.id}`).toBe(m!.action)
          expect(meta.deleted_at !== null, `deleted_at of ${rec.id}`).toBe(m!.deleted)
          expect(meta.pruned_at !== null, `pruned_at of ${rec.id}`).toBe(m!.pruned)
          const { _nango_metadata: _meta, ...body } = rec
          expect(body, `payload of ${rec.id}`).toEqual(
            m!.pruned ? { id: rec.id } : { id: rec.id, ...m!.data },
          )
          expect(Object.keys(rec)[0]).toBe('id')
          expect(Object.keys(rec).at(-1)).toBe('_nango_metadata')
        }

        /** Reads one page after `cursor`; checks (c) and the page's cursor invariants. */
        const page = async (cursor: string | undefined, spec: PageSpec) => {
          const maxBytes = spec.tight ? 900 : BIG_PAGE_BYTES
          const result = await readPage(database.db, sealer, target, {
            after: cursor === undefined ? undefined : decodeCursor(cursor),
            limit: spec.limit,
            maxBytes,
          })
          expect(result).not.toBeNull()
          const body = JSON.parse(result!.body.toString()) as {
            next_cursor: string | null
            records: WireRecord[]
          }
          expect(Object.keys(body)).toEqual(['next_cursor', 'records'])
          expect(body.records.length).toBeLessThanOrEqual(spec.limit)
          if (body.next_cursor !== null && body.records.length < spec.limit) coverage.cutByBytes++
          const pageIds = body.records.map((r) => r.id)
          expect(new Set(pageIds).size, `no duplicates in page ${pageIds.join(',')}`).toBe(pageIds.length)
          const last = body.records.at(-1)
          if (body.next_cursor !== null) {
            expect(last, 'a page with a next_cursor is never empty').toBeDefined()
            expect(body.next_cursor).toBe(last!._nango_metadata.cursor)
          }
          let previous = cursor === undefined ? undefined : position(cursor)
          for (const rec of body.records) {
            const here = position(rec._nango_metadata.cursor)
            if (previous) expect(after(here, previous), `cursor order at ${rec.id}`).toBe(true)
            previous = here
            expectCurrent(rec)
          }
          return body
        }

        // The long-lived reader: its cursor, and per id how many moves it had seen.
        let readerCursor: string | undefined
        let readerAtEnd = false
        const readerSeen = new Map<string, number>()
        const readerPage = async (spec: PageSpec) => {
          const body = await page(readerCursor, spec)
          for (const rec of body.records) {
            const m = records.get(rec.id)!
            const before = readerSeen.get(rec.id)
            // (b): a record comes back only when it has moved since the reader last saw it.
            if (before !== undefined) {
              expect(m.moves, `${rec.id} reappeared without a change`).toBeGreaterThan(before)
              coverage.reappeared++
            }
            readerSeen.set(rec.id, m.moves)
            readerCursor = rec._nango_metadata.cursor
          }
          readerAtEnd = body.next_cursor === null
        }

        const move = (m: ModelRecord, step: number) => {
          m.moves++
          m.movedAtStep = step
        }

        for (const [stepIndex, { op: o, reads }] of stepList.entries()) {
          const resolve = (p: number) => (ids.length === 0 ? undefined : ids[p % ids.length])
          switch (o.kind) {
            case 'save': {
              const batch: { id: string; data: Record<string, unknown> }[] = []
              const expected = {
                added: [] as string[],
                updated: [] as string[],
                unchanged: [] as string[],
                duplicates: [] as string[],
              }
              const inBatch = new Set<string>()
              const newIds: string[] = []
              const applied: (() => void)[] = []
              for (const item of o.items) {
                const existing = item.kind === 'new' ? undefined : resolve(item.pick)
                if (item.kind === 'new' || existing === undefined) {
                  const id = `r${ids.length + newIds.length}`
                  newIds.push(id)
                  const data = freshData(item.kind === 'same' ? 0 : item.pad)
                  batch.push({ id, data })
                  inBatch.add(id)
                  expected.added.push(id)
                  applied.push(() =>
                    records.set(id, {
                      data,
                      deleted: false,
                      pruned: false,
                      action: 'ADDED',
                      moves: 1,
                      movedAtStep: stepIndex,
                    }),
                  )
                  continue
                }
                const m = records.get(existing)!
                const data = item.kind === 'changed' ? freshData(item.pad) : m.data
                batch.push({ id: existing, data })
                if (inBatch.has(existing)) {
                  expected.duplicates.push(existing)
                  continue
                }
                inBatch.add(existing)
                if (m.deleted) {
                  expected.added.push(existing) // undeleted, as ADDED
                  applied.push(() => {
                    Object.assign(m, { data, deleted: false, pruned: false, action: 'ADDED' })
                    move(m, stepIndex)
                  })
                } else if (item.kind === 'changed') {
                  expected.updated.push(existing)
                  applied.push(() => {
                    Object.assign(m, { data, pruned: false, action: 'UPDATED' })
                    move(m, stepIndex)
                  })
                } else {
                  // Unchanged: a pruned payload is restored in place, the cursor stays.
                  expected.unchanged.push(existing)
                  applied.push(() => (m.pruned = false))
                }
              }
              if (o.duplicateFirst) {
                batch.push({ id: batch[0]!.id, data: freshData(0) })
                expected.duplicates.push(batch[0]!.id)
              }
              const result = await batchSave(
                db,
                sealer,
                ds,
                batch.map(({ id, data }) => ({ id, ...data })),
              )
              ids.push(...newIds)
              applied.forEach((apply) => apply())
              expectResult(result, expected)
              coverage.unchangedSaves += expected.unchanged.length
              coverage.undeleted += expected.added.filter((id) => !newIds.includes(id)).length
              break
            }
            case 'delete': {
              const expected = {
                deleted: [] as string[],
                unchanged: [] as string[],
                ignored: [] as string[],
                duplicates: [] as string[],
              }
              const batch: string[] = []
              const inBatch = new Set<string>()
              for (const p of o.picks) {
                const id = resolve(p)
                if (id === undefined) continue
                batch.push(id)
                if (inBatch.has(id)) {
                  expected.duplicates.push(id)
                  continue
                }
                inBatch.add(id)
                const m = records.get(id)!
                if (m.deleted) expected.unchanged.push(id)
                else {
                  expected.deleted.push(id)
                  m.deleted = true
                  m.action = 'DELETED'
                  move(m, stepIndex)
                }
              }
              if (o.unknown) {
                const id = `unknown${++unknownIds}`
                batch.push(id)
                expected.ignored.push(id)
              }
              if (batch.length === 0) break
              expectResult(
                await batchDelete(
                  db,
                  ds,
                  batch.map((id) => ({ id })),
                ),
                expected,
              )
              break
            }
            case 'update': {
              const expected = {
                updated: [] as string[],
                unchanged: [] as string[],
                ignored: [] as string[],
                duplicates: [] as string[],
              }
              const batch: string[] = []
              const inBatch = new Set<string>()
              for (const p of o.picks) {
                const id = resolve(p)
                if (id === undefined) continue
                batch.push(id)
                if (inBatch.has(id)) {
                  expected.duplicates.push(id)
                  continue
                }
                inBatch.add(id)
                const m = records.get(id)!
                if (m.deleted || m.pruned) {
                  expected.ignored.push(id)
                  continue
                }
                const merged = merge(m.data, o.patch)
                if (JSON.stringify(merged) === JSON.stringify(m.data)) expected.unchanged.push(id)
                else {
                  expected.updated.push(id)
                  m.data = merged
                  m.action = 'UPDATED'
                  move(m, stepIndex)
                }
              }
              if (batch.length === 0) break
              coverage.ignoredUpdates += expected.ignored.length
              expectResult(
                await batchUpdate(
                  db,
                  sealer,
                  ds,
                  batch.map((id) => ({ id, ...o.patch })),
                ),
                expected,
              )
              break
            }
            case 'prune': {
              // The cursor of a record picked from the table in cursor order; prune is inclusive.
              const { rows } = await sql<{ external_id: string; id: number; modified: string }>`
              SELECT external_id, id, last_modified_at::text AS modified FROM records
              WHERE connection_pk = ${ds.connectionPk} AND model = ${ds.model} AND variant = ${ds.variant}
              ORDER BY last_modified_at, id`.execute(db)
              if (rows.length === 0) break
              const k = o.at % rows.length
              const until = decodeCursor(encodeCursor(pgTimestampToRfc3339(rows[k]!.modified), rows[k]!.id))!
              const candidates = rows.slice(0, k + 1).filter((r) => !records.get(r.external_id)!.pruned)
              const result = await pruneRecords(db, ds, until, o.limit)
              expect(result).toEqual({
                count: Math.min(o.limit, candidates.length),
                hasMore: candidates.length > o.limit,
              })
              for (const r of candidates.slice(0, o.limit)) records.get(r.external_id)!.pruned = true
              coverage.prunedRecords += result.count
              break
            }
          }
          for (const spec of reads) {
            await readerPage(spec)
            if (readerAtEnd) break
          }
        }

        const live = [...records.values()].filter((m) => !m.deleted).length
        expect(await recordCount(db, ds)).toBe(live)

        // (b): the long-lived reader pages on to the end and has then seen every latest version.
        for (let i = 0; i <= records.size + 1; i++) {
          await readerPage({ limit: 1 + (i % 20), tight: i % 3 === 0 })
          if (readerAtEnd) break
        }
        expect(readerAtEnd, 'the reader reached the end').toBe(true)
        for (const [id, m] of records) {
          expect(readerSeen.get(id), `reader saw the latest version of ${id}`).toBe(m.moves)
        }

        // (a): a fresh reader from the start sees every record exactly once, in order.
        const seen: WireRecord[] = []
        let cursor: string | undefined
        for (let i = 0; i <= records.size + 1; i++) {
          const body = await page(cursor, finalPageSpecs[i % finalPageSpecs.length]!)
          seen.push(...body.records)
          if (body.records.length > 0) cursor = body.records.at(-1)!._nango_metadata.cursor
          if (body.next_cursor === null) break
          expect(i, 'paging terminates').toBeLessThan(records.size + 1)
        }
        const seenIds = seen.map((r) => r.id)
        expect(new Set(seenIds).size, 'each record once').toBe(seenIds.length)
        expect(sorted(seenIds)).toEqual(sorted([...records.keys()]))
        for (let i = 1; i < seen.length; i++) {
          const [prev, next] = [seen[i - 1]!, seen[i]!]
          expect(after(position(next._nango_metadata.cursor), position(prev._nango_metadata.cursor))).toBe(
            true,
          )
          // Cursor order is write order.
          expect(records.get(next.id)!.movedAtStep).toBeGreaterThanOrEqual(records.get(prev.id)!.movedAtStep)
        }
      })

      await fc.assert(property, {
        numRuns: NUM_RUNS,
        ...(SEED === undefined ? {} : { seed: SEED }),
        ...(PATH === undefined ? {} : { path: PATH }),
        // Bounded even while shrinking a failure: report the smallest case found by then.
        interruptAfterTimeLimit: TIME_LIMIT_MS,
        markInterruptAsFailure: true,
      })
      if (PATH === undefined && NUM_RUNS >= 20) {
        for (const [what, count] of Object.entries(coverage)) {
          expect(count, `runs exercised ${what}`).toBeGreaterThan(0)
        }
      }
    },
    TIME_LIMIT_MS + 60_000,
  )
})
