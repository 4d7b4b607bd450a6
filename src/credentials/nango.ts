import { type Connection, expiryOf } from '../connections/store.ts'
import { HttpError } from '../errors.ts'
import { NangoApiError, nangoClient } from '../nango/client.ts'
import { nangoFailure } from '../nango/proxy.ts'
import type { Pairing } from '../nango/store.ts'

/**
 * A paired environment's credentials stay in its Nango (SPEC 6.5): the connection here has none,
 * and whoever needs them (a run, `nango.getToken` / `getConnection`, GET /connections/{id}, the
 * /proxy route) gets the connection completed from Nango's `GET /connections/{id}`, which refreshes
 * the token first when it expires soon. Nothing of them is stored.
 */

/**
 * Connections completed from Nango, with the provider Nango names for them: a run keeps one until
 * its token expires soon, then reads again.
 */
const completed = new WeakMap<Connection, string>()

export const heldByNango = (c: Connection): boolean => completed.has(c)

/** The provider of the connection's integration in Nango, when it was completed from there. */
export const nangoProviderOf = (c: Connection): string | undefined => completed.get(c)

/**
 * The connection with the credentials (and connection config, which a refresh may change) Nango
 * holds for it; `force` asks Nango to refresh first. A Nango that is down or answers 5xx is a 503
 * `nango_unavailable`; a refresh that failed there is `invalid_credentials`; a connection Nango no
 * longer has is 404 (the next reconcile stops its syncs). Every message names Nango and its URL.
 */
export async function completeFromNango(
  pairing: Pick<Pairing, 'url' | 'secretKey'>,
  seen: Connection,
  force: boolean,
): Promise<Connection> {
  const doing = `reading the credentials of connection '${seen.connectionId}' of integration '${seen.providerConfigKey}'`
  let held
  try {
    held = await nangoClient(pairing).getCredentials(seen.providerConfigKey, seen.connectionId, {
      forceRefresh: force,
    })
  } catch (err) {
    throw asHttpError(nangoFailure(err, pairing.url, doing))
  }
  if (!held) {
    throw new HttpError(
      404,
      'not_found',
      `Nango at ${pairing.url} has no connection '${seen.connectionId}' of integration '${seen.providerConfigKey}' (deleted there: the next reconcile stops its syncs)`,
    )
  }
  const credentials = held.credentials ?? null
  const connection: Connection = {
    ...seen,
    credentials,
    connectionConfig: held.connection_config ?? seen.connectionConfig,
    refresh: { ...seen.refresh, expiresAt: expiryOf(credentials) },
  }
  completed.set(connection, held.provider)
  return connection
}

function asHttpError(err: Error): Error {
  if (!(err instanceof NangoApiError)) return err
  const status = err.status
  if (status === undefined || status >= 500) {
    return new HttpError(503, 'nango_unavailable', err.message, undefined, { cause: err })
  }
  if (status === 400 || status === 424) {
    return new HttpError(424, 'invalid_credentials', err.message, undefined, { cause: err })
  }
  return new HttpError(502, 'nango_request_failed', err.message, undefined, { cause: err })
}
