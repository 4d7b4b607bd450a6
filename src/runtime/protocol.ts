/**
 * Messages between the server and the worker processes that run sync functions, and the one map of
 * the `nango` calls that cross between them. The worker's `nango` object (sync.worker.ts) sends
 * these calls and the server's handlers (runs/handlers.ts) answer them, both typed by `NangoCalls`:
 * a new method is one entry here and one handler there, and the compiler checks both sides.
 *
 * The types say what a well-behaved sync function sends. The values come from user code through a
 * structured clone, so a handler still checks whatever it relies on (an array of records, a
 * checkpoint's shape) before it touches a store.
 */

/** What a sync function passes to nango.proxy / nango.get / ... (Nango's ProxyConfiguration subset). */
export interface ProxyConfig {
  endpoint: string
  method?: string
  params?: Record<string, string | number | boolean | undefined>
  headers?: Record<string, string>
  data?: unknown
  /** Attempts after the first on 429, 5xx (or the provider's retry codes) and network errors; default 0, as Nango */
  retries?: number
  /** Statuses also retried (Nango's `retryOn`: workable's templates send [404, 429]) */
  retryOn?: number[]
  baseUrlOverride?: string
  /** How the body is read: JSON when the answer says so (default), 'text', or 'arraybuffer' (bytes) */
  responseType?: 'json' | 'text' | 'arraybuffer' | 'blob' | 'document' | 'stream'
}

export interface ProxyResponse {
  status: number
  headers: Record<string, string>
  data: unknown
}

/** Method -> (argument tuple) -> result, for every call the worker's `nango` object makes. */
interface NangoCalls {
  /** `records` as JSON would see them (the worker serialises them); the handler checks it is an array */
  batchSave: (records: unknown, model: string) => true
  batchUpdate: (records: unknown, model: string) => true
  batchDelete: (records: unknown, model: string) => true
  trackDeletesStart: (model: string) => null
  trackDeletesEnd: (model: string) => { deletedKeys: string[] }
  getCheckpoint: () => Record<string, unknown> | null
  saveCheckpoint: (checkpoint: unknown) => null
  clearCheckpoint: () => null
  getMetadata: () => Record<string, unknown>
  getConnection: () => Record<string, unknown>
  getEnvironmentVariables: () => { name: string; value: string }[]
  /** Replaces (`replace`) or shallow-merges (`merge`) the connection's metadata */
  setMetadata: (metadata: unknown, mode: 'replace' | 'merge') => null
  /** The integration as Nango's GET /integrations/{uniqueKey} shows it */
  getIntegration: () => Record<string, unknown>
  /** One page of a model's records, as the JSON text of GET /records (`{ next_cursor, records }`) */
  listRecords: (model: string, cursor: string | null, ids: string[] | null) => string
  setMergingStrategy: (strategy: unknown, model: string) => null
  log: (message: string, payload: unknown, level: string) => null
  proxy: (config: ProxyConfig) => ProxyResponse
}

export type NangoMethod = keyof NangoCalls
export type NangoArgs<M extends NangoMethod> = Parameters<NangoCalls[M]>
export type NangoResult<M extends NangoMethod> = ReturnType<NangoCalls[M]>

/** The server side: one async handler per method. */
export type NangoHandlers = {
  [M in NangoMethod]: (...args: NangoArgs<M>) => Promise<NangoResult<M>>
}

/** One call as it crosses to the server; `method` and `args` always agree. */
export type NangoCall<M extends NangoMethod = NangoMethod> = {
  [K in M]: { type: 'call'; id: number; method: K; args: NangoArgs<K> }
}[M]

/**
 * Hands a call to its handler. Generic in M so the compiler sees that method and args match; async
 * so that even a handler that throws at once answers the worker with an error.
 */
export async function answerCall<M extends NangoMethod>(
  handlers: NangoHandlers,
  call: { method: M; args: NangoArgs<M> },
): Promise<NangoResult<M>> {
  const handler: (...args: NangoArgs<M>) => Promise<NangoResult<M>> = handlers[call.method]
  return handler(...call.args)
}

/** What a sync function may know about its run (all clonable). */
export interface RunInfo {
  runId: number
  syncName: string
  connectionId: string
  providerConfigKey: string
  variant: string
  /** ISO time of the last successful run's start, or null (first run, or after a reset) */
  lastSyncDate: string | null
  /** The integration's provider (its key when it names none) */
  provider: string
  /** The integration's default pagination (nango.paginate merges a call's own over it) */
  pagination: Pagination | null
}

/** How nango.paginate pages (Nango's provider `proxy.paginate` shape). */
export interface Pagination {
  type: 'cursor' | 'link' | 'offset'
  limit?: number | string
  limit_name_in_request?: string
  /** Where the page's items are in the body (dot path); the body itself when absent */
  response_path?: string
  /** Paging parameters go in the body rather than the query (default: for POST, PUT and PATCH) */
  in_body?: boolean
  cursor_path_in_response?: string
  cursor_name_in_request?: string
  link_rel_in_response_header?: string
  link_path_in_response_body?: string
  offset_name_in_request?: string
  offset_start_value?: number
  offset_calculation_method?: 'per-page' | 'by-response-size'
}

/**
 * A failed call as it crosses back to the worker. A failed request keeps what Nango's (axios)
 * error has: `status`, and `response: { status, data, headers }`.
 */
export interface CallError {
  name: string
  message: string
  status?: number
  response?: ProxyResponse
}

export type ToWorker =
  | { type: 'run'; run: RunInfo; file: string }
  | { type: 'reply'; id: number; result?: unknown; error?: CallError }

export type ToMain =
  | { type: 'ready' }
  | NangoCall
  | { type: 'done'; runId: number }
  | { type: 'failed'; runId: number; error: { message: string; stack?: string } }
  /** An error the function's code did not catch; the process exits after sending it */
  | { type: 'crashed'; message: string }
