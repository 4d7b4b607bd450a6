import { setTimeout as sleep } from 'node:timers/promises'

import type { ProxyConfig, ProxyResponse } from '../runtime/protocol.ts'
import { interpolate, type TemplateValues, variablesOf } from './template.ts'
import type { Provider, RetrySignals } from './types.ts'

// Backoff between retries without a rate-limit signal: 500 ms doubling, at most 10 s.
const BASE_DELAY_MS = 500
const MAX_DELAY_MS = 10_000
const REQUEST_TIMEOUT_MS = 60_000
// Without a deadline (an HTTP /proxy call), a rate-limit wait longer than this is not waited out.
const MAX_WAIT_WITHOUT_DEADLINE_MS = 60_000

type JsonObject = Record<string, unknown>

/** Who a request is for: the connection's credentials and its connection_config and metadata. */
export interface ProxyConnection {
  credentials: JsonObject | null
  connectionConfig: JsonObject
  metadata: JsonObject | null
}

/** Where and how a request goes. */
export interface ProxyTarget {
  /** The provider the integration resolved to (catalogue, file, integration.json), if any */
  provider: Provider | undefined
  /** Its name, for messages */
  providerName: string
  connection: ProxyConnection
  /** Epoch ms: a retry whose wait would end later is not attempted (the run's time limit) */
  deadline?: number
  /** Statuses retried besides the provider's (the HTTP proxy's Retry-On header) */
  retryOn?: readonly number[]
}

/**
 * An HTTP request to the provider's API with the connection's credentials, as Nango's proxy sends
 * it: the provider's base URL, headers, query and body templates filled from the connection, the
 * call's own headers winning. `retries` (default 0, as Nango) retries network failures and the
 * provider's retryable answers (429 and 5xx unless it says otherwise), waiting as its rate-limit
 * headers ask. A final non-2xx answer throws, like Nango's proxy.
 */
export async function proxyRequest(config: ProxyConfig, target: ProxyTarget): Promise<ProxyResponse> {
  const { response, where, deniedWaitMs } = await sendProxied(config, target)
  const late =
    deniedWaitMs === undefined
      ? ''
      : ` (the API asked to wait ${Math.ceil(deniedWaitMs / 1000)} s, past the time limit)`
  return proxyAnswer(response, where, config.responseType, late)
}

/**
 * The API's answer as the function gets it: the body read as it asked (readBody); a non-2xx answer
 * throws a ProxyError that keeps its status, body and headers. `where` and `note` start and end
 * the message (`proxy GET /path answered 404<note>: <body>`).
 */
export async function proxyAnswer(
  response: Response,
  where: string,
  responseType: ProxyConfig['responseType'],
  note = '',
): Promise<ProxyResponse> {
  const headers = Object.fromEntries(response.headers)
  const data = await readBody(response, responseType)
  if (!response.ok) {
    const text = typeof data === 'string' ? data : JSON.stringify(data ?? null)
    throw new ProxyError(`${where} answered ${response.status}${note}: ${text.slice(0, 300)}`, {
      status: response.status,
      headers,
      data,
    })
  }
  return { status: response.status, headers, data }
}

/** The API's final answer to a proxied request, after any retries. */
interface Sent {
  response: Response
  /** `proxy GET /path`, for messages */
  where: string
  /** The API asked to wait this long before a retry, which would have ended past the deadline */
  deniedWaitMs?: number
}

/**
 * Sends the request as the provider says and retries as asked; resolves with the last answer
 * whatever its status. Throws MissingVariableError for a template the connection cannot fill, and
 * an Error when the API cannot be reached.
 */
export async function sendProxied(config: ProxyConfig, target: ProxyTarget): Promise<Sent> {
  const { provider, providerName } = target
  const values = templateValues(target.connection)
  if (typeof config.endpoint !== 'string') throw new Error('proxy: endpoint must be a string')
  const template = provider?.proxy?.base_url
  const base =
    config.baseUrlOverride ??
    (template && interpolate(template, values, `The base URL of provider ${providerName}`))
  if (!base) {
    throw new Error(
      `Provider ${providerName} has no base URL: name a known provider or add base_url to its integration.json`,
    )
  }
  const url = new URL(`${base.replace(/\/+$/, '')}/${config.endpoint.replace(/^\/+/, '')}`)
  for (const [key, value] of Object.entries(config.params ?? {})) {
    if (value !== undefined) url.searchParams.set(key, String(value))
  }
  const fill = (what: string, value: string) =>
    interpolate(value, values, `${what} of provider ${providerName}`)
  for (const [key, value] of Object.entries(provider?.proxy?.query ?? {})) {
    url.searchParams.set(key, fill(`Query parameter ${key}`, value))
  }
  const headers = new Headers()
  if (!sendsOwnCredentials(provider)) defaultAuthorization(headers, target.connection.credentials)
  for (const [key, value] of Object.entries(provider?.proxy?.headers ?? {})) {
    headers.set(key, fill(`Header ${key}`, value))
  }
  for (const [key, value] of Object.entries(config.headers ?? {})) headers.set(key, value)
  const method = (config.method ?? 'GET').toUpperCase()
  let data = config.data
  const extra = provider?.proxy?.body
  if (extra && method !== 'GET' && method !== 'HEAD' && (data === undefined || isObject(data))) {
    const filled = Object.fromEntries(
      Object.entries(extra).map(([key, value]) => [key, fill(`Body field ${key}`, String(value))]),
    )
    data = { ...filled, ...(data as JsonObject | undefined) }
  }
  let body: string | undefined
  if (data !== undefined && method !== 'GET') {
    body = typeof data === 'string' ? data : JSON.stringify(data)
    if (!headers.has('content-type')) headers.set('content-type', 'application/json')
  }
  const retries = config.retries ?? 0
  const signals = provider?.proxy?.retry
  const deadline = target.deadline ?? Date.now() + MAX_WAIT_WITHOUT_DEADLINE_MS
  const where = `proxy ${method} ${url.pathname}`
  for (let attempt = 0; ; attempt++) {
    let response: Response
    try {
      response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
    } catch (err) {
      const wait = backoff(attempt)
      if (attempt >= retries || Date.now() + wait > deadline) {
        throw new Error(`${where} failed: ${(err as Error).message}`)
      }
      await sleep(wait)
      continue
    }
    const retryable = attempt < retries && isRetryable(response, signals, target.retryOn)
    const wait = retryable ? (rateLimitWait(response.headers, signals) ?? backoff(attempt)) : 0
    if (retryable && Date.now() + wait <= deadline) {
      await response.body?.cancel()
      await sleep(wait)
      continue
    }
    return { response, where, ...(retryable ? { deniedWaitMs: wait } : {}) }
  }
}

/**
 * What templates may name: `connectionConfig.x`, `metadata.x`, `credentials.x` and each credential
 * field on its own (`${username}`), `accessToken` (an OAuth2 access token, else a token or key) and
 * `apiKey`.
 */
function templateValues(connection: ProxyConnection): TemplateValues {
  const credentials = connection.credentials ?? {}
  const accessToken = credentials.access_token ?? credentials.token ?? credentials.apiKey
  return {
    ...credentials,
    credentials,
    connectionConfig: connection.connectionConfig,
    metadata: connection.metadata ?? {},
    accessToken,
    apiKey: credentials.apiKey ?? credentials.api_key,
  }
}

/** The provider sends credentials its own way: a header, query or body template names one. */
function sendsOwnCredentials(provider: Provider | undefined): boolean {
  const proxy = provider?.proxy
  const templates = [proxy?.headers, proxy?.query, proxy?.body].flatMap((m) =>
    Object.values(m ?? {}).map(String),
  )
  return templates.some((t) =>
    variablesOf(t).some((name) => !name.startsWith('connectionConfig.') && !name.startsWith('metadata.')),
  )
}

/** Credentials by their type, when the provider says nothing of its own (as Nango does). */
function defaultAuthorization(headers: Headers, credentials: JsonObject | null): void {
  if (!credentials || credentials.type === 'NONE' || credentials.type === undefined) return
  switch (credentials.type) {
    case 'OAUTH2':
    case 'APP':
      headers.set('authorization', `Bearer ${String(credentials.access_token ?? '')}`)
      return
    case 'OAUTH2_CC':
    case 'JWT':
    case 'TWO_STEP':
    case 'SIGNATURE':
      headers.set('authorization', `Bearer ${String(credentials.token ?? credentials.access_token ?? '')}`)
      return
    case 'API_KEY':
      // Nango sends an API key only as its provider says; syncstore's fallback is a bearer token
      headers.set('authorization', `Bearer ${String(credentials.apiKey ?? '')}`)
      return
    case 'BASIC':
      headers.set(
        'authorization',
        `Basic ${Buffer.from(`${String(credentials.username ?? '')}:${String(credentials.password ?? '')}`).toString('base64')}`,
      )
      return
    default:
      throw new Error(
        `The proxy cannot send ${String(credentials.type)} credentials; describe them in the provider's proxy headers or integration.json "auth"`,
      )
  }
}

/**
 * Nango's rule: the provider's error codes when it lists them, else 429 and 5xx; the call's own
 * Retry-On statuses; or an error with no calls left in the window.
 */
function isRetryable(
  response: Response,
  signals: RetrySignals | undefined,
  retryOn: readonly number[] = [],
): boolean {
  const { status } = response
  const listed = signals?.error_code
  if (listed ? listed.some((code) => statusMatches(status, code)) : status === 429 || status >= 500) {
    return true
  }
  if (retryOn.includes(status)) return true
  return !!signals?.remaining && !response.ok && response.headers.get(signals.remaining) === '0'
}

/** '429' or a class such as '5xx' */
function statusMatches(status: number, code: string): boolean {
  const pattern = code.trim().toLowerCase()
  if (/^\dxx$/.test(pattern)) return Math.floor(status / 100) === Number(pattern[0])
  return Number(pattern) === status
}

const asList = (v: string | string[] | undefined): string[] =>
  v === undefined ? [] : Array.isArray(v) ? v : [v]

/**
 * How long the API asked to wait, in ms: the provider's `at` headers (a time: epoch seconds, epoch
 * ms or an HTTP date), else its `after` headers, else the standard retry-after (seconds or a date).
 */
function rateLimitWait(headers: Headers, signals: RetrySignals | undefined): number | undefined {
  for (const name of asList(signals?.at)) {
    const value = headers.get(name)
    if (!value) continue
    const at = timeOf(value)
    if (at !== undefined && at > Date.now()) return at - Date.now()
  }
  for (const name of [...asList(signals?.after), 'retry-after']) {
    const value = headers.get(name)
    if (!value) continue
    const seconds = Number(value)
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
    const at = Date.parse(value)
    if (Number.isFinite(at)) return Math.max(0, at - Date.now())
  }
  return undefined
}

/** Epoch ms of a reset header: epoch seconds, epoch milliseconds or a date */
function timeOf(value: string): number | undefined {
  const n = Number(value)
  if (Number.isFinite(n)) return n > 1e11 ? n : n * 1000
  const at = Date.parse(value)
  return Number.isFinite(at) ? at : undefined
}

const isObject = (v: unknown): v is JsonObject => v !== null && typeof v === 'object' && !Array.isArray(v)

/**
 * A request the API answered with an error, as Nango's (an axios error): `status`, and the
 * answer as `response: { status, data, headers }`, which sync functions branch on (skip a 404).
 */
class ProxyError extends Error {
  override name = 'ProxyError'
  readonly status: number
  constructor(
    message: string,
    readonly response: ProxyResponse,
  ) {
    super(message)
    this.status = response.status
  }
}

/**
 * The body as the function asked for it (axios' responseType): 'text' as a string, 'arraybuffer'
 * (or 'blob', 'stream': a worker cannot be handed a stream) as bytes; otherwise JSON when the
 * answer is JSON, else its text.
 */
async function readBody(response: Response, responseType: ProxyConfig['responseType']): Promise<unknown> {
  if (responseType === 'arraybuffer' || responseType === 'blob' || responseType === 'stream') {
    return new Uint8Array(await response.arrayBuffer())
  }
  const text = await response.text()
  if (responseType === 'text' || text === '') return text
  const isJson = (response.headers.get('content-type') ?? '').includes('json')
  // axios' default: JSON when it parses, whatever the content type says
  if (isJson || responseType === 'json' || /^\s*[[{]/.test(text)) {
    try {
      return JSON.parse(text) as unknown
    } catch {
      return text
    }
  }
  return text
}

function backoff(attempt: number): number {
  return Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt) * (0.5 + Math.random() / 2)
}
