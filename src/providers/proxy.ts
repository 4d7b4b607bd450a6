import { setTimeout as sleep } from 'node:timers/promises'

import type { ProxyConfig, ProxyResponse } from '../runtime/protocol.ts'
import type { IntegrationConfig } from '../syncs/definitions.ts'

// Backoff between retries: 500 ms doubling, at most 10 s; a Retry-After header is honoured up to 30 s.
const BASE_DELAY_MS = 500
const MAX_DELAY_MS = 10_000
const MAX_RETRY_AFTER_MS = 30_000
const REQUEST_TIMEOUT_MS = 60_000

type Credentials = Record<string, unknown> | null

/** How the connection's credentials go on a request: integration.json's `auth`, else by their type. */
function authenticate(
  url: URL,
  headers: Headers,
  integration: IntegrationConfig,
  credentials: Credentials,
): void {
  if (!credentials || credentials.type === 'NONE') return
  const token = String(credentials.access_token ?? credentials.apiKey ?? credentials.token ?? '')
  if (integration.auth) {
    const value = (integration.auth.format ?? '{token}').replace(/\{(\w+)\}/g, (_, name: string) =>
      name === 'token' ? token : String(credentials[name] ?? ''),
    )
    if (integration.auth.in === 'header') headers.set(integration.auth.name, value)
    else url.searchParams.set(integration.auth.name, value)
    return
  }
  switch (credentials.type) {
    case 'OAUTH2':
    case 'OAUTH2_CC':
    case 'API_KEY':
      headers.set('authorization', `Bearer ${token}`)
      return
    case 'BASIC':
      headers.set(
        'authorization',
        `Basic ${Buffer.from(`${String(credentials.username)}:${String(credentials.password)}`).toString('base64')}`,
      )
      return
    default:
      throw new Error(
        `The proxy cannot send ${String(credentials.type)} credentials; describe them in integration.json "auth"`,
      )
  }
}

/**
 * An HTTP request to the integration's API with the connection's credentials, retried with
 * backoff on 429, 5xx and network failures. A final non-2xx answer throws, like Nango's proxy.
 */
export async function proxyRequest(
  config: ProxyConfig,
  integration: IntegrationConfig,
  credentials: Credentials,
): Promise<ProxyResponse> {
  const base = config.baseUrlOverride ?? integration.base_url
  if (!base) throw new Error('The integration has no base_url: add one to its integration.json')
  if (typeof config.endpoint !== 'string') throw new Error('proxy: endpoint must be a string')
  const url = new URL(`${base.replace(/\/+$/, '')}/${config.endpoint.replace(/^\/+/, '')}`)
  for (const [key, value] of Object.entries(config.params ?? {})) {
    if (value !== undefined) url.searchParams.set(key, String(value))
  }
  const headers = new Headers(config.headers ?? {})
  authenticate(url, headers, integration, credentials)
  const method = (config.method ?? 'GET').toUpperCase()
  let body: string | undefined
  if (config.data !== undefined && method !== 'GET') {
    body = typeof config.data === 'string' ? config.data : JSON.stringify(config.data)
    if (!headers.has('content-type')) headers.set('content-type', 'application/json')
  }
  // Retrying a POST the API may already have applied could duplicate a write: only on request.
  const retries = config.retries ?? (method === 'GET' || method === 'HEAD' ? 3 : 0)
  for (let attempt = 0; ; attempt++) {
    let response: Response
    try {
      response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
    } catch (err) {
      if (attempt >= retries) {
        throw new Error(`proxy ${method} ${url.pathname} failed: ${(err as Error).message}`)
      }
      await sleep(backoff(attempt))
      continue
    }
    if ((response.status === 429 || response.status >= 500) && attempt < retries) {
      await response.body?.cancel()
      await sleep(backoff(attempt, response.headers.get('retry-after')))
      continue
    }
    const headersOut = Object.fromEntries(response.headers)
    const data = await readBody(response, config.responseType)
    if (!response.ok) {
      const text = typeof data === 'string' ? data : JSON.stringify(data ?? null)
      throw new ProxyError(
        `proxy ${method} ${url.pathname} answered ${response.status}: ${text.slice(0, 300)}`,
        {
          status: response.status,
          headers: headersOut,
          data,
        },
      )
    }
    return { status: response.status, headers: headersOut, data }
  }
}

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

function backoff(attempt: number, retryAfter?: string | null): number {
  const seconds = Number(retryAfter)
  if (retryAfter && Number.isFinite(seconds)) return Math.min(MAX_RETRY_AFTER_MS, seconds * 1000)
  return Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt) * (0.5 + Math.random() / 2)
}
