/**
 * Messages between the server and the worker threads that run sync functions, and the one map of
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
  /** Attempts after the first on 429, 5xx and network errors (default 3 for GET and HEAD, else 0) */
  retries?: number
  baseUrlOverride?: string
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
}

export type ToWorker =
  | { type: 'run'; run: RunInfo; file: string }
  | { type: 'reply'; id: number; result?: unknown; error?: { name: string; message: string } }

export type ToMain =
  | { type: 'ready' }
  | NangoCall
  | { type: 'done'; runId: number }
  | { type: 'failed'; runId: number; error: { message: string; stack?: string } }
