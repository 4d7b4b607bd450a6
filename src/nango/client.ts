/**
 * A small client of Nango's public HTTP API (the endpoints a paired environment reads), written
 * from Nango's API reference and its server's controllers: `Authorization: Bearer <secret key>`,
 * JSON bodies, errors as `{error: {code, message}}`.
 */

/** What GET /connections lists of a connection (Nango's ApiPublicConnection). */
export interface NangoListedConnection {
  connection_id: string
  provider_config_key: string
  provider: string
}

/** GET /connections/{id} (Nango's ApiPublicConnectionFull); credentials only with that scope. */
export interface NangoConnection extends NangoListedConnection {
  metadata: Record<string, unknown> | null
  connection_config: Record<string, unknown>
  tags?: Record<string, string> | null
  end_user?: {
    id: string
    email?: string | null
    display_name?: string | null
    tags?: Record<string, string> | null
  } | null
  credentials?: Record<string, unknown>
}

/** GET /providers/{provider}: Nango's description of a provider (only what syncstore reads of it). */
export interface NangoProvider {
  name: string
  auth_mode?: string
  proxy?: { base_url?: string; paginate?: Record<string, unknown> }
}

/** Nango could not be reached, or answered something other than what was asked. */
export class NangoApiError extends Error {
  override name = 'NangoApiError'
  constructor(
    message: string,
    /** The HTTP status Nango answered, or undefined when it could not be reached */
    readonly status?: number,
    options?: { cause: unknown },
  ) {
    super(message, options)
  }
}

// Nango's own maximum page (getConnections.ts: limit max 2000); its default (10,000) is larger.
const PAGE_SIZE = 1000
// A Nango that answers nothing within 10 s is treated as down: webhooks are retried by Nango, and
// the reconcile runs again at its next interval.
const TIMEOUT_MS = 10_000

export interface NangoClient {
  /** Every connection, page by page (`page` and `limit`); throws if any page fails. */
  listConnections(signal?: AbortSignal): Promise<NangoListedConnection[]>
  /** One connection with its metadata and config (and credentials, with the scope); undefined on 404. */
  getConnection(
    providerConfigKey: string,
    connectionId: string,
    signal?: AbortSignal,
  ): Promise<NangoConnection | undefined>
  /** Throws a NangoApiError saying why unless the key is accepted (one listing page of one). */
  checkKey(): Promise<void>
  /**
   * The connection with its full credentials (`refresh_token=true`), which Nango refreshes first
   * when they expire soon (or when `forceRefresh`); undefined on 404.
   */
  getCredentials(
    providerConfigKey: string,
    connectionId: string,
    options?: { forceRefresh?: boolean },
  ): Promise<NangoConnection | undefined>
  /** Nango's description of a provider (`GET /providers/{provider}`); undefined when it has none. */
  getProvider(provider: string): Promise<NangoProvider | undefined>
}

export function nangoClient(pairing: { url: string; secretKey: string }): NangoClient {
  const base = pairing.url.replace(/\/+$/, '')

  async function call(path: string, signal?: AbortSignal): Promise<{ status: number; body: unknown }> {
    const timeout = AbortSignal.timeout(TIMEOUT_MS)
    let response: Response
    try {
      response = await fetch(`${base}${path}`, {
        headers: { authorization: `Bearer ${pairing.secretKey}`, accept: 'application/json' },
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      })
    } catch (cause) {
      // fetch says "fetch failed"; why (ECONNREFUSED, ENOTFOUND, a timeout) is in its cause.
      const inner = (cause as { cause?: { code?: string; message?: string } }).cause
      const reason = inner?.code ?? inner?.message ?? (cause as Error).message
      throw new NangoApiError(`Nango is unreachable at ${base} (${reason})`, undefined, { cause })
    }
    const text = await response.text()
    let body: unknown = undefined
    try {
      body = text === '' ? undefined : JSON.parse(text)
    } catch {
      // Not JSON: reported below by status.
    }
    return { status: response.status, body }
  }

  function failure(what: string, status: number, body: unknown): NangoApiError {
    const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error
    const detail = error?.message ?? error?.code ?? 'no error body'
    if (status === 401 || status === 403) {
      return new NangoApiError(`Nango refused the secret key (${status}: ${detail})`, status)
    }
    return new NangoApiError(`Nango answered ${status} to ${what} (${detail})`, status)
  }

  return {
    async listConnections(signal) {
      const all: NangoListedConnection[] = []
      for (let page = 0; ; page++) {
        const { status, body } = await call(`/connections?limit=${PAGE_SIZE}&page=${page}`, signal)
        const connections = (body as { connections?: unknown } | undefined)?.connections
        if (status !== 200 || !Array.isArray(connections)) {
          throw failure(`GET /connections (page ${page})`, status, body)
        }
        // Until an empty page: a Nango may cap a page below the limit asked for (its maximum, or a
        // lower default in a later version), so a short page does not prove it was the last.
        if (connections.length === 0) return all
        all.push(...(connections as NangoListedConnection[]))
      }
    },
    async getConnection(providerConfigKey, connectionId, signal) {
      const query = new URLSearchParams({ provider_config_key: providerConfigKey })
      const path = `/connections/${encodeURIComponent(connectionId)}?${query}`
      const { status, body } = await call(path, signal)
      if (status === 404) return undefined
      if (status !== 200 || typeof body !== 'object' || body === null) {
        throw failure(`GET /connections/${connectionId}`, status, body)
      }
      return body as NangoConnection
    },
    async checkKey() {
      const { status, body } = await call('/connections?limit=1')
      if (status !== 200) throw failure('GET /connections', status, body)
    },
    async getCredentials(providerConfigKey, connectionId, options = {}) {
      // The query @nangohq/node's getConnection sends.
      const query = new URLSearchParams({
        provider_config_key: providerConfigKey,
        force_refresh: String(options.forceRefresh ?? false),
        refresh_token: 'true',
      })
      const { status, body } = await call(`/connections/${encodeURIComponent(connectionId)}?${query}`)
      if (status === 404) return undefined
      if (status !== 200 || typeof body !== 'object' || body === null) {
        throw failure(`GET /connections/${connectionId}`, status, body)
      }
      return body as NangoConnection
    },
    async getProvider(provider) {
      const { status, body } = await call(`/providers/${encodeURIComponent(provider)}`)
      if (status === 404) return undefined
      const data = (body as { data?: unknown } | undefined)?.data
      if (status !== 200 || typeof data !== 'object' || data === null) {
        throw failure(`GET /providers/${provider}`, status, body)
      }
      return data as NangoProvider
    },
  }
}
