import { afterAll, beforeAll, expect, it } from 'vitest'

import { startTestServer, type TestServer } from '../helpers/server.ts'
import { connect, type FakeApi, integrationJson, records, startApi } from './harness.ts'

/**
 * Figures for the README (printed, never judged on time): what one `nango` call costs across the
 * worker boundary (2,000 getCheckpoint calls, each timed inside the function), and nango.paginate
 * over 100 pages of a local API against the same loop written by hand.
 */

const PAGES = 100
const PER_PAGE = 10
const CALLS = 2000

const FILES = (base: string) => ({
  'timing/integration.json': integrationJson(base, {
    pagination: {
      type: 'cursor',
      cursor_path_in_response: 'next',
      cursor_name_in_request: 'cursor',
      response_path: 'items',
    },
  }),
  'timing/syncs/measure.ts': `
    import { createSync } from 'nango'
    export default createSync({
      description: 'times nango calls', frequency: 'every day',
      models: { Figures: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
      async exec(nango) {
        const calls = []
        for (let i = 0; i < ${CALLS}; i++) {
          const start = performance.now()
          await nango.getCheckpoint()
          calls.push(performance.now() - start)
        }
        calls.sort((a, b) => a - b)
        const byHand = async () => {
          let items = 0
          let cursor
          do {
            const res = await nango.get({ endpoint: '/pages', params: cursor ? { cursor } : {} })
            items += res.data.items.length
            cursor = res.data.next
          } while (cursor)
          return items
        }
        const paginated = async () => {
          let items = 0
          for await (const page of nango.paginate({ endpoint: '/pages' })) items += page.length
          return items
        }
        const time = async (fn) => {
          const start = performance.now()
          const items = await fn()
          return { ms: performance.now() - start, items }
        }
        // Warm both, then alternate, five rounds each: the fastest of each counts
        let hand = await time(byHand)
        let paged = await time(paginated)
        for (let round = 0; round < 5; round++) {
          const h = await time(byHand)
          const p = await time(paginated)
          if (h.ms < hand.ms) hand = h
          if (p.ms < paged.ms) paged = p
        }
        await nango.batchSave([{
          id: 'figures',
          p50: calls[Math.floor(calls.length * 0.5)] * 1000,
          p99: calls[Math.floor(calls.length * 0.99)] * 1000,
          hand, paged,
        }], 'Figures')
      },
    })`,
})

let external: FakeApi
let t: TestServer

beforeAll(async () => {
  external = await startApi(({ query }) => {
    const page = Number(query.get('cursor') ?? 0)
    const items = Array.from({ length: PER_PAGE }, (_, i) => ({ id: `${page}-${i}` }))
    return { body: { items, next: page + 1 < PAGES ? String(page + 1) : null } }
  })
  t = await startTestServer(FILES(external.url))
})
afterAll(async () => {
  await t?.close()
  await external?.close()
})

it('one nango call across the worker boundary; paginate vs a hand-written loop', async () => {
  const { measure } = await connect(t, 'timing', 'conn-1', ['measure'])
  expect(measure!.state, measure!.error ?? '').toBe('SUCCEEDED')
  const f = (await records(t, 'timing', 'conn-1', 'Figures')).get('figures') as unknown as {
    p50: number
    p99: number
    hand: { ms: number; items: number }
    paged: { ms: number; items: number }
  }
  expect(f.hand.items).toBe(PAGES * PER_PAGE)
  expect(f.paged.items).toBe(PAGES * PER_PAGE)
  console.log(
    `nango call across the worker (getCheckpoint, ${CALLS} calls): p50 ${f.p50.toFixed(0)} µs, p99 ${f.p99.toFixed(0)} µs; ` +
      `${PAGES} pages: paginate ${f.paged.ms.toFixed(0)} ms, by hand ${f.hand.ms.toFixed(0)} ms ` +
      `(ratio ${(f.paged.ms / f.hand.ms).toFixed(2)})`,
  )
})
