import type { Pagination } from '../runtime/protocol.ts'
import type { IntegrationConfig } from '../syncs/definitions.ts'

/**
 * How to reach one API: the part of a provider description (Nango's `providers.yaml` entry, same
 * field names and meanings) that syncstore acts on. Strings may hold templates: `${connectionConfig.x}`,
 * `${credentials.x}`, `${metadata.x}`, and for credentials `${accessToken}`, `${apiKey}`.
 * Fields we do not act on (docs, categories, connection_config schemas...) may be present and are kept.
 */
export interface Provider {
  display_name?: string
  /** How connections authenticate: OAUTH2, OAUTH2_CC, BASIC, API_KEY, APP, NONE... */
  auth_mode?: string
  proxy?: ProviderProxy
  authorization_url?: string
  authorization_params?: Record<string, string>
  /** Where tokens are obtained (and refreshed, without refresh_url); per auth mode when an object */
  token_url?: string | Record<string, string>
  /** Where a refresh token is exchanged, when not token_url */
  refresh_url?: string
  /** Extra body fields of the token request (e.g. grant_type) */
  token_params?: Record<string, string>
  /** Extra body fields of the refresh request */
  refresh_params?: Record<string, string>
  /** The client's id and secret: in the body (default) or as HTTP Basic ('basic') */
  token_request_auth_method?: 'basic' | 'custom' | 'private_key_jwt'
  /** Older name of the same choice: 'header' sends Basic, 'body' (default) the form fields */
  authorization_method?: 'body' | 'header'
  /** The token request's body: 'form' (default, x-www-form-urlencoded) or 'json' */
  body_format?: 'form' | 'json'
  default_scopes?: string[]
  scope_separator?: string
  /** Refresh this many seconds before expiry (default: syncstore's own margin) */
  token_expiration_buffer?: number
  /** Where the access token is in a token response, when not `access_token` (dot path) */
  alternate_access_token_response_path?: string
  /** Another provider this one starts from (Nango's `alias`): its top-level fields, these winning */
  alias?: string
  [other: string]: unknown
}

export interface ProviderProxy {
  /** Templated, e.g. `https://${connectionConfig.subdomain}.zendesk.com` */
  base_url?: string
  /** Sent on every request; credentials go here as templates (`Bearer ${apiKey}`) */
  headers?: Record<string, string>
  /** Added to every request's query string (templated as headers) */
  query?: Record<string, string>
  /** Merged into every JSON request body (templated as headers), e.g. an API key the API wants there */
  body?: Record<string, string>
  retry?: RetrySignals
  /** nango.paginate's default for the provider */
  paginate?: Pagination
  [other: string]: unknown
}

/** Which answers mean "rate limited" and when to try again (Nango's `proxy.retry`). */
export interface RetrySignals {
  /** Header(s) with the time to retry at: epoch seconds, epoch ms or an HTTP date (x-ratelimit-reset) */
  at?: string | string[]
  /** Header(s) with the seconds to wait (retry-after) */
  after?: string | string[]
  /** Header with the calls left in the window */
  remaining?: string
  /** Statuses retried besides 429 and 5xx: '403', '5xx'... */
  error_code?: string[]
}

/**
 * The providers one server knows: its built-in catalogue, overridden and extended by the file
 * SYNCSTORE_PROVIDERS_FILE names. Immutable once built at start (src/providers/catalogue.ts).
 */
export interface Providers {
  /** The named provider as the catalogue and file describe it (`alias` applied), or undefined */
  get(name: string): Provider | undefined
  /**
   * The provider an integration uses: `get(integration.provider ?? key)` with its integration.json
   * over it (base_url, headers, pagination, auth); undefined when neither knows anything.
   */
  resolve(name: string, integration?: IntegrationConfig): Provider | undefined
}
