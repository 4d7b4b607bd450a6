/** Messages between the server and the worker threads that run sync functions. */

export const NANGO_METHODS = [
  'batchSave',
  'batchUpdate',
  'batchDelete',
  'trackDeletesStart',
  'trackDeletesEnd',
  'getCheckpoint',
  'saveCheckpoint',
  'clearCheckpoint',
  'getMetadata',
  'getConnection',
  'getEnvironmentVariables',
  'log',
  'proxy',
] as const

export type NangoMethod = (typeof NANGO_METHODS)[number]

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
  | { type: 'call'; id: number; method: NangoMethod; args: unknown[] }
  | { type: 'done'; runId: number }
  | { type: 'failed'; runId: number; error: { message: string; stack?: string } }
