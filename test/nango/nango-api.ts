import { createHmac } from 'node:crypto'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * A local stand-in of Nango's API, written from Nango's API reference: `GET /connections` (paged
 * by `page` and `limit`, zero-based; this one caps a page at `pageCap` connections, as a real one
 * caps at its maximum) and `GET /connections/{connectionId}?provider_config_key=` (the connection
 * with its credentials, 404 `not_found` otherwise), both behind `Authorization: Bearer <secret key>`
 * (401 `unknown_account` otherwise). And Nango's auth webhooks, signed as Nango signs them.
 *
 * Also `GET /providers/{provider}` (`{data: provider}` from `providers`, 404 `not_found` otherwise)
 * and Nango's proxy, `ALL /proxy/*`: the connection named by `Connection-Id` and
 * `Provider-Config-Key` (400 `unknown_connection` otherwise), its provider's `base_url` (or
 * `Base-Url-Override`), the path and query after /proxy, the `Nango-Proxy-*` headers without their
 * prefix and the connection's token as `Authorization: Bearer`; the API's answer passed back,
 * status, content type and body. `stop()` takes it down (connections refused) and `restart()`
 * brings it back on the same port.
 */

export interface StandInConnection {
  connection_id: string
  provider_config_key: string
  provider: string
  metadata?: Record<string, unknown>
  connection_config?: Record<string, unknown>
  tags?: Record<string, string>
  /** What GET /connections/{id} answers as its credentials (default: an API key of its own) */
  credentials?: Record<string, unknown>
}

/** A provider as GET /providers/{provider} describes it (the parts the stand-in uses). */
export interface StandInProvider {
  auth_mode: string
  proxy: { base_url: string; paginate?: Record<string, unknown> }
}

export interface NangoStandIn {
  url: string
  secretKey: string
  connections: Map<string, StandInConnection>
  /** Requests received, as "METHOD path?query" */
  requests: string[]
  /** A page that answers 500 (the listing fails part-way), or null */
  failPage: number | null
  pageCap: number
  providers: Map<string, StandInProvider>
  /** A status every request is answered with (a Nango failing behind its load balancer), or null */
  failAll: number | null
  /** Requests the proxy forwarded, as "METHOD url" of the API */
  proxied: string[]
  stop(): Promise<void>
  restart(): Promise<void>
  put(connection: StandInConnection): void
  remove(providerConfigKey: string, connectionId: string): void
  close(): Promise<void>
}

const keyOf = (pck: string, id: string) => `${pck}\u0000${id}`
// Never passed on by a proxy (and the body is re-sent whole, so neither is its length or encoding).
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'content-encoding',
])

export async function startNangoStandIn(secretKey: string): Promise<NangoStandIn> {
  const stand: NangoStandIn = {
    url: '',
    secretKey,
    connections: new Map(),
    requests: [],
    failPage: null,
    pageCap: 2,
    put: (c) => void stand.connections.set(keyOf(c.provider_config_key, c.connection_id), c),
    remove: (pck, id) => void stand.connections.delete(keyOf(pck, id)),
    close: () => new Promise((resolve) => server.close(() => resolve())),
    providers: new Map(),
    failAll: null,
    proxied: [],
    stop: () =>
      new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
    restart: () => new Promise((resolve) => server.listen(port, '127.0.0.1', resolve)),
  }
  const created = new Date().toISOString()
  const publicShape = (c: StandInConnection, index: number) => ({
    id: index + 1,
    connection_id: c.connection_id,
    provider_config_key: c.provider_config_key,
    provider: c.provider,
    errors: [],
    end_user: null,
    tags: c.tags ?? {},
    metadata: c.metadata ?? null,
    created,
  })

  const server: Server = createServer((req, res) => {
    stand.requests.push(`${req.method} ${req.url}`)
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    const url = new URL(req.url ?? '/', 'http://stand-in')
    if (stand.failAll !== null) {
      return send(stand.failAll, { error: { code: 'server_error', message: 'Nango is failing' } })
    }
    if (req.headers.authorization !== `Bearer ${stand.secretKey}`) {
      return send(401, {
        error: {
          code: 'unknown_account',
          message: 'Authentication failed. The provided authorization header does not match any account.',
        },
      })
    }
    if (req.method === 'GET' && url.pathname === '/connections') {
      const limit = Math.min(Number(url.searchParams.get('limit') ?? 10_000), stand.pageCap)
      const page = Number(url.searchParams.get('page') ?? 0)
      if (page === stand.failPage) return send(500, { error: { code: 'server_error', message: 'boom' } })
      const all = [...stand.connections.values()]
      const slice = all.slice(page * limit, page * limit + limit)
      return send(200, { connections: slice.map((c, i) => publicShape(c, page * limit + i)) })
    }
    const match = /^\/connections\/([^/]+)$/.exec(url.pathname)
    if (req.method === 'GET' && match) {
      const pck = url.searchParams.get('provider_config_key') ?? ''
      const id = decodeURIComponent(match[1]!)
      const found = stand.connections.get(keyOf(pck, id))
      if (!found) return send(404, { error: { code: 'not_found', message: 'Connection not found' } })
      return send(200, {
        ...publicShape(found, 0),
        connection_config: found.connection_config ?? {},
        webhook_url_override: null,
        created_at: created,
        updated_at: created,
        last_fetched_at: created,
        credentials: found.credentials ?? { type: 'API_KEY', apiKey: `key-of-${id}` },
      })
    }
    const provider = /^\/providers\/([^/]+)$/.exec(url.pathname)
    if (req.method === 'GET' && provider) {
      const name = decodeURIComponent(provider[1]!)
      const described = stand.providers.get(name)
      if (!described) return send(404, { error: { code: 'not_found', message: `Unknown provider ${name}` } })
      return send(200, { data: { ...described, name, display_name: name } })
    }
    if (url.pathname === '/proxy' || url.pathname.startsWith('/proxy/')) {
      return void proxy(req, url).then(
        (answer) => {
          res.writeHead(answer.status, answer.headers)
          res.end(answer.body)
        },
        (err: Error) => send(500, { error: { code: 'server_error', message: err.message } }),
      )
    }
    send(404, { error: { code: 'not_found', message: 'No route' } })
  })
  /** Nango's proxy: the connection's API called with its token; the answer as the API gave it. */
  async function proxy(
    req: IncomingMessage,
    url: URL,
  ): Promise<{ status: number; headers: Record<string, string>; body: Buffer | string }> {
    const header = (name: string) => [req.headers[name]].flat()[0] ?? ''
    const found = stand.connections.get(keyOf(header('provider-config-key'), header('connection-id')))
    const unknown = (message: string) => ({
      status: 400,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ error: { code: 'unknown_connection', message } }),
    })
    if (!found) return unknown('Connection not found')
    const base = header('base-url-override') || stand.providers.get(found.provider)?.proxy.base_url
    if (!base) return unknown(`Provider ${found.provider} has no base URL`)
    const credentials = found.credentials ?? { apiKey: `key-of-${found.connection_id}` }
    const token = String(credentials.access_token ?? credentials.apiKey ?? '')
    const headers: Record<string, string> = { authorization: `Bearer ${token}` }
    for (const [name, value] of Object.entries(req.headers)) {
      if (name.startsWith('nango-proxy-')) headers[name.slice('nango-proxy-'.length)] = String(value)
    }
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const target = `${base.replace(/\/+$/, '')}${url.pathname.slice('/proxy'.length)}${url.search}`
    stand.proxied.push(`${req.method} ${target}`)
    const answer = await fetch(target, {
      method: req.method,
      headers,
      body: chunks.length > 0 ? Buffer.concat(chunks) : undefined,
    })
    // Nango's rule (without its forward-all flag): a streamed answer (chunked, or an attachment)
    // keeps its headers, hop-by-hop ones aside; a buffered one only content-type and request ids.
    const streamed =
      answer.headers.get('transfer-encoding') === 'chunked' ||
      /^(attachment|inline)\b/i.test(answer.headers.get('content-disposition') ?? '')
    const kept: Record<string, string> = {}
    for (const [name, value] of answer.headers) {
      const keep = streamed
        ? !HOP_BY_HOP.has(name) && !name.startsWith('access-control-')
        : ['content-type', 'x-request-id', 'x-correlation-id'].includes(name)
      if (keep) kept[name] = value
    }
    return { status: answer.status, headers: kept, body: Buffer.from(await answer.arrayBuffer()) }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  stand.url = `http://127.0.0.1:${port}`
  return stand
}

/** Nango's auth webhook body (packages/webhooks/lib/auth.ts), for a connection of the stand-in. */
export function authWebhook(
  operation: 'creation' | 'override' | 'refresh',
  c: { connection_id: string; provider_config_key: string; provider: string },
  success = true,
): Record<string, unknown> {
  return {
    from: 'nango',
    type: 'auth',
    connectionId: c.connection_id,
    providerConfigKey: c.provider_config_key,
    authMode: 'API_KEY',
    provider: c.provider,
    // Deliberately not the environment the URL names: the URL decides.
    environment: 'prod',
    operation,
    success,
    ...(success ? {} : { error: { type: 'refresh_token_external_error', description: 'invalid_grant' } }),
  }
}

/** Posts a webhook as Nango does: the JSON text, and its HMAC-SHA256 hex in X-Nango-Hmac-Sha256. */
export function postWebhook(url: string, body: unknown, signWith: string | null): Promise<Response> {
  const text = JSON.stringify(body)
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (signWith !== null) {
    headers['x-nango-hmac-sha256'] = createHmac('sha256', signWith).update(text).digest('hex')
  }
  return fetch(url, { method: 'POST', headers, body: text })
}
