/** Postgres errors, classified by SQLSTATE (never by message text). */

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

// Serialization failure, deadlock, and "cannot connect now" (a restarting or recovering server):
// the statement did nothing and may succeed if simply run again (graphile-worker retries these).
const RETRYABLE = new Set(['40001', '40P01', '57P03'])

export function isRetryable(err: unknown): boolean {
  const state = sqlState(err)
  return state !== undefined && RETRYABLE.has(state)
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPIPE'])

/** The database is unreachable, overloaded or shutting down: worth a 503, not a 500. */
export function isUnavailable(err: unknown): boolean {
  const state = sqlState(err)
  if (state) return state.startsWith('08') || ['53300', '57P01', '57P02', '57P03', '57014'].includes(state)
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && NETWORK_CODES.has(code)
}

export const UNIQUE_VIOLATION = '23505'

/**
 * Runs `fn` again when Postgres reports a retryable failure, with jittered exponential backoff
 * (50 ms doubling to 2 s, 5 attempts): enough to ride out a deadlock or a brief failover.
 */
export async function withRetries<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn()
    } catch (err) {
      if (attempt >= attempts || !isRetryable(err)) throw err
      const delay = Math.min(2000, 50 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2)
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }
}
