import type { Provider } from '../providers/types.ts'

/**
 * One request to a provider's OAuth2 token endpoint (RFC 6749 sections 4.4 and 6): the
 * refresh_token grant for OAUTH2 connections, the client_credentials grant for OAUTH2_CC ones, sent
 * the way the provider's catalogue entry says (Nango's `token_request_auth_method`,
 * `authorization_method`, `body_format`, `token_params`, `refresh_params`).
 */

// A token endpoint answers in well under a second; the connection row stays locked meanwhile, so
// a hung one must not hold it (or, embedded, the one database connection) for longer than this.
const TOKEN_REQUEST_TIMEOUT_MS = 10_000

export interface OAuthClient {
  clientId: string
  clientSecret: string
}

export type Grant =
  | { grant_type: 'refresh_token'; refresh_token: string }
  | { grant_type: 'client_credentials'; scope?: string | undefined }

/** A token endpoint that answered with an error, or could not be reached. */
class TokenRequestError extends Error {
  override name = 'TokenRequestError'
}

/**
 * Posts `grant` with the client's id and secret to `url`; resolves with the token response (a JSON
 * object, or a form-encoded one as some providers send), rejects with TokenRequestError.
 */
export async function requestToken(
  url: string,
  provider: Provider,
  client: OAuthClient,
  grant: Grant,
): Promise<Record<string, unknown>> {
  const extra =
    grant.grant_type === 'refresh_token'
      ? (provider.refresh_params ?? provider.token_params ?? {})
      : (provider.token_params ?? {})
  // The grant's own fields win over the provider's extras (a token_params grant_type of
  // authorization_code must not turn a refresh into a code exchange).
  const fields: Record<string, string> = { ...extra }
  for (const [key, value] of Object.entries(grant)) if (value !== undefined) fields[key] = value
  const headers: Record<string, string> = { accept: 'application/json' }
  const basic = provider.token_request_auth_method === 'basic' || provider.authorization_method === 'header'
  if (basic) {
    const pair = `${encodeURIComponent(client.clientId)}:${encodeURIComponent(client.clientSecret)}`
    headers.authorization = `Basic ${Buffer.from(pair).toString('base64')}`
  } else {
    fields.client_id = client.clientId
    fields.client_secret = client.clientSecret
  }
  const json = provider.body_format === 'json'
  headers['content-type'] = json ? 'application/json' : 'application/x-www-form-urlencoded'
  const body = json ? JSON.stringify(fields) : new URLSearchParams(fields).toString()

  let response: Response
  try {
    response = await fetch(url, {
      method: 'POST',
      headers,
      body,
      redirect: 'error',
      signal: AbortSignal.timeout(TOKEN_REQUEST_TIMEOUT_MS),
    })
  } catch (err) {
    const cause = err as Error
    const why =
      cause.name === 'TimeoutError' ? `no answer within ${TOKEN_REQUEST_TIMEOUT_MS} ms` : cause.message
    throw new TokenRequestError(`the token endpoint ${url} could not be reached: ${why}`, { cause })
  }
  const text = await response.text()
  if (!response.ok) {
    throw new TokenRequestError(`the token endpoint answered ${response.status}: ${text.slice(0, 300)}`)
  }
  const parsed = parseTokenResponse(text, response.headers.get('content-type'))
  if (!parsed) {
    throw new TokenRequestError(
      `the token endpoint answered something other than a token: ${text.slice(0, 300)}`,
    )
  }
  return parsed
}

function parseTokenResponse(text: string, contentType: string | null): Record<string, unknown> | undefined {
  if ((contentType ?? '').includes('application/x-www-form-urlencoded')) {
    return Object.fromEntries(new URLSearchParams(text))
  }
  try {
    const value = JSON.parse(text) as unknown
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined
  } catch {
    return undefined
  }
}
