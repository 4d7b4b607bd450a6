import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import type { Logger } from '../logger.ts'
import type { Metrics } from './metrics.ts'

export interface MetricsListener {
  /** http://host:port, the port as bound (SYNCSTORE_METRICS_PORT=0 lets the system pick) */
  readonly url: string
  close(): Promise<void>
}

/**
 * GET /metrics on a listener of its own (SYNCSTORE_METRICS_PORT): metrics describe the whole
 * instance, every environment at once, so no environment's API key should read them; the port is
 * kept on the internal network instead. Anything else is answered with the API's error body.
 */
export async function listenMetrics(
  metrics: Metrics,
  options: { port: number; host: string; requestTimeoutMs: number; logger: Logger },
): Promise<MetricsListener> {
  const server = createServer((request, response) => void answer(metrics, options.logger, request, response))
  // The API's slow-client limits: a scraper sends a few hundred bytes of headers and no body.
  server.requestTimeout = options.requestTimeoutMs
  server.headersTimeout = options.requestTimeoutMs
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { address, port } = server.address() as AddressInfo
  const host = address.includes(':') ? `[${address}]` : address
  return { url: `http://${host}:${port}`, close: () => closeServer(server) }
}

async function answer(
  metrics: Metrics,
  logger: Logger,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const path = (request.url ?? '/').split('?')[0]
  if (path !== '/metrics') return fail(response, 404, 'not_found', `${path} is not here: try GET /metrics`)
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD')
    return fail(response, 405, 'method_not_allowed', `${request.method} /metrics: only GET is allowed`)
  }
  let text: string
  try {
    text = await metrics.registry.metrics()
  } catch (err) {
    logger.error({ err }, 'metrics: scrape failed')
    return fail(response, 500, 'server_error', 'The metrics could not be collected')
  }
  response.writeHead(200, {
    'content-type': metrics.registry.contentType,
    'content-length': Buffer.byteLength(text),
  })
  response.end(request.method === 'HEAD' ? undefined : text)
}

function fail(response: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } })
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  })
  response.end(body)
}

/** A scraper keeps its connection open between scrapes: closed at once, with any scrape in flight. */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()))
    server.closeAllConnections()
  })
}
