import { proxyAnswer } from '../providers/proxy.ts'
import type { Pagination, ProxyConfig, ProxyResponse } from '../runtime/protocol.ts'
import { NangoApiError, nangoClient } from './client.ts'
import type { Pairing } from './store.ts'

/**
 * A paired environment's requests go through its Nango (SPEC 6.5): `nango.proxy` / `get` / `post`
 * ... of a run are sent to Nango's `/proxy` as `@nangohq/node` sends them, so Nango adds the
 * credentials, the provider's base URL and headers, and retries; its provider description gives
 * `nango.paginate` its defaults.
 */

/** Who the request is for, and until when it may take (the run's time limit). */
export interface NangoProxyTarget {
  pairing: Pick<Pairing, 'url' | 'secretKey'>
  providerConfigKey: string
  connectionId: string
  /** Epoch ms: the request is abandoned then, Nango's retries included */
  deadline: number
}

/**
 * One request through Nango's proxy: the endpoint and query after `/proxy`, `Connection-Id` and
 * `Provider-Config-Key`, `Retries`, `Retry-On` and `Base-Url-Override` as asked, and the call's own
 * headers as `Nango-Proxy-<name>`. Nango passes the API's answer through, status and body, so a
 * non-2xx answer throws the same error a direct call does (`err.response.status`); its message
 * names Nango. A Nango that cannot be reached fails the call, saying so.
 */
export async function proxyThroughNango(
  config: ProxyConfig,
  target: NangoProxyTarget,
): Promise<ProxyResponse> {
  const { response, where } = await sendThroughNango(config, target)
  return proxyAnswer(response, where, config.responseType)
}

/**
 * The request through Nango's proxy, and Nango's answer unread (the HTTP /proxy route passes it
 * on as it is); `where` names the request for messages.
 */
export async function sendThroughNango(
  config: ProxyConfig,
  target: NangoProxyTarget,
): Promise<{ response: Response; where: string }> {
  if (typeof config.endpoint !== 'string') throw new Error('proxy: endpoint must be a string')
  const base = target.pairing.url.replace(/\/+$/, '')
  const url = new URL(`${base}/proxy/${config.endpoint.replace(/^\/+/, '')}`)
  for (const [key, value] of Object.entries(config.params ?? {})) {
    if (value !== undefined) url.searchParams.set(key, String(value))
  }
  const method = (config.method ?? 'GET').toUpperCase()
  const headers = new Headers({
    authorization: `Bearer ${target.pairing.secretKey}`,
    'connection-id': target.connectionId,
    'provider-config-key': target.providerConfigKey,
  })
  if (config.baseUrlOverride) headers.set('base-url-override', config.baseUrlOverride)
  if (config.retries) headers.set('retries', String(config.retries))
  const retryOn = Array.isArray(config.retryOn) ? config.retryOn.filter((s) => Number.isInteger(s)) : []
  if (retryOn.length > 0) headers.set('retry-on', retryOn.join(','))
  for (const [name, value] of Object.entries(config.headers ?? {})) {
    headers.set(`nango-proxy-${name}`, value)
    // The body's type goes to Nango itself too, which reads the body by it (as the node client sends it)
    if (name.toLowerCase() === 'content-type') headers.set('content-type', value)
  }
  let body: string | undefined
  if (config.data !== undefined && method !== 'GET' && method !== 'HEAD') {
    body = typeof config.data === 'string' ? config.data : JSON.stringify(config.data)
    if (!headers.has('content-type')) headers.set('content-type', 'application/json')
  }
  const where = `proxy ${method} ${url.pathname.slice('/proxy'.length) || '/'} through Nango at ${base}`
  let response: Response
  try {
    response = await fetch(url, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(Math.max(1, target.deadline - Date.now())),
    })
  } catch (err) {
    const inner = (err as { cause?: { code?: string; message?: string } }).cause
    const reason = inner?.code ?? inner?.message ?? (err as Error).message
    throw new NangoUnreachableError(`${where} failed: Nango is unreachable at ${base} (${reason})`, {
      cause: err,
    })
  }
  return { response, where }
}

export class NangoUnreachableError extends Error {
  override name = 'NangoUnreachableError'
}

/**
 * The provider's default pagination from Nango's description of it (`GET /providers/{provider}`),
 * null when Nango describes none (or does not know the provider). A Nango that is down or answers
 * an error throws, naming Nango and its URL.
 */
export async function nangoPagination(
  pairing: Pick<Pairing, 'url' | 'secretKey'>,
  provider: string,
): Promise<Pagination | null> {
  try {
    const described = await nangoClient(pairing).getProvider(provider)
    return (described?.proxy?.paginate as Pagination | undefined) ?? null
  } catch (err) {
    throw nangoFailure(err, pairing.url, `reading the provider ${provider}`)
  }
}

/** A NangoApiError's message with Nango's URL in it ("Nango at URL answered 500 to ..."). */
export function nangoFailure(err: unknown, url: string, doing: string): Error {
  if (!(err instanceof NangoApiError)) return err as Error
  // The unreachable message names the URL already.
  const message =
    err.status === undefined
      ? err.message
      : err.message.replace(/^Nango /, `Nango at ${url.replace(/\/+$/, '')} `)
  return new NangoApiError(`${message}, ${doing}`, err.status, { cause: err })
}
