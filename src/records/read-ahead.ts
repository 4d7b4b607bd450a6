import { decodeCursor } from './cursor.ts'
import type { PageMemory, Reservation } from './page-memory.ts'
import type { Page, PageQuery, PageTarget } from './read.ts'

/**
 * What became of a page read ahead: `read` when its read ends, then `served`, `changed` (its
 * dataset changed first; the request read it again) or `unused` (dropped unasked).
 */
export const READ_AHEAD_OUTCOMES = ['read', 'served', 'changed', 'unused'] as const
export type ReadAheadOutcome = (typeof READ_AHEAD_OUTCOMES)[number]

export interface ReadAheadOptions {
  /** Pages read ahead and held at once (the oldest goes first); 0 turns read-ahead off. */
  maxPages: number
  /** How long a page read ahead waits for its reader before it is dropped */
  waitMs: number
  /** Counts outcomes (the server's metrics) */
  count?: ((outcome: ReadAheadOutcome) => void) | undefined
}

/** A page read ahead, or being read, for the request whose key it is. */
interface Ahead {
  /** Never rejects: a read that failed is null, and the request reads the page itself. */
  page: Promise<Page | null>
  held: Reservation
  timer: NodeJS.Timeout
}

/**
 * Read-ahead for readers that page with `next_cursor`: once a page has gone out, the page after it
 * is read while its reader is busy with the first, and the reader's next request is answered with
 * it, if the dataset has not changed since. A reader that pages alone otherwise waits for Postgres
 * and for this process on every page; with read-ahead it waits for one short statement, the
 * dataset's change mark (migrations/0015).
 *
 * The page comes with the mark read in its own snapshot. Before it is served, the mark is read
 * again: the same mark means no transaction that changed the dataset committed between the two
 * snapshots, so the page is exactly what reading it now would return. A different mark (or a
 * dataset gone) drops the page and the request reads its own.
 *
 * Only readers that page in order are followed: one that asked for a first page (no cursor), or
 * sent back the next_cursor its connection was last given, or was served a page read ahead. Readers
 * that jump between cursors (several at once, say) would waste every page read for them. Pages held
 * count against the page memory (reserved without waiting, or not read at all), are few, and wait
 * briefly.
 */
export class ReadAhead {
  /** By request key, oldest first */
  private readonly pages = new Map<string, Ahead>()
  /** The next_cursor last sent to each reader (its socket) */
  private readonly sent = new WeakMap<object, string>()

  constructor(
    private readonly memory: PageMemory,
    private readonly read: (target: PageTarget, q: PageQuery) => Promise<Page | null>,
    private readonly currentMark: (target: PageTarget) => Promise<string | null>,
    private readonly options: ReadAheadOptions,
  ) {}

  /**
   * The page read ahead for this request, if there is one and its dataset has not changed since;
   * with its reservation, which the caller then releases. Null when the request must read it.
   */
  async take(target: PageTarget, q: PageQuery): Promise<{ page: Page; held: Reservation } | null> {
    if (this.pages.size === 0) return null
    const key = requestKey(target, q)
    const ahead = this.pages.get(key)
    if (!ahead) return null
    this.pages.delete(key)
    clearTimeout(ahead.timer)
    // The mark is read while the page may still be being read: either snapshot may come first.
    // Equal marks mean no change to the dataset committed between the two, so the page is the
    // dataset as of the mark's snapshot, which is after this request arrived. (A reader asks for
    // the next page about as soon as its read ahead ends: a quarter of the pages were still being
    // read, and waiting for the page and then for the mark took 0.23 ms a request at limit 100.)
    const current = this.currentMark(target)
    current.catch(() => {})
    try {
      const page = await ahead.page
      const mark = await current
      // A null mark (no dataset) proves nothing: the connection may have gone since.
      if (page !== null && page.mark !== null && page.mark === mark) {
        this.options.count?.('served')
        return { page, held: ahead.held }
      }
      if (page !== null) this.options.count?.('changed')
    } catch (err) {
      ahead.held.release()
      throw err
    }
    ahead.held.release()
    return null
  }

  /**
   * Called once `page` has gone out to `reader` (its socket), in answer to `q` with `cursor` as
   * sent: reads the page after it if the reader pages in order. `servedAhead`: `page` was read ahead.
   */
  follow(
    reader: object,
    cursor: string | undefined,
    target: PageTarget,
    q: PageQuery,
    page: Page,
    servedAhead: boolean,
  ): void {
    const inOrder = servedAhead || cursor === undefined || this.sent.get(reader) === cursor
    if (page.nextCursor === null) {
      this.sent.delete(reader)
      return
    }
    this.sent.set(reader, page.nextCursor)
    if (!inOrder || this.options.maxPages === 0 || page.mark === null) return
    const after = decodeCursor(page.nextCursor)
    if (!after) return
    const next: PageQuery = { ...q, after }
    const key = requestKey(target, next)
    if (this.pages.has(key)) return
    if (this.pages.size >= this.options.maxPages) this.drop(this.pages.keys().next().value!)
    const held = this.memory.tryReserve(q.maxBytes)
    if (!held) return
    const read = this.read(target, next).then(
      (p) => {
        if (p) {
          held.resize(p.body.length)
          this.options.count?.('read')
        }
        return p
      },
      () => null,
    )
    const timer = setTimeout(() => this.drop(key), this.options.waitMs)
    timer.unref()
    this.pages.set(key, { page: read, held, timer })
  }

  /** Pages held or being read ahead */
  get size(): number {
    return this.pages.size
  }

  private drop(key: string): void {
    const ahead = this.pages.get(key)
    if (!ahead) return
    this.pages.delete(key)
    clearTimeout(ahead.timer)
    // A page still being read keeps its bytes until it is.
    void ahead.page.then((page) => {
      ahead.held.release()
      if (page !== null) this.options.count?.('unused')
    })
  }
}

/** Everything a page depends on besides the data: equal keys ask for the same page. */
function requestKey(target: PageTarget, q: PageQuery): string {
  return JSON.stringify([
    target.environmentId,
    target.providerConfigKey,
    target.connectionId,
    target.model,
    target.variant,
    q.limit,
    q.maxBytes,
    q.after?.modifiedAt ?? null,
    q.after?.id ?? null,
    q.modifiedAfter ?? null,
    q.actions ? [...q.actions].sort() : null,
    q.externalIds ?? null,
  ])
}
