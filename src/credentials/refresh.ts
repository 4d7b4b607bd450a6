import type { Kysely } from 'kysely'

import { type Connection, expiryOf, findConnection, type JsonObject } from '../connections/store.ts'
import type { Sealer } from '../crypto.ts'
import type { Database } from '../db/database.ts'
import { HttpError } from '../errors.ts'
import { countRefresh } from '../metrics/metrics.ts'
import { pairingOf } from '../nango/store.ts'
import { interpolate } from '../providers/template.ts'
import type { Provider } from '../providers/types.ts'
import { completeFromNango, heldByNango } from './nango.ts'
import { lockConnection, recordRefreshFailure, saveRefreshed } from './store.ts'
import { type Grant, type OAuthClient, requestToken } from './token-request.ts'

/**
 * Credentials that stay valid (SPEC 6.4): before a run, a proxy call or GET /connections/{id} uses
 * a connection's credentials, an OAuth2 access token that expires within 15 minutes is exchanged
 * for a new one; OAUTH2_CC connections get theirs by the client-credentials grant. A refresh runs
 * under a lock on the connection row, so concurrent callers in any number of processes cause one
 * request to the provider: the others wait for the lock, read what it stored and use that.
 *
 * A connection of an environment paired with Nango (SPEC 6.5) has no credentials here: they are
 * read from Nango each time (credentials/nango.ts), and Nango refreshes them.
 */

// Nango's margin (REFRESH_MARGIN_MS): a token is refreshed when it expires within 15 minutes, so a
// run or request that starts with it does not see it expire half-way; a provider's
// token_expiration_buffer (seconds) replaces it.
const REFRESH_MARGIN_MS = 15 * 60_000
// After a failed refresh, callers get that failure for 30 s instead of asking the provider again
// (Nango's REFRESH_FAILURE_COOLDOWN_MS); force_refresh asks at once.
const FAILURE_COOLDOWN_MS = 30_000
// Nango's default life of a client-credentials token whose response names none.
const CC_DEFAULT_LIFE_MS = 55 * 60_000

/** What refreshing a connection of an integration needs: its provider and its OAuth client. */
export interface OAuthApp {
  /** The provider the integration uses (its catalogue entry, integration.json over it) */
  provider: Provider | undefined
  /** The integration's OAuth client id and secret, when it has them */
  client: OAuthClient | undefined
}

export type OAuthAppOf = (environmentId: number, providerConfigKey: string) => Promise<OAuthApp>

export interface RefreshDeps {
  db: Kysely<Database>
  sealer: Sealer
  oauthApp: OAuthAppOf
}

export interface ConnectionKey {
  environmentId: number
  providerConfigKey: string
  connectionId: string
}

/**
 * The connection with credentials fit for use: refreshed first when they expire soon (or `force`).
 * Undefined when the connection does not exist. A failed refresh is recorded on the connection
 * (committed, whatever happens next) and thrown as an HttpError `invalid_credentials` whose message
 * says what the provider answered.
 */
export async function freshConnection(
  deps: RefreshDeps,
  key: ConnectionKey,
  /** `provider`: the integration's, when the caller has it (its token_expiration_buffer counts) */
  { force = false, provider }: { force?: boolean; provider?: Provider | undefined } = {},
): Promise<Connection | undefined> {
  const { db, sealer } = deps
  const seen = await findConnection(db, sealer, key.environmentId, key.providerConfigKey, key.connectionId)
  if (!seen) return seen
  const pairing = await pairingOf(db, sealer, key.environmentId)
  if (pairing) return completeFromNango(pairing, seen, force)
  if (!needsRefresh(seen, force, provider)) return seen
  if (!force) throwIfCoolingDown(seen)
  // Callers of this process that need the same refresh share one: one database connection waits
  // on the row lock instead of one per caller (the lock is what makes it one across processes).
  let inFlight = flights.get(db)
  if (!inFlight) flights.set(db, (inFlight = new Map()))
  const flightKey = `${seen.id}:${force}`
  let flight = inFlight.get(flightKey)
  if (!flight) {
    flight = refreshLocked(deps, key, seen, force).finally(() => inFlight.delete(flightKey))
    inFlight.set(flightKey, flight)
  }
  return flight
}

/** Refreshes in progress in this process, per database and connection (a pure optimisation). */
const flights = new WeakMap<Kysely<Database>, Map<string, Promise<Connection | undefined>>>()

/** The refresh itself, under the row lock; `seen` is the connection as read before it. */
async function refreshLocked(
  deps: RefreshDeps,
  key: ConnectionKey,
  seen: Connection,
  force: boolean,
): Promise<Connection | undefined> {
  const { db, sealer } = deps
  // Read before the lock: the embedded database has one connection, held by the transaction.
  const app = await deps.oauthApp(key.environmentId, key.providerConfigKey)

  let failure: CredentialsError | undefined
  const result = await db.transaction().execute(async (trx) => {
    const locked = await lockConnection(trx, sealer, seen.id)
    if (!locked) return undefined
    // Another caller refreshed (or failed to) while this one waited: its outcome is this one's.
    const { lastSuccess, lastFailure } = locked.refresh
    if (lastSuccess && !sameTime(lastSuccess, seen.refresh.lastSuccess)) return locked
    if (lastFailure && !sameTime(lastFailure, seen.refresh.lastFailure)) {
      failure = refreshFailed(locked, locked.refresh.error ?? 'unknown error')
      return locked
    }
    if (!needsRefresh(locked, force, app.provider)) return locked
    let credentials: JsonObject
    try {
      credentials = await obtainCredentials(locked, app)
    } catch (err) {
      const message = (err as Error).message
      // Committed with the transaction: the failure is on the connection whatever the caller does.
      await recordRefreshFailure(trx, sealer, locked.id, message)
      countRefresh(db, 'failure')
      failure = refreshFailed(locked, message)
      return locked
    }
    countRefresh(db, 'success')
    return saveRefreshed(trx, sealer, locked.id, credentials)
  })
  if (failure) throw failure
  return result
}

/**
 * Credentials that could not be renewed. Its name is what a failed run's error starts with
 * ("CredentialsError: Refreshing the credentials of connection ... failed: ...").
 */
class CredentialsError extends HttpError {
  override name = 'CredentialsError'
}

/**
 * Whether credentials already read must be renewed before use (a run re-checks the ones it keeps):
 * Nango's are read again once they expire soon (Nango refreshes them then).
 */
export const credentialsStale = (c: Connection, provider?: Provider): boolean =>
  heldByNango(c) ? expiresSoon(c, provider) : needsRefresh(c, false, provider)

/** Whether the connection's credentials must be renewed before use. */
function needsRefresh(c: Connection, force: boolean, provider: Provider | undefined): boolean {
  const credentials = c.credentials
  if (credentials?.type === 'OAUTH2') {
    // Without a refresh token there is nothing to exchange, even when forced (as Nango).
    if (typeof credentials.refresh_token !== 'string') return false
    return force || expiresSoon(c, provider)
  }
  if (credentials?.type === 'OAUTH2_CC') {
    return force || !credentials.token || expiresSoon(c, provider)
  }
  return false
}

function expiresSoon(c: Connection, provider: Provider | undefined): boolean {
  const at = c.refresh.expiresAt ?? expiryOf(c.credentials)
  if (!at) return false
  const buffer = provider?.token_expiration_buffer
  const margin = typeof buffer === 'number' ? buffer * 1000 : REFRESH_MARGIN_MS
  return at.getTime() - Date.now() < margin
}

function throwIfCoolingDown(c: Connection): void {
  const failed = c.refresh.lastFailure
  if (!failed || Date.now() - failed.getTime() >= FAILURE_COOLDOWN_MS) return
  throw new CredentialsError(
    424,
    'invalid_credentials',
    `${refreshPrefix(c)}: ${c.refresh.error ?? 'unknown error'} (at ${failed.toISOString()}; not retried ` +
      `within ${FAILURE_COOLDOWN_MS / 1000} s, force_refresh=true retries now)`,
  )
}

const refreshPrefix = (c: Connection) =>
  `Refreshing the credentials of connection '${c.connectionId}' of integration '${c.providerConfigKey}' failed`

const refreshFailed = (c: Connection, message: string) =>
  new CredentialsError(400, 'invalid_credentials', `${refreshPrefix(c)}: ${message}`)

const sameTime = (a: Date | null, b: Date | null) => (a?.getTime() ?? null) === (b?.getTime() ?? null)

/** New credentials from the provider's token endpoint, in the shape Nango stores them. */
async function obtainCredentials(c: Connection, app: OAuthApp): Promise<JsonObject> {
  const old = c.credentials!
  const provider = app.provider
  if (!provider) {
    throw new Error(`the integration's provider is unknown, so its token URL is too`)
  }
  if (old.type === 'OAUTH2') {
    const override = old.config_override as { client_id?: string; client_secret?: string } | undefined
    const client =
      override?.client_id && override.client_secret
        ? { clientId: override.client_id, clientSecret: override.client_secret }
        : app.client
    if (!client) throw new Error('the integration has no OAuth client id and secret to refresh with')
    const grant: Grant = { grant_type: 'refresh_token', refresh_token: String(old.refresh_token) }
    const url = tokenUrl(provider, 'OAUTH2', c.connectionConfig, true)
    const raw = await requestToken(url, provider, client, grant)
    const accessToken = accessTokenOf(raw, provider)
    return {
      type: 'OAUTH2',
      access_token: accessToken,
      // Many providers answer a refresh without a new refresh token: the old one stays valid.
      refresh_token: typeof raw.refresh_token === 'string' ? raw.refresh_token : old.refresh_token,
      ...expiresAtOf(raw, null),
      raw,
      ...(override ? { config_override: override } : {}),
    }
  }
  const ownId = typeof old.client_id === 'string' && old.client_id ? old.client_id : undefined
  const client = ownId ? { clientId: ownId, clientSecret: String(old.client_secret ?? '') } : app.client
  if (!client) throw new Error('the connection has no client id and secret for the client_credentials grant')
  const scopes = c.connectionConfig.oauth_scopes
  const grant: Grant = {
    grant_type: 'client_credentials',
    scope:
      typeof scopes === 'string' && scopes
        ? scopes.split(',').join(provider.scope_separator ?? ' ')
        : undefined,
  }
  const raw = await requestToken(
    tokenUrl(provider, 'OAUTH2_CC', c.connectionConfig, false),
    provider,
    client,
    grant,
  )
  const token = raw.access_token ?? (raw.data as { token?: unknown } | undefined)?.token ?? raw.jwt
  if (typeof token !== 'string' || !token) {
    throw new Error('the token endpoint answered without an access_token')
  }
  return {
    type: 'OAUTH2_CC',
    token,
    client_id: client.clientId,
    client_secret: client.clientSecret,
    ...expiresAtOf(raw, CC_DEFAULT_LIFE_MS),
    raw,
    ...(old.client_certificate ? { client_certificate: old.client_certificate } : {}),
    ...(old.client_private_key ? { client_private_key: old.client_private_key } : {}),
  }
}

function accessTokenOf(raw: JsonObject, provider: Provider): string {
  let token: unknown = raw.access_token
  const path = provider.alternate_access_token_response_path
  if (token === undefined && path) {
    token = path.split('.').reduce<unknown>((v, k) => (v as JsonObject | undefined)?.[k], raw)
    if (token && typeof token === 'object') token = (token as JsonObject).access_token
  }
  if (typeof token !== 'string' || !token) {
    throw new Error('the token endpoint answered without an access_token')
  }
  return token
}

/** `expires_at` from the response's expires_at or expires_in (seconds); else `defaultMs` from now. */
function expiresAtOf(raw: JsonObject, defaultMs: number | null): { expires_at?: string } {
  const at = expiryAt(raw.expires_at)
  if (at) return { expires_at: at.toISOString() }
  const seconds = Number(raw.expires_in)
  if (raw.expires_in !== undefined && Number.isFinite(seconds)) {
    return { expires_at: new Date(Date.now() + seconds * 1000).toISOString() }
  }
  return defaultMs === null ? {} : { expires_at: new Date(Date.now() + defaultMs).toISOString() }
}

/** An expiry as an ISO date, epoch seconds or epoch milliseconds. */
function expiryAt(value: unknown): Date | null {
  if (typeof value === 'number') return new Date(value < 1e12 ? value * 1000 : value)
  if (typeof value !== 'string' || !value) return null
  const date = /^\d+$/.test(value) ? expiryAt(Number(value)) : new Date(value)
  return date && !Number.isNaN(date.getTime()) ? date : null
}

/** The provider's token (or refresh) URL, its `${connectionConfig.x}` templates filled in. */
function tokenUrl(provider: Provider, mode: string, config: JsonObject, refresh: boolean): string {
  const template =
    (refresh ? provider.refresh_url : undefined) ??
    (typeof provider.token_url === 'string' ? provider.token_url : provider.token_url?.[mode])
  if (!template) throw new Error(`the provider has no token_url`)
  return interpolate(template, { connectionConfig: config }, 'the token URL')
}
