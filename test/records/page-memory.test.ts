import { describe, expect, it } from 'vitest'

import { PageMemory, RecordSizeHints } from '../../src/records/page-memory.ts'

/** The page memory budget of src/records/page-memory.ts, alone: no server, no database. */

const MB = 1024 * 1024
const open = () => () => new AbortController().signal

describe('PageMemory', () => {
  it('lets large pages take the budget only down to the headroom kept for small ones', async () => {
    const memory = new PageMemory(64 * MB, 50)
    expect(memory.largest).toBe(48 * MB)
    const large = await Promise.all([1, 2, 3, 4].map(() => memory.reserve(10 * MB, open())))
    expect(large.every((r) => r !== null)).toBe(true)
    // A fifth would pass 48 MiB: it waits, then is refused.
    expect(await memory.reserve(10 * MB, open())).toBeNull()
    // Small pages (at most 1 MiB of 64) still have the last 24 MiB.
    const small = await Promise.all(Array.from({ length: 24 }, () => memory.reserve(MB, open())))
    expect(small.every((r) => r !== null)).toBe(true)
    expect(memory.usedBytes).toBe(64 * MB)
    expect(await memory.reserve(MB, open())).toBeNull()
  })

  it('admits a waiter once enough is released, and a small one is not held up behind a large one', async () => {
    const memory = new PageMemory(64 * MB, 1000)
    const held = await Promise.all([1, 2, 3].map(() => memory.reserve(12 * MB, open())))
    await Promise.all(Array.from({ length: 16 }, () => memory.reserve(MB, open())))
    // 52 MiB used: a large page must wait until at most 38 are.
    const large = memory.reserve(10 * MB, open())
    // Arriving after it, a small page that fits gets in at once.
    expect(await memory.reserve(MB, open())).not.toBeNull()
    held[0]!.release()
    expect(memory.usedBytes).toBe(41 * MB)
    held[1]!.release()
    expect(await large).not.toBeNull()
    expect(memory.usedBytes).toBe(12 * MB + 17 * MB + 10 * MB)
  })

  it('refuses a waiter whose client went away, and release and resize are exact and idempotent', async () => {
    const memory = new PageMemory(4 * MB, 5000)
    const first = (await memory.reserve(3 * MB, open()))!
    const gone = new AbortController()
    const waiting = memory.reserve(3 * MB, () => gone.signal)
    gone.abort()
    expect(await waiting).toBeNull()

    first.resize(MB)
    expect(memory.usedBytes).toBe(MB)
    first.release()
    first.release()
    first.resize(2 * MB)
    expect(memory.usedBytes).toBe(0)
  })

  it('admits waiters when a reservation shrinks to its page size', async () => {
    const memory = new PageMemory(4 * MB, 5000)
    const first = (await memory.reserve(3 * MB, open()))!
    const waiting = memory.reserve(2 * MB, open())
    first.resize(MB)
    expect(await waiting).not.toBeNull()
    expect(memory.usedBytes).toBe(3 * MB)
  })
})

describe('RecordSizeHints', () => {
  it('keeps the newest entries up to its bound', () => {
    const hints = new RecordSizeHints(2)
    hints.set('a', 1)
    hints.set('b', 2)
    hints.set('a', 3)
    hints.set('c', 4)
    expect([hints.get('a'), hints.get('b'), hints.get('c')]).toEqual([3, undefined, 4])
  })
})
