/**
 * A process-wide bound on the GET /records bodies held in memory. A page reserves its bytes before
 * it is read and keeps them until its response has gone out or its socket has closed, so clients
 * that ask for 10 MiB pages and never read them hold at most the budget between them, not 10 MiB
 * each, until the idle timeout frees their sockets.
 *
 * A quarter of the budget is kept for small pages (at most 1/64 of it, 1 MiB of 64), so a few huge
 * pages never starve ordinary ones. A reservation that does not fit waits, in arrival order but
 * without blocking smaller ones behind it, for at most `waitMs`, then is refused.
 */
export class PageMemory {
  /** The most one page may reserve: a large page leaves the headroom to small ones. */
  readonly largest: number
  private readonly small: number
  private used = 0
  private readonly waiting: Waiter[] = []

  constructor(
    readonly budgetBytes: number,
    private readonly waitMs: number,
  ) {
    this.small = Math.floor(budgetBytes / 64)
    this.largest = budgetBytes - Math.floor(budgetBytes / 4)
  }

  /** Bytes reserved now (may pass the budget by the one record a page always returns). */
  get usedBytes(): number {
    return this.used
  }

  /**
   * Reserves `bytes` (at most `largest`), waiting for room up to `waitMs`; null when there was none
   * in time, or the signal `gone` gives aborted first (the client went away). `gone` is called only
   * when the reservation must wait, so a page that fits at once builds no signal.
   */
  reserve(bytes: number, gone: () => AbortSignal): Promise<Reservation | null> {
    const now = this.tryReserve(bytes)
    if (now) return Promise.resolve(now)
    const signal = gone()
    if (signal.aborted) return Promise.resolve(null)
    return new Promise((resolve) => {
      const waiter: Waiter = {
        bytes,
        admit: () => {
          done()
          resolve(this.take(bytes))
        },
      }
      const giveUp = () => {
        done()
        const at = this.waiting.indexOf(waiter)
        if (at >= 0) this.waiting.splice(at, 1)
        // A large waiter leaving may let smaller ones behind it in.
        this.admitWaiting()
        resolve(null)
      }
      const timer = setTimeout(giveUp, this.waitMs)
      signal.addEventListener('abort', giveUp, { once: true })
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', giveUp)
      }
      this.waiting.push(waiter)
      // Behind waiters that do not fit, a smaller reservation may still fit now.
      this.admitWaiting()
    })
  }

  /** Reserves `bytes` if they fit now and no page is waiting; null otherwise (never waits). */
  tryReserve(bytes: number): Reservation | null {
    return this.waiting.length === 0 && this.fits(bytes) ? this.take(bytes) : null
  }

  private fits(bytes: number): boolean {
    const limit = bytes <= this.small ? this.budgetBytes : this.largest
    return this.used + bytes <= limit
  }

  private take(bytes: number): Reservation {
    this.used += bytes
    let held = bytes
    let released = false
    return {
      resize: (size) => {
        if (released) return
        const shrunk = size < held
        this.used += size - held
        held = size
        if (shrunk) this.admitWaiting()
      },
      release: () => {
        if (released) return
        released = true
        this.used -= held
        this.admitWaiting()
      },
    }
  }

  /** Admits, in arrival order, every waiter that now fits. */
  private admitWaiting(): void {
    for (let i = 0; i < this.waiting.length;) {
      const waiter = this.waiting[i]!
      if (this.fits(waiter.bytes)) {
        this.waiting.splice(i, 1)
        waiter.admit()
      } else {
        i++
      }
    }
  }
}

export interface Reservation {
  /** The page's real size, once it is known (usually less than what was reserved). */
  resize(bytes: number): void
  /** Idempotent: called when the response is done or its socket closed, and on any failure. */
  release(): void
}

interface Waiter {
  bytes: number
  admit(): void
}

/**
 * The largest record last seen per dataset, to size a page's reservation before reading it. A hint
 * can only be low (records grow, `datasets.max_size_bytes` never shrinks) when another writer has
 * stored larger records since; the page read with it is then cut at the reservation, and corrects
 * the hint. Bounded: the oldest entry goes first.
 */
export class RecordSizeHints {
  private readonly sizes = new Map<string, number>()

  constructor(private readonly maxEntries = 10_000) {}

  get(key: string): number | undefined {
    return this.sizes.get(key)
  }

  set(key: string, size: number): void {
    this.sizes.delete(key)
    this.sizes.set(key, size)
    if (this.sizes.size > this.maxEntries) this.sizes.delete(this.sizes.keys().next().value!)
  }
}
