/** Postgres errors, classified by SQLSTATE (never by message text). */

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

/**
 * The connection failed before Postgres could say why (refused, reset, terminated): it carries the
 * SQLSTATE of the matching connection exception (08001 cannot connect, 08006 connection failure)
 * so that it is classified like the errors Postgres itself reports. The driver's error is `cause`.
 */
export class DatabaseUnavailableError extends Error {
  constructor(
    readonly code: '08001' | '08006',
    cause: unknown,
  ) {
    super(`The database is unavailable: ${(cause as Error | undefined)?.message ?? String(cause)}`, { cause })
    this.name = 'DatabaseUnavailableError'
  }
}

// Serialization failure and deadlock: the transaction did nothing and may succeed if run again
// (graphile-worker retries these).
const CONFLICTS = new Set(['40001', '40P01'])
// The server is restarting, recovering or shutting down, or the connection broke (class 08):
// a failover or restart takes seconds to a minute, so these are retried for longer.
const OUTAGES = new Set(['57P01', '57P02', '57P03'])

const isOutage = (state: string) => state.startsWith('08') || OUTAGES.has(state)

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPIPE'])

/** The database is unreachable, overloaded or shutting down: worth a 503, not a 500. */
export function isUnavailable(err: unknown): boolean {
  const state = sqlState(err)
  if (state) return isOutage(state) || ['53300', '57014'].includes(state)
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && NETWORK_CODES.has(code)
}

/**
 * Runs `fn` again when Postgres reports a retryable failure, with jittered exponential backoff
 * (50 ms doubling to 2 s). Conflicts get 5 attempts; an outage is retried until `outageMs` has
 * passed (default 10 s: a fast restart or `pg_terminate_backend` is ridden out, while a request
 * during a long outage still gets its 503 in bounded time; a run's end is recorded with more).
 */
export async function withRetries<T>(fn: () => Promise<T>, options: { outageMs?: number } = {}): Promise<T> {
  const started = Date.now()
  const outageMs = options.outageMs ?? 10_000
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn()
    } catch (err) {
      const state = sqlState(err)
      const again =
        state !== undefined &&
        (CONFLICTS.has(state) ? attempt < 5 : isOutage(state) && Date.now() - started < outageMs)
      if (!again) throw err
      const delay = Math.min(2000, 50 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2)
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
}
