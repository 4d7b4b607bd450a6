import { pathToFileURL } from 'node:url'

import { ActionError } from './nango-module.ts'
import { asJson, axiosBody, logPayload, logText, normaliseCheckpoint, ownConnection } from './nango-values.ts'
import { type PaginateConfig, paginate } from './paginate.ts'
import type {
  CallError,
  NangoArgs,
  NangoCall,
  NangoMethod,
  NangoResult,
  ProxyConfig,
  ProxyResponse,
  RunInfo,
  ToMain,
  ToWorker,
} from './protocol.ts'

/**
 * Worker task, in a child process of the server (runtime/pool.ts): runs sync functions, one at a
 * time. The `nango` object it hands to `exec` holds no database or secret of its own: every call is
 * a message to the server process over the IPC channel, which owns the stores, checks the run still
 * holds its lease, and answers. When the channel closes (the server stopped or died), so does this.
 */
process.on('disconnect', () => process.exit(0))
// Ctrl-C in a terminal signals the whole process group: the server decides when its runs stop.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => undefined)
// An error nothing catches (a callback that throws, a rejection nobody awaits) ends the process, as
// it ended a worker thread; the server hears what it was first.
process.on('uncaughtException', (err) => {
  const message = err instanceof Error ? err.message : String(err)
  process.send!({ type: 'crashed', message } satisfies ToMain, () => process.exit(1))
})
const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>()
let nextCall = 1

const post = (message: ToMain) => void process.send!(message)

function call<M extends NangoMethod>(method: M, ...args: NangoArgs<M>): Promise<NangoResult<M>> {
  const id = nextCall++
  return new Promise((resolve, reject) => {
    // The reply to this id is what the handler of `method` returned, so NangoResult<M>.
    pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
    // Widened by hand: with M generic the compiler cannot tell which member of the union this is.
    post({ type: 'call', id, method, args } as NangoCall)
  })
}

/** A failed call as the function sees it: a failed request has `status` and `response`, as Nango's. */
function rejection(error: CallError): Error {
  const { name, message, ...rest } = error
  return Object.assign(new Error(message), { name }, rest)
}

/** The JSON text of a records page, parsed here rather than on the server's thread. */
const recordsPage = (text: string) =>
  JSON.parse(text) as { next_cursor: string | null; records: Record<string, unknown>[] }

// Nango's page size for getRecordsByIds
const IDS_PER_PAGE = 100

/** One request through the server, its body (the answer's, or a failed one's) as Nango's gives it. */
async function request(
  run: RunInfo,
  config: ProxyConfig & { connectionId?: unknown; providerConfigKey?: unknown },
) {
  ownConnection(run, `nango.proxy ${config.endpoint}`, config.providerConfigKey, config.connectionId)
  try {
    const response = await call('proxy', config)
    return { ...response, data: axiosBody(response.data, config.responseType) }
  } catch (err) {
    const response = (err as { response?: ProxyResponse }).response
    if (response) response.data = axiosBody(response.data, config.responseType)
    throw err
  }
}

function createNango(run: RunInfo) {
  // Nango's setLogger: lines below this level are not sent; 'off', once set, stays.
  let minimum = 'debug'
  const log = async (...args: unknown[]) => {
    if (minimum === 'off' || args.length === 0) return
    // Nango's rule: a last argument that is an object with a `level` is the options, so both
    // log(msg, { level: 'error' }) and log(msg, payload, { level: 'error' }) set the level.
    const last = args.at(-1)
    const options =
      last !== null && typeof last === 'object' && 'level' in last
        ? (args.pop() as { level?: string })
        : undefined
    const level = LEVELS[options?.level ?? 'info'] ?? 'info'
    if (RANK[level]! < RANK[minimum]!) return
    const [message, payload] = args
    await call('log', typeof message === 'string' ? message : logText(message), logPayload(payload), level)
  }
  const http = (method: string) => (config: ProxyConfig) => request(run, { ...config, method })
  const getConnection = (providerConfigKey?: string, connectionId?: string) => {
    ownConnection(run, 'nango.getConnection', providerConfigKey, connectionId)
    return call('getConnection')
  }
  const getMetadata = () => call('getMetadata')
  const setMetadata = async (metadata: Record<string, unknown>) =>
    void (await call('setMetadata', metadata, 'replace'))
  let integration: Promise<Record<string, unknown>> | undefined
  return {
    connectionId: run.connectionId,
    providerConfigKey: run.providerConfigKey,
    provider: run.provider,
    variant: run.variant,
    syncName: run.syncName,
    lastSyncDate: run.lastSyncDate === null ? undefined : new Date(run.lastSyncDate),
    ActionError,
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
    getMetadata,
    setMetadata,
    updateMetadata: async (metadata: Record<string, unknown>) =>
      void (await call('setMetadata', metadata, 'merge')),
    getConnection,
    /** Nango's, deprecated there for setMetadata: replaces the metadata */
    setFieldMapping: setMetadata,
    /** Nango's, deprecated there for getMetadata: the metadata's `fieldMapping` */
    getFieldMapping: async () => ((await getMetadata()).fieldMapping ?? {}) as Record<string, string>,
    /** Nango's: a model's name in this variant's records (`Model::variant`, the base variant's plain) */
    modelFullName: (model: string) => (run.variant === 'base' ? model : `${model}::${run.variant}`),
    /** Nango's: the access token for OAuth2, key and secret for OAuth1, else the credentials */
    async getToken() {
      const credentials = ((await getConnection()).credentials ?? {}) as Record<string, unknown>
      if (credentials.type === 'OAUTH2') return credentials.access_token
      if (credentials.type === 'OAUTH1') {
        return { oAuthToken: credentials.oauth_token, oAuthTokenSecret: credentials.oauth_token_secret }
      }
      return credentials
    },
    // Nango keeps it for 10 minutes; a run sees one integration.
    getIntegration: () => (integration ??= call('getIntegration')),
    getEnvironmentVariables: () => call('getEnvironmentVariables'),
    setMergingStrategy: async (merging: { strategy: string }, model: string) =>
      void (await call('setMergingStrategy', merging, model)),
    async *listRecords(model: string, options?: { cursor?: string }) {
      let cursor = options?.cursor ?? null
      do {
        const page = recordsPage(await call('listRecords', model, cursor, null))
        yield* page.records
        cursor = page.next_cursor
      } while (cursor)
    },
    /** Nango's: a Map from each id asked for (as given) to its record; missing ids are left out */
    async getRecordsByIds(ids: (string | number)[], model: string) {
      const found = new Map<string | number, Record<string, unknown>>()
      for (let i = 0; i < ids.length; i += IDS_PER_PAGE) {
        const asked = new Map(ids.slice(i, i + IDS_PER_PAGE).map((id) => [String(id), id]))
        let cursor: string | null = null
        do {
          const page = recordsPage(await call('listRecords', model, cursor, [...asked.keys()]))
          for (const record of page.records) {
            const id = asked.get(String(record.id))
            if (id !== undefined) found.set(id, record)
          }
          cursor = page.next_cursor
        } while (cursor)
      }
      return found
    },
    log,
    setLogger(logger: { level: string }) {
      if (minimum !== 'off' && (logger.level === 'off' || logger.level in RANK)) minimum = logger.level
    },
    /** Nango's: checks input against a zod schema; each problem is logged and an ActionError thrown */
    async zodValidateInput({ zodSchema, input }: { zodSchema: ZodLike; input: unknown }) {
      const parsed = zodSchema.safeParse(input)
      if (!parsed.success) {
        for (const issue of parsed.error.issues) {
          await log(`Invalid input provided: ${issue.message} at path ${issue.path.join('.')}`, {
            level: 'error',
          })
        }
        throw new ActionError({ message: 'Invalid input provided' })
      }
      return parsed
    },
    proxy: (config: ProxyConfig) => request(run, config),
    paginate: <T>(config: PaginateConfig) =>
      paginate<T>(config, run.pagination, (page) => request(run, page)),
    /**
     * Nango's: a request straight from the function, not through the proxy (no credentials, no
     * retries); the fetch Response as is.
     */
    uncontrolledFetch: (options: {
      url: URL | string
      method?: string
      headers?: Record<string, string>
      body?: string | null
    }) =>
      fetch(options.url, {
        method: options.method ?? 'GET',
        ...(options.headers ? { headers: options.headers } : {}),
        ...(options.body ? { body: options.body } : {}),
      }),
    get: http('GET'),
    post: http('POST'),
    put: http('PUT'),
    patch: http('PATCH'),
    delete: http('DELETE'),
  }
}

interface ZodLike {
  safeParse(
    input: unknown,
  ): { success: boolean; error?: { issues: { message: string; path: PropertyKey[] }[] } } & (
    { success: true } | { success: false; error: { issues: { message: string; path: PropertyKey[] }[] } }
  )
}

// Nango's older level names map onto the four a run's log keeps.
const LEVELS: Record<string, string> = {
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  error: 'error',
  verbose: 'debug',
  silly: 'debug',
  http: 'info',
}
const RANK: Record<string, number> = { debug: 0, info: 1, warn: 2, error: 3 }

function describe(err: unknown): { message: string; stack?: string } {
  // Nango shows an ActionError by its payload's message. Recognised by its type, not its class:
  // a CommonJS bundle may hold another copy of the class.
  const action = err as { type?: unknown; payload?: { message?: unknown }; message?: unknown; stack?: string }
  if (action !== null && typeof action === 'object' && action.type === 'action_script_runtime_error') {
    const message = action.payload?.message ?? action.message
    return {
      message: typeof message === 'string' && message !== '' ? message : 'ActionError',
      ...(action.stack ? { stack: action.stack } : {}),
    }
  }
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

process.on('message', (message: ToWorker) => {
  if (message.type === 'run') {
    void execute(message.run, message.file)
  } else if (message.type === 'reply') {
    const waiting = pending.get(message.id)
    if (!waiting) return
    pending.delete(message.id)
    if (message.error !== undefined) waiting.reject(rejection(message.error))
    else waiting.resolve(message.result)
  }
})

post({ type: 'ready' })
