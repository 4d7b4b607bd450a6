import { createHmac } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * A local stand-in of Nango's API, written from Nango's API reference: `GET /connections` (paged
 * by `page` and `limit`, zero-based; this one caps a page at `pageCap` connections, as a real one
 * caps at its maximum) and `GET /connections/{connectionId}?provider_config_key=` (the connection
 * with its credentials, 404 `not_found` otherwise), both behind `Authorization: Bearer <secret key>`
 * (401 `unknown_account` otherwise). And Nango's auth webhooks, signed as Nango signs them.
 */

export interface StandInConnection {
  connection_id: string
  provider_config_key: string
  provider: string
  metadata?: Record<string, unknown>
  connection_config?: Record<string, unknown>
  tags?: Record<string, string>
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
  put(connection: StandInConnection): void
  remove(providerConfigKey: string, connectionId: string): void
  close(): Promise<void>
}

const keyOf = (pck: string, id: string) => `${pck}\u0000${id}`

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
        credentials: { type: 'API_KEY', apiKey: `key-of-${id}` },
      })
    }
    send(404, { error: { code: 'not_found', message: 'No route' } })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  stand.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
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
