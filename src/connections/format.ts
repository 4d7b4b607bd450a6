import type { Connection, ConnectionSummary, JsonObject, RefreshState } from './store.ts'

/** Row-to-API mapping for connections, in Nango's key order (formatters/connection.ts). */

export type ProviderOf = (providerConfigKey: string) => string

function endUserOut(endUser: JsonObject | null) {
  if (!endUser) return null
  return {
    id: String(endUser.id),
    display_name: (endUser.display_name as string | undefined) ?? null,
    email: (endUser.email as string | undefined) ?? null,
    tags: (endUser.tags as Record<string, string> | undefined) ?? null,
    organization: null,
  }
}

/**
 * Nango lists a connection's active problems in `errors` (`{type: 'auth', log_id}` after a failed
 * refresh, until one succeeds). syncstore keeps no log per refresh; its entry says instead what
 * failed, when, and how many attempts in a row.
 */
function errorsOf(refresh: Pick<RefreshState, 'lastFailure' | 'error' | 'attempts'>) {
  if (!refresh.lastFailure) return []
  return [
    {
      type: 'auth',
      message: refresh.error ?? 'unknown error',
      failed_at: refresh.lastFailure.toISOString(),
      attempts: refresh.attempts,
    },
  ]
}

/** The fields every connection format starts with, in Nango's order. */
function connectionHead(c: ConnectionSummary | Connection, provider: ProviderOf) {
  return {
    id: c.id,
    connection_id: c.connectionId,
    provider_config_key: c.providerConfigKey,
    provider: provider(c.providerConfigKey),
    errors: errorsOf(c.refresh),
    end_user: endUserOut(c.endUser),
    tags: c.tags,
    metadata: c.metadata,
  }
}

/**
 * Nango's single-connection formats differ in their timestamps: the import answer uses
 * `toISOString()`, the GET answer the same with `+00:00` instead of `Z`.
 */
export function connectionFull(
  c: Connection,
  provider: ProviderOf,
  credentials: JsonObject,
  timestamps: 'iso' | 'offset',
) {
  const time = (d: Date) => (timestamps === 'iso' ? d.toISOString() : d.toISOString().replace('Z', '+00:00'))
  return {
    ...connectionHead(c, provider),
    connection_config: c.connectionConfig,
    webhook_url_override: null,
    created_at: time(c.createdAt),
    updated_at: time(c.updatedAt),
    last_fetched_at: null,
    credentials,
  }
}

export function connectionListItem(c: ConnectionSummary, provider: ProviderOf) {
  return {
    ...connectionHead(c, provider),
    created: c.created,
  }
}

/**
 * Nango removes refresh tokens from returned credentials unless asked for them: every key that
 * reads "refreshtoken" once lower-cased and stripped of `_`, at any depth.
 */
export function withoutRefreshTokens(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutRefreshTokens)
  if (value === null || typeof value !== 'object') return value
  const out: JsonObject = {}
  for (const [key, child] of Object.entries(value)) {
    if (key.replace(/_/g, '').toLowerCase() === 'refreshtoken') continue
    out[key] = withoutRefreshTokens(child)
  }
  return out
}

/** Tags derived from the end user, then the explicit tags on top (Nango's buildTagsFromEndUser). */
export function tagsFor(tags: Record<string, string> | undefined, endUser: JsonObject | undefined) {
  const out: Record<string, string> = {}
  if (endUser) {
    out.end_user_id = String(endUser.id)
    if (typeof endUser.email === 'string') out.end_user_email = endUser.email
    if (typeof endUser.display_name === 'string') out.end_user_display_name = endUser.display_name
    for (const [k, v] of Object.entries((endUser.tags as Record<string, string> | undefined) ?? {})) {
      out[k.toLowerCase()] = v
    }
  }
  for (const [k, v] of Object.entries(tags ?? {})) out[k.toLowerCase()] = v
  return out
}
