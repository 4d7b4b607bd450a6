import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'

/**
 * A small OAuth2 authorization server and API for the refresh tests, on 127.0.0.1:
 * - POST /token: the refresh_token and client_credentials grants (RFC 6749 6 and 4.4), client
 *   authentication by HTTP Basic or form fields, tokens that live `accessLifeSeconds`;
 * - GET /api/me: answers 401 unless the bearer token is one it issued and not yet expired.
 * It counts the token requests per grant, and a refresh token can be revoked.
 */

export interface OAuthServer {
  url: string
  client: { id: string; secret: string }
  /** Token requests answered, per grant type (failed ones included) */
  counts: { refresh_token: number; client_credentials: number }
  /** Every access token issued, oldest first */
  issued: string[]
  /** Issues a refresh token the server accepts (as an authorization would have) */
  grantRefreshToken(): string
  /** Issues an access token valid for `seconds` (as an authorization would have) */
  grantAccessToken(seconds: number): string
  revoke(refreshToken: string): void
  /** Accepts a revoked refresh token again */
  restore(refreshToken: string): void
  /** Seconds the tokens it issues next live */
  accessLifeSeconds: number
  /** Milliseconds the token endpoint takes to answer (so concurrent callers overlap) */
  tokenDelayMs: number
  /** How the last token request authenticated its client */
  lastClientAuth: 'basic' | 'body' | 'none' | undefined
  close(): Promise<void>
}

const token = (prefix: string) => `${prefix}-${randomBytes(9).toString('base64url')}`

export async function startOAuthServer(): Promise<OAuthServer> {
  const client = { id: 'client-abc', secret: 'secret-xyz' }
  const refreshTokens = new Set<string>()
  const accessTokens = new Map<string, number>()
  const issue = (seconds: number) => {
    const value = token('at')
    accessTokens.set(value, Date.now() + seconds * 1000)
    state.issued.push(value)
    return value
  }

  const answer = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }

  const tokenRequest = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => {
    const fields = (req.headers['content-type'] ?? '').includes('json')
      ? (JSON.parse(body) as Record<string, string>)
      : Object.fromEntries(new URLSearchParams(body))
    let id = fields.client_id
    let secret = fields.client_secret
    state.lastClientAuth = id ? 'body' : 'none'
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')
    if (basic) {
      const [user, pass] = Buffer.from(basic[1]!, 'base64').toString().split(':')
      id = decodeURIComponent(user ?? '')
      secret = decodeURIComponent(pass ?? '')
      state.lastClientAuth = 'basic'
    }
    const grant = fields.grant_type
    if (grant === 'refresh_token' || grant === 'client_credentials') state.counts[grant] += 1
    if (id !== client.id || secret !== client.secret) {
      return answer(res, 401, { error: 'invalid_client' })
    }
    if (grant === 'refresh_token') {
      if (!refreshTokens.has(fields.refresh_token ?? '')) {
        return answer(res, 400, { error: 'invalid_grant', error_description: 'refresh token revoked' })
      }
      // No new refresh token: the old one stays valid (as most providers answer)
      return answer(res, 200, {
        access_token: issue(state.accessLifeSeconds),
        token_type: 'bearer',
        expires_in: state.accessLifeSeconds,
      })
    }
    if (grant === 'client_credentials') {
      return answer(res, 200, {
        access_token: issue(state.accessLifeSeconds),
        token_type: 'bearer',
        expires_in: state.accessLifeSeconds,
        scope: fields.scope ?? null,
      })
    }
    return answer(res, 400, { error: 'unsupported_grant_type' })
  }

  const server = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname
      if (req.method === 'POST' && path === '/token') {
        setTimeout(() => tokenRequest(req, body, res), state.tokenDelayMs)
        return
      }
      if (path === '/api/me') {
        const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''
        const until = accessTokens.get(bearer)
        if (until === undefined || until <= Date.now()) return answer(res, 401, { error: 'invalid_token' })
        return answer(res, 200, { token: bearer })
      }
      answer(res, 404, { error: 'not_found' })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const state: OAuthServer = {
    url: `http://127.0.0.1:${port}`,
    client,
    counts: { refresh_token: 0, client_credentials: 0 },
    issued: [],
    accessLifeSeconds: 3600,
    tokenDelayMs: 0,
    lastClientAuth: undefined,
    grantRefreshToken() {
      const value = token('rt')
      refreshTokens.add(value)
      return value
    },
    grantAccessToken: (seconds) => issue(seconds),
    revoke: (refreshToken) => void refreshTokens.delete(refreshToken),
    restore: (refreshToken) => void refreshTokens.add(refreshToken),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
  return state
}

/**
 * A providers.yaml in `dir` (JSON is YAML) naming the server, as a team's own catalogue would:
 * `test-oauth` (OAUTH2, client in the form) and `test-cc` (OAUTH2_CC, client as HTTP Basic).
 */
export async function writeProvidersFile(dir: string, oauth: OAuthServer): Promise<string> {
  const file = path.join(dir, 'providers.yaml')
  const common = { token_url: `${oauth.url}/token`, proxy: { base_url: `${oauth.url}/api` } }
  await writeFile(
    file,
    JSON.stringify({
      'test-oauth': { auth_mode: 'OAUTH2', ...common },
      'test-cc': { auth_mode: 'OAUTH2_CC', token_request_auth_method: 'basic', ...common },
    }),
  )
  return file
}
