import { pathToFileURL } from 'node:url'
import { parentPort } from 'node:worker_threads'

import type {
  NangoArgs,
  NangoCall,
  NangoMethod,
  NangoResult,
  ProxyConfig,
  RunInfo,
  ToMain,
  ToWorker,
} from './protocol.ts'

/**
 * Worker task: runs sync functions, one at a time. The `nango` object it hands to `exec` holds no
 * database or secret of its own: every call is a message to the server process, which owns the
 * stores, checks the run still holds its lease, and answers.
 */
const port = parentPort!
const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>()
let nextCall = 1

const post = (message: ToMain) => port.postMessage(message)

function call<M extends NangoMethod>(method: M, ...args: NangoArgs<M>): Promise<NangoResult<M>> {
  const id = nextCall++
  return new Promise((resolve, reject) => {
    // The reply to this id is what the handler of `method` returned, so NangoResult<M>.
    pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
    // Widened by hand: with M generic the compiler cannot tell which member of the union this is.
    post({ type: 'call', id, method, args } as NangoCall)
  })
}

const http = (method: string) => (config: ProxyConfig) => call('proxy', { ...config, method })

function createNango(run: RunInfo) {
  return {
    connectionId: run.connectionId,
    providerConfigKey: run.providerConfigKey,
    variant: run.variant,
    syncName: run.syncName,
    lastSyncDate: run.lastSyncDate === null ? undefined : new Date(run.lastSyncDate),
    batchSave: (records: unknown[], model: string) => call('batchSave', asJson(records), model),
    batchSend: (records: unknown[], model: string) => call('batchSave', asJson(records), model),
    batchUpdate: (records: unknown[], model: string) => call('batchUpdate', asJson(records), model),
    batchDelete: (records: unknown[], model: string) => call('batchDelete', asJson(records), model),
    trackDeletesStart: (model: string) => call('trackDeletesStart', model),
    trackDeletesEnd: (model: string) => call('trackDeletesEnd', model),
    getCheckpoint: () => call('getCheckpoint'),
    saveCheckpoint: (checkpoint: Record<string, unknown>) =>
      call('saveCheckpoint', normaliseCheckpoint(checkpoint)),
    clearCheckpoint: () => call('clearCheckpoint'),
    getMetadata: () => call('getMetadata'),
    getConnection: () => call('getConnection'),
    getEnvironmentVariables: () => call('getEnvironmentVariables'),
    // Nango's rule: a last argument that is an object with a `level` is the options, so both
    // log(msg, { level: 'error' }) and log(msg, payload, { level: 'error' }) set the level.
    log: (message: unknown, ...rest: unknown[]) => {
      const last = rest.at(-1)
      const options =
        last !== null && typeof last === 'object' && 'level' in last
          ? (rest.pop() as { level?: string })
          : undefined
      return call(
        'log',
        typeof message === 'string' ? message : JSON.stringify(message),
        rest[0] ?? null,
        options?.level ?? 'info',
      )
    },
    proxy: (config: ProxyConfig) => call('proxy', config),
    get: http('GET'),
    post: http('POST'),
    put: http('PUT'),
    patch: http('PATCH'),
    delete: http('DELETE'),
  }
}

/**
 * Records are stored as JSON, so they cross to the server as JSON would see them: a Date becomes
 * its ISO string (and validates as a date-time string), undefined fields disappear. Done here, in
 * the worker, to keep that work off the server's thread.
 */
function asJson(records: unknown[]): unknown {
  return Array.isArray(records) ? (JSON.parse(JSON.stringify(records)) as unknown) : records
}

/** Dates in a checkpoint are stored as ISO strings (Nango's rule). */
function normaliseCheckpoint(checkpoint: Record<string, unknown>): unknown {
  if (checkpoint === null || typeof checkpoint !== 'object') return checkpoint
  return Object.fromEntries(
    Object.entries(checkpoint).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v]),
  )
}

function describe(err: unknown): { message: string; stack?: string } {
  if (err instanceof Error) {
    return { message: `${err.name}: ${err.message}`, ...(err.stack ? { stack: err.stack } : {}) }
  }
  return { message: `Non-error thrown: ${typeof err === 'string' ? err : JSON.stringify(err)}` }
}

async function execute(run: RunInfo, file: string): Promise<void> {
  try {
    const mod = (await import(pathToFileURL(file).href)) as {
      default?: { default?: unknown; exec?: unknown }
    }
    const definition = (mod.default?.default ?? mod.default) as
      { exec?: (nango: unknown) => unknown } | undefined
    if (typeof definition?.exec !== 'function') {
      throw new Error(`${file} no longer exports a sync with exec()`)
    }
    await definition.exec(createNango(run))
    post({ type: 'done', runId: run.runId })
  } catch (err) {
    post({ type: 'failed', runId: run.runId, error: describe(err) })
  }
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'run') {
    void execute(message.run, message.file)
  } else if (message.type === 'reply') {
    const waiting = pending.get(message.id)
    if (!waiting) return
    pending.delete(message.id)
    if (message.error !== undefined) {
      waiting.reject(Object.assign(new Error(message.error.message), { name: message.error.name }))
    } else waiting.resolve(message.result)
  }
})

post({ type: 'ready' })
