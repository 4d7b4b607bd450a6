import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { Kysely } from 'kysely'
import { Type } from 'typebox'

import type { Connection } from '../connections/store.ts'
import { oauthApps } from '../credentials/app.ts'
import { freshConnection } from '../credentials/refresh.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { HttpError } from '../errors.ts'
import { described, errorResponse, errors } from '../http/schemas.ts'
import { NangoUnreachableError, sendThroughNango } from '../nango/proxy.ts'
import { pairingOf } from '../nango/store.ts'
import type { IntegrationConfig } from '../syncs/definitions.ts'
import { sendProxied } from './proxy.ts'
import { MissingVariableError } from './template.ts'
import type { Providers } from './types.ts'

export interface ProxyRoutesOptions {
  db: Kysely<Database>
  sealer: Sealer
  providers: Providers
}

// What Nango's proxy sends back of a successful answer's headers (its default, without the
// forward-all flag); an error answer keeps all but these.
const SUCCESS_HEADERS = ['content-type', 'x-request-id', 'x-correlation-id']
const NEVER_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // fetch has already decoded the body: its length and encoding no longer hold
  'content-length',
  'content-encoding',
])
const FORWARD_PREFIX = 'nango-proxy-'
// A paired environment's request waits this long for its Nango (and Nango's retries).
const NANGO_PROXY_TIMEOUT_MS = 120_000
// A request asks for this many retries at most (each may wait for the API's rate limit).
const MAX_RETRIES = 10

/**
 * Nango's HTTP proxy, `ALL /proxy/*` as `@nangohq/node`'s proxy/get/post/... call it: the path and
 * query after /proxy go to the connection's API through its provider (src/providers/proxy.ts), with
 * the `Nango-Proxy-*` headers forwarded without their prefix. The API's answer comes back as it
 * was, status included.
 */
export const proxyRoutes: FastifyPluginAsync<ProxyRoutesOptions> = async (app, options) => {
  const handler = (request: FastifyRequest, reply: FastifyReply) => proxy(options, request, reply)
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const) {
    app.route({
      method,
      url: '/proxy/*',
      config: { scope: 'environment:proxy' },
      schema: {
        tags: ['connections'],
        summary: `${method} a path of the connection's API through its provider`,
        operationId: `proxy${method[0]}${method.slice(1).toLowerCase()}`,
        description:
          "Nango's proxy: the path and query after /proxy go to the API of the connection named by " +
          '`Connection-Id` and `Provider-Config-Key`, with its credentials, at the base URL of the ' +
          "integration's provider (built-in catalogue, SYNCSTORE_PROVIDERS_FILE, integration.json). " +
          '`Nango-Proxy-<name>` headers are sent as `<name>`; `Retries` (default 0) retries 429 and 5xx ' +
          "(or the provider's codes, and `Retry-On`), waiting as the API's rate-limit headers say; " +
          '`Base-Url-Override` replaces the base URL. In an environment paired with Nango, the request ' +
          "goes through that Nango's own /proxy, which adds the credentials and knows the provider.",
        response: {
          200: described(
            "The API's answer as it gave it, status included (its error statuses too).",
            Type.Unknown(),
          ),
          ...errors(400, 401, 403),
          404: errorResponse('`unknown_provider_config`: no integration has this Provider-Config-Key.'),
          ...errors(415),
          502: errorResponse('`proxy_request_failed`: the API could not be reached.'),
          503: errorResponse('`nango_unavailable`: the paired Nango could not be reached.'),
        },
      },
      handler,
    })
  }
}

async function proxy(
  { db, sealer, providers }: ProxyRoutesOptions,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const { environmentId } = request.principal
  const options = proxyHeaders(request)
  // The path and query after /proxy, as Nango takes them
  const endpoint = request.url.replace(/^\/proxy\/?/, '/')
  const call = {
    endpoint,
    method: request.method,
    headers: options.forwarded,
    data: request.body,
    retries: options.retries,
    retryOn: options.retryOn,
    ...(options.baseUrlOverride ? { baseUrlOverride: options.baseUrlOverride } : {}),
  }
  // A paired environment's requests go through its Nango, which knows the connection, its
  // credentials and its provider (SPEC 6.5).
  const pairing = await pairingOf(db, sealer, environmentId)
  if (pairing) {
    try {
      const { response } = await sendThroughNango(call, {
        pairing,
        providerConfigKey: options.providerConfigKey,
        connectionId: options.connectionId,
        deadline: Date.now() + NANGO_PROXY_TIMEOUT_MS,
      })
      return await passOn(reply, response)
    } catch (err) {
      if (!(err instanceof NangoUnreachableError)) throw err
      throw new HttpError(503, 'nango_unavailable', err.message, undefined, { cause: err })
    }
  }
  const integration = await db
    .selectFrom('integrations')
    .select(['provider', 'config'])
    .where('environment_id', '=', environmentId)
    .where('unique_key', '=', options.providerConfigKey)
    .executeTakeFirst()
  if (!integration) {
    throw new HttpError(
      404,
      'unknown_provider_config',
      'Provider config not found for the given provider config key. Please make sure the provider config exists.',
    )
  }
  const connection = await proxyConnection({ db, sealer, providers }, environmentId, options)
  if (!connection) {
    throw new HttpError(
      400,
      'unknown_connection',
      `No connection ${options.connectionId} of integration ${options.providerConfigKey}`,
    )
  }
  let sent
  try {
    sent = await sendProxied(call, {
      provider: providers.resolve(integration.provider, integration.config as IntegrationConfig),
      providerName: integration.provider,
      connection,
      retryOn: options.retryOn,
    })
  } catch (err) {
    if (err instanceof MissingVariableError) {
      throw new HttpError(400, 'missing_template_variable', err.message)
    }
    throw new HttpError(502, 'proxy_request_failed', (err as Error).message, undefined, { cause: err })
  }
  return passOn(reply, sent.response)
}

/** The API's answer as it came: status, body, and the headers Nango's proxy passes on. */
async function passOn(reply: FastifyReply, response: Response): Promise<FastifyReply> {
  const bytes = Buffer.from(await response.arrayBuffer())
  for (const [name, value] of response.headers) {
    const forwarded = response.ok ? SUCCESS_HEADERS.includes(name) : !NEVER_FORWARDED.has(name)
    if (forwarded && !name.startsWith('access-control-')) void reply.header(name, value)
  }
  if (response.status === 204) return reply.code(204).send()
  return reply.code(response.status).send(bytes)
}

/**
 * The one place the proxy reads a connection's credentials: refreshed first when an OAuth2 token
 * expires soon (src/credentials/); a failed refresh is an `invalid_credentials` error.
 */
function proxyConnection(
  { db, sealer, providers }: ProxyRoutesOptions,
  environmentId: number,
  key: { providerConfigKey: string; connectionId: string },
): Promise<Connection | undefined> {
  return freshConnection(
    { db, sealer, oauthApp: oauthApps(db, sealer, providers) },
    { environmentId, providerConfigKey: key.providerConfigKey, connectionId: key.connectionId },
  )
}

interface ProxyHeaders {
  providerConfigKey: string
  connectionId: string
  retries: number
  baseUrlOverride: string | undefined
  retryOn: number[]
  /** `Nango-Proxy-*` headers without their prefix */
  forwarded: Record<string, string>
}

/** The proxy's own headers, checked as Nango checks them (400 `invalid_headers`). */
function proxyHeaders(request: FastifyRequest): ProxyHeaders {
  const h = request.headers
  const one = (name: string) => {
    const v = h[name]
    return Array.isArray(v) ? v[0] : v
  }
  const problems: { path: string[]; message: string }[] = []
  const invalid = (name: string, message: string) =>
    problems.push({ path: [name], message: `${name} ${message}` })
  const providerConfigKey = one('provider-config-key')?.trim() ?? ''
  const connectionId = one('connection-id')?.trim() ?? ''
  if (!providerConfigKey) invalid('provider-config-key', 'is required')
  if (!connectionId) invalid('connection-id', 'is required')
  const retriesText = one('retries')
  const retries = retriesText === undefined || retriesText === '' ? 0 : Number(retriesText)
  if (!Number.isInteger(retries) || retries < 0 || retries > MAX_RETRIES) {
    invalid('retries', `must be an integer from 0 to ${MAX_RETRIES}`)
  }
  const baseUrlOverride = one('base-url-override') || undefined
  if (baseUrlOverride && !URL.canParse(baseUrlOverride)) invalid('base-url-override', 'must be a URL')
  const retryOnText = one('retry-on')
  if (retryOnText !== undefined && !/^\d+(,\d+)*$/.test(retryOnText)) {
    invalid('retry-on', 'must be status codes separated by commas')
  }
  if (problems.length > 0) {
    throw new HttpError(
      400,
      'invalid_headers',
      problems.map((p) => p.message).join('; '),
      problems.map((p) => ({ code: 'invalid_header', ...p })),
    )
  }
  const forwarded: Record<string, string> = {}
  const raw = request.raw.rawHeaders
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!
    if (name.toLowerCase().startsWith(FORWARD_PREFIX)) {
      forwarded[name.slice(FORWARD_PREFIX.length)] = raw[i + 1]!
    }
  }
  // The client's own Content-Type describes the body it sent, which goes on as it is
  const contentType = one('content-type')
  if (contentType && request.body !== undefined) forwarded['content-type'] ??= contentType
  return {
    providerConfigKey,
    connectionId,
    retries,
    baseUrlOverride,
    retryOn: retryOnText ? retryOnText.split(',').map(Number) : [],
    forwarded,
  }
}
