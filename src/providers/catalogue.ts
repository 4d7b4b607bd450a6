import type { Pagination } from '../runtime/protocol.ts'
import type { Provider, RetrySignals } from './types.ts'

/**
 * syncstore's own provider catalogue, written from each API's public documentation. Names are
 * Nango's (so `"provider": "github"` means the same API there and here); the entries cover the 30
 * providers the public Nango templates target most (by sync files, ties broken by name), plus the
 * best-known OAuth APIs. A SYNCSTORE_PROVIDERS_FILE entry, then integration.json, win over these.
 *
 * Templates: `${connectionConfig.x}`, `${credentials.x}`, `${metadata.x}`, `${accessToken}` (an
 * OAuth2 access token or a token-based credential), `${apiKey}`; `a || b` takes the first
 * alternative whose variables are all known.
 */

// Rate-limit signals shared by many APIs
const waitSeconds: RetrySignals = { after: 'retry-after' }
const resetAt = (header: string): RetrySignals => ({ at: header })

// Paging styles shared by many APIs
const graphNextLink: Pagination = {
  type: 'link',
  link_path_in_response_body: '@odata.nextLink',
  response_path: 'value',
}
/** A cursor the response names (a dot path) and the next request sends back */
const cursorPaging = (
  inRequest: string,
  inResponse: string,
  limitParam: string,
  items?: string,
): Pagination => ({
  type: 'cursor',
  cursor_name_in_request: inRequest,
  cursor_path_in_response: inResponse,
  limit_name_in_request: limitParam,
  ...(items ? { response_path: items } : {}),
})
const linkHeader = (limitParam?: string): Pagination => ({
  type: 'link',
  link_rel_in_response_header: 'next',
  ...(limitParam ? { limit_name_in_request: limitParam } : {}),
})

const microsoftLogin = {
  authorization_url: 'https://login.microsoftonline.com/common/oauth2/v2.0/authorize',
  token_url: 'https://login.microsoftonline.com/common/oauth2/v2.0/token',
  default_scopes: ['offline_access'],
}

const googleLogin = {
  authorization_url: 'https://accounts.google.com/o/oauth2/v2/auth',
  token_url: 'https://oauth2.googleapis.com/token',
  // A refresh token is only issued for offline access, and again only when consent is asked
  authorization_params: { access_type: 'offline', prompt: 'consent' },
}

export const BUILT_IN: Readonly<Record<string, Provider>> = {
  'acuity-scheduling': {
    display_name: 'Acuity Scheduling',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://acuityscheduling.com/oauth2/authorize',
    token_url: 'https://acuityscheduling.com/oauth2/token',
    default_scopes: ['api-v1'],
    proxy: { base_url: 'https://acuityscheduling.com/api/v1', retry: waitSeconds },
  },
  'active-campaign': {
    display_name: 'ActiveCampaign',
    auth_mode: 'API_KEY',
    // The account's own API host, e.g. acme.api-us1.com
    proxy: {
      base_url: 'https://${connectionConfig.hostname}/api',
      headers: { 'api-token': '${apiKey}' },
      paginate: { type: 'offset', offset_name_in_request: 'offset', limit_name_in_request: 'limit' },
      retry: waitSeconds,
    },
  },
  amplitude: {
    display_name: 'Amplitude',
    auth_mode: 'BASIC',
    // API key and secret key as user and password; EU projects live on analytics.eu.amplitude.com
    proxy: { base_url: 'https://${connectionConfig.hostname} || https://amplitude.com', retry: waitSeconds },
  },
  attio: {
    display_name: 'Attio',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://app.attio.com/authorize',
    token_url: 'https://app.attio.com/oauth/token',
    proxy: { base_url: 'https://api.attio.com', retry: waitSeconds },
  },
  'auth0-cc': {
    display_name: 'Auth0 (Client Credentials)',
    auth_mode: 'OAUTH2_CC',
    // The tenant's domain, e.g. acme.eu.auth0.com; the Management API is the audience
    token_url: 'https://${connectionConfig.hostname}/oauth/token',
    token_params: {
      grant_type: 'client_credentials',
      audience: 'https://${connectionConfig.hostname}/api/v2/',
    },
    body_format: 'json',
    proxy: {
      base_url: 'https://${connectionConfig.hostname}',
      retry: resetAt('x-ratelimit-reset'),
      paginate: {
        type: 'offset',
        offset_name_in_request: 'page',
        offset_calculation_method: 'per-page',
        limit_name_in_request: 'per_page',
      },
    },
  },
  'azure-devops': {
    display_name: 'Azure DevOps',
    auth_mode: 'BASIC',
    // A personal access token as the password; the organisation's URL, e.g. dev.azure.com/acme
    proxy: { base_url: 'https://${connectionConfig.organizationUrl}', retry: waitSeconds },
  },
  'bamboohr-basic': {
    display_name: 'BambooHR (Basic Auth)',
    auth_mode: 'BASIC',
    // The API key as the user name, any password; without an Accept header BambooHR answers XML
    proxy: {
      base_url: 'https://api.bamboohr.com/api/gateway.php/${connectionConfig.subdomain}',
      headers: { accept: 'application/json' },
      retry: waitSeconds,
    },
  },
  bigcommerce: {
    display_name: 'BigCommerce',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://login.bigcommerce.com/oauth2/authorize',
    token_url: 'https://login.bigcommerce.com/oauth2/token',
    body_format: 'json',
    proxy: {
      base_url: 'https://api.bigcommerce.com/stores/${connectionConfig.storeHash}',
      // Store API tokens go in their own header, not Authorization
      headers: { 'x-auth-token': '${accessToken}' },
      retry: waitSeconds,
      paginate: {
        type: 'offset',
        offset_name_in_request: 'page',
        offset_start_value: 1,
        offset_calculation_method: 'per-page',
        limit_name_in_request: 'limit',
        response_path: 'data',
      },
    },
  },
  chargebee: {
    display_name: 'Chargebee',
    auth_mode: 'BASIC',
    // The site's API key as the user name, empty password
    proxy: {
      base_url: 'https://${connectionConfig.subdomain}.chargebee.com',
      retry: waitSeconds,
      paginate: cursorPaging('offset', 'next_offset', 'limit', 'list'),
    },
  },
  datadog: {
    display_name: 'Datadog',
    auth_mode: 'API_KEY',
    // The site, e.g. datadoghq.eu; an application key goes with the API key
    proxy: {
      base_url: 'https://api.${connectionConfig.siteParameter}/api',
      headers: { 'dd-api-key': '${apiKey}', 'dd-application-key': '${connectionConfig.applicationKey}' },
      // Datadog's x-ratelimit-reset is the seconds left in the window, not a time
      retry: { after: 'x-ratelimit-reset' },
    },
  },
  'exact-online': {
    display_name: 'Exact Online',
    auth_mode: 'OAUTH2',
    // The country's domain extension: nl, be, co.uk, de...
    authorization_url: 'https://start.exactonline.${connectionConfig.extension}/api/oauth2/auth',
    token_url: 'https://start.exactonline.${connectionConfig.extension}/api/oauth2/token',
    proxy: {
      base_url: 'https://start.exactonline.${connectionConfig.extension}',
      // The REST API answers Atom XML unless JSON is asked for
      headers: { accept: 'application/json' },
      retry: resetAt('x-ratelimit-minutely-reset'),
      paginate: { type: 'link', link_path_in_response_body: 'd.__next', response_path: 'd.results' },
    },
  },
  klaviyo: {
    display_name: 'Klaviyo (API Key)',
    auth_mode: 'API_KEY',
    proxy: {
      base_url: 'https://a.klaviyo.com',
      // Private keys use their own scheme; every request names the API revision
      headers: {
        authorization: 'Klaviyo-API-Key ${apiKey}',
        revision: '2024-10-15',
        accept: 'application/json',
      },
      retry: waitSeconds,
      paginate: { type: 'link', link_path_in_response_body: 'links.next', response_path: 'data' },
    },
  },
  lever: {
    display_name: 'Lever',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://auth.lever.co/authorize',
    token_url: 'https://auth.lever.co/oauth/token',
    authorization_params: { audience: 'https://api.lever.co/v1/' },
    default_scopes: ['offline_access'],
    proxy: {
      base_url: 'https://api.lever.co',
      retry: waitSeconds,
      paginate: cursorPaging('offset', 'next', 'limit', 'data'),
    },
  },
  mandrill: {
    display_name: 'Mandrill',
    auth_mode: 'API_KEY',
    // Every call is a POST whose JSON body carries the key
    proxy: { base_url: 'https://mandrillapp.com/api', body: { key: '${apiKey}' } },
  },
  'microsoft-dynamics-365-finance-and-operations-cc': {
    display_name: 'Microsoft Dynamics 365 Finance and Operations (Client Credentials)',
    auth_mode: 'OAUTH2_CC',
    // The environment's host, e.g. acme.operations.dynamics.com, is also the token's resource
    token_url: 'https://login.microsoftonline.com/${connectionConfig.tenantId}/oauth2/v2.0/token',
    token_params: {
      grant_type: 'client_credentials',
      scope: 'https://${connectionConfig.environmentUrl}/.default',
    },
    proxy: {
      base_url: 'https://${connectionConfig.environmentUrl}',
      retry: waitSeconds,
      paginate: graphNextLink,
    },
  },
  okta: {
    display_name: 'Okta',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://${connectionConfig.subdomain}.okta.com/oauth2/v1/authorize',
    token_url: 'https://${connectionConfig.subdomain}.okta.com/oauth2/v1/token',
    default_scopes: ['offline_access'],
    proxy: {
      base_url: 'https://${connectionConfig.subdomain}.okta.com',
      retry: resetAt('x-rate-limit-reset'),
      paginate: linkHeader('limit'),
    },
  },
  pennylane: {
    display_name: 'Pennylane',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://app.pennylane.com/oauth/authorize',
    token_url: 'https://app.pennylane.com/oauth/token',
    proxy: {
      base_url: 'https://app.pennylane.com',
      retry: waitSeconds,
      // API v2 lists
      paginate: cursorPaging('cursor', 'next_cursor', 'limit', 'items'),
    },
  },
  pinterest: {
    display_name: 'Pinterest',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://www.pinterest.com/oauth/',
    token_url: 'https://api.pinterest.com/v5/oauth/token',
    // The app's id and secret go as HTTP Basic on the token request
    token_request_auth_method: 'basic',
    scope_separator: ',',
    proxy: {
      base_url: 'https://api.pinterest.com',
      retry: waitSeconds,
      paginate: cursorPaging('bookmark', 'bookmark', 'page_size', 'items'),
    },
  },
  posthog: {
    display_name: 'PostHog',
    auth_mode: 'API_KEY',
    // us or eu (cloud); a personal API key as a bearer token
    proxy: {
      base_url: 'https://${connectionConfig.subdomain}.posthog.com',
      headers: { authorization: 'Bearer ${apiKey}' },
      retry: waitSeconds,
      paginate: { type: 'link', link_path_in_response_body: 'next', response_path: 'results' },
    },
  },
  quickbooks: {
    display_name: 'QuickBooks',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://appcenter.intuit.com/connect/oauth2',
    token_url: 'https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer',
    token_request_auth_method: 'basic',
    default_scopes: ['com.intuit.quickbooks.accounting'],
    // The company (realmId) is part of every path: /v3/company/{realmId}/...
    proxy: {
      base_url: 'https://quickbooks.api.intuit.com',
      headers: { accept: 'application/json' },
      retry: waitSeconds,
    },
  },
  recruiterflow: {
    display_name: 'Recruiterflow',
    auth_mode: 'API_KEY',
    proxy: { base_url: 'https://api.recruiterflow.com', headers: { 'rf-api-key': '${apiKey}' } },
  },
  'sharepoint-online': {
    display_name: 'SharePoint Online',
    auth_mode: 'OAUTH2',
    ...microsoftLogin,
    proxy: { base_url: 'https://graph.microsoft.com', retry: waitSeconds, paginate: graphNextLink },
  },
  shopify: {
    display_name: 'Shopify',
    auth_mode: 'OAUTH2',
    // The shop's name, as in acme.myshopify.com
    authorization_url: 'https://${connectionConfig.subdomain}.myshopify.com/admin/oauth/authorize',
    token_url: 'https://${connectionConfig.subdomain}.myshopify.com/admin/oauth/access_token',
    proxy: {
      base_url: 'https://${connectionConfig.subdomain}.myshopify.com',
      // Admin API tokens go in Shopify's header, not Authorization
      headers: { 'x-shopify-access-token': '${accessToken}' },
      retry: waitSeconds,
      paginate: linkHeader('limit'),
    },
  },
  shortcut: {
    display_name: 'Shortcut',
    auth_mode: 'API_KEY',
    proxy: {
      base_url: 'https://api.app.shortcut.com',
      headers: { 'shortcut-token': '${apiKey}' },
      retry: waitSeconds,
    },
  },
  stripe: {
    display_name: 'Stripe (Connect)',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://connect.stripe.com/oauth/authorize',
    token_url: 'https://connect.stripe.com/oauth/token',
    // Lists page with starting_after=<last id>, which no response path holds: functions page themselves
    proxy: { base_url: 'https://api.stripe.com', retry: waitSeconds },
  },
  twilio: {
    display_name: 'Twilio',
    auth_mode: 'BASIC',
    // The account SID and auth token (or an API key's SID and secret) as user and password
    proxy: {
      base_url: 'https://api.twilio.com',
      retry: waitSeconds,
      paginate: {
        type: 'link',
        link_path_in_response_body: 'next_page_uri',
        limit_name_in_request: 'PageSize',
      },
    },
  },
  workable: {
    display_name: 'Workable',
    auth_mode: 'API_KEY',
    proxy: {
      base_url: 'https://${connectionConfig.subdomain}.workable.com',
      headers: { authorization: 'Bearer ${apiKey}' },
      retry: resetAt('x-rate-limit-reset'),
      paginate: { type: 'link', link_path_in_response_body: 'paging.next', limit_name_in_request: 'limit' },
    },
  },
  zendesk: {
    display_name: 'Zendesk',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://${connectionConfig.subdomain}.zendesk.com/oauth/authorizations/new',
    token_url: 'https://${connectionConfig.subdomain}.zendesk.com/oauth/tokens',
    proxy: {
      base_url: 'https://${connectionConfig.subdomain}.zendesk.com',
      retry: waitSeconds,
      paginate: { type: 'link', link_path_in_response_body: 'next_page', limit_name_in_request: 'per_page' },
    },
  },
  'zoho-books': {
    display_name: 'Zoho Books',
    auth_mode: 'OAUTH2',
    // The data centre's domain extension: com, eu, in, com.au...
    authorization_url: 'https://accounts.zoho.${connectionConfig.extension}/oauth/v2/auth',
    token_url: 'https://accounts.zoho.${connectionConfig.extension}/oauth/v2/token',
    authorization_params: { access_type: 'offline', prompt: 'consent' },
    proxy: {
      base_url: 'https://www.zohoapis.${connectionConfig.extension}',
      // Zoho's own scheme instead of Bearer
      headers: { authorization: 'Zoho-oauthtoken ${accessToken}' },
      retry: waitSeconds,
    },
  },
  'ingenious-build': {
    display_name: 'Ingenious.Build',
    auth_mode: 'OAUTH2_CC',
    // The customer's tenant host, e.g. acme.ingenious.build
    token_url: 'https://${connectionConfig.subdomain}.ingenious.build/oauth/token',
    token_params: { grant_type: 'client_credentials' },
    proxy: { base_url: 'https://${connectionConfig.subdomain}.ingenious.build', retry: waitSeconds },
  },

  // Well-known APIs beyond the 30
  github: {
    display_name: 'GitHub (User OAuth)',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://github.com/login/oauth/authorize',
    token_url: 'https://github.com/login/oauth/access_token',
    proxy: {
      base_url: 'https://api.github.com',
      // The primary limit answers 403 or 429 with the window's end (epoch seconds)
      retry: {
        at: 'x-ratelimit-reset',
        remaining: 'x-ratelimit-remaining',
        error_code: ['403', '429', '5xx'],
      },
      paginate: linkHeader('per_page'),
    },
  },
  slack: {
    display_name: 'Slack',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://slack.com/oauth/v2/authorize',
    token_url: 'https://slack.com/api/oauth.v2.access',
    scope_separator: ',',
    proxy: {
      // Web API methods are paths: conversations.list, users.info...
      base_url: 'https://slack.com/api',
      retry: waitSeconds,
      paginate: cursorPaging('cursor', 'response_metadata.next_cursor', 'limit'),
    },
  },
  hubspot: {
    display_name: 'HubSpot',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://app.hubspot.com/oauth/authorize',
    token_url: 'https://api.hubapi.com/oauth/v1/token',
    default_scopes: ['oauth'],
    proxy: {
      base_url: 'https://api.hubapi.com',
      retry: waitSeconds,
      paginate: cursorPaging('after', 'paging.next.after', 'limit', 'results'),
    },
  },
  salesforce: {
    display_name: 'Salesforce',
    auth_mode: 'OAUTH2',
    // A My Domain host when the org has one, else the global login host
    authorization_url:
      'https://${connectionConfig.hostname}/services/oauth2/authorize || https://login.salesforce.com/services/oauth2/authorize',
    token_url:
      'https://${connectionConfig.hostname}/services/oauth2/token || https://login.salesforce.com/services/oauth2/token',
    default_scopes: ['offline_access'],
    // The org's own host, which the token response names (instance_url)
    proxy: {
      base_url: '${connectionConfig.instance_url}',
      paginate: { type: 'link', link_path_in_response_body: 'nextRecordsUrl', response_path: 'records' },
    },
  },
  notion: {
    display_name: 'Notion',
    auth_mode: 'OAUTH2',
    authorization_url: 'https://api.notion.com/v1/oauth/authorize',
    token_url: 'https://api.notion.com/v1/oauth/token',
    authorization_params: { owner: 'user' },
    token_request_auth_method: 'basic',
    body_format: 'json',
    proxy: {
      base_url: 'https://api.notion.com',
      // Every request names the API version it was written for
      headers: { 'notion-version': '2022-06-28' },
      retry: waitSeconds,
      paginate: cursorPaging('start_cursor', 'next_cursor', 'page_size', 'results'),
    },
  },
  jira: {
    display_name: 'Jira',
    auth_mode: 'OAUTH2',
    // Atlassian's 3LO; the site is chosen by its cloudId in the path (/ex/jira/{cloudId}/...)
    authorization_url: 'https://auth.atlassian.com/authorize',
    token_url: 'https://auth.atlassian.com/oauth/token',
    authorization_params: { audience: 'api.atlassian.com', prompt: 'consent' },
    default_scopes: ['offline_access'],
    body_format: 'json',
    proxy: { base_url: 'https://api.atlassian.com', retry: waitSeconds },
  },
  'google-calendar': {
    display_name: 'Google Calendar',
    auth_mode: 'OAUTH2',
    ...googleLogin,
    proxy: {
      base_url: 'https://www.googleapis.com',
      retry: waitSeconds,
      paginate: cursorPaging('pageToken', 'nextPageToken', 'maxResults', 'items'),
    },
  },
}
