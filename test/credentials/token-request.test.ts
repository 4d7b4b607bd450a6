import http from 'node:http'
import type { AddressInfo } from 'node:net'

import { afterAll, beforeAll, expect, it } from 'vitest'

import { requestToken } from '../../src/credentials/token-request.ts'

/**
 * The token request as a provider's catalogue entry shapes it: where the client's id and secret
 * go, the body's format, the provider's extra fields, and the answers a token endpoint gives.
 */

interface Seen {
  headers: http.IncomingHttpHeaders
  body: string
}
let seen: Seen[] = []
let reply: { status: number; type: string; body: string } = {
  status: 200,
  type: 'application/json',
  body: '{}',
}
let server: http.Server
let url: string
const client = { clientId: 'id:1', clientSecret: 's&cret' }

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8').on('data', (c: string) => (body += c))
    req.on('end', () => {
      seen.push({ headers: req.headers, body })
      res.writeHead(reply.status, { 'content-type': reply.type })
      res.end(reply.body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

const answer = (status: number, body: unknown, type = 'application/json') => {
  seen = []
  reply = { status, type, body: typeof body === 'string' ? body : JSON.stringify(body) }
}

it('refresh: form body with the client in it and refresh_params; the grant fields win over them', async () => {
  answer(200, { access_token: 'a1', expires_in: 60 })
  const token = await requestToken(
    url,
    {
      refresh_params: { grant_type: 'authorization_code', audience: 'api' },
      token_params: { ignored: 'yes' },
    },
    client,
    { grant_type: 'refresh_token', refresh_token: 'r1' },
  )
  expect(token).toEqual({ access_token: 'a1', expires_in: 60 })
  const [req] = seen
  expect(req!.headers['content-type']).toBe('application/x-www-form-urlencoded')
  expect(req!.headers.authorization).toBeUndefined()
  expect(Object.fromEntries(new URLSearchParams(req!.body))).toEqual({
    grant_type: 'refresh_token',
    audience: 'api',
    refresh_token: 'r1',
    client_id: 'id:1',
    client_secret: 's&cret',
  })
})

it("'basic' (or authorization_method 'header') sends the client as HTTP Basic; body_format json", async () => {
  for (const provider of [
    { token_request_auth_method: 'basic' as const, body_format: 'json' as const },
    { authorization_method: 'header' as const, body_format: 'json' as const },
  ]) {
    answer(200, { access_token: 'a2' })
    await requestToken(url, { ...provider, token_params: { resource: 'x' } }, client, {
      grant_type: 'client_credentials',
      scope: 'read write',
    })
    const [req] = seen
    const [user, pass] = Buffer.from(req!.headers.authorization!.replace('Basic ', ''), 'base64')
      .toString()
      .split(':')
    expect([decodeURIComponent(user!), decodeURIComponent(pass!)]).toEqual(['id:1', 's&cret'])
    expect(req!.headers['content-type']).toBe('application/json')
    expect(JSON.parse(req!.body)).toEqual({
      resource: 'x',
      grant_type: 'client_credentials',
      scope: 'read write',
    })
  }
})

it('reads a form-encoded answer; an error answer, a non-token answer and an unreachable endpoint throw with what happened', async () => {
  answer(200, 'access_token=a3&token_type=bearer', 'application/x-www-form-urlencoded')
  expect(await requestToken(url, {}, client, { grant_type: 'refresh_token', refresh_token: 'r' })).toEqual({
    access_token: 'a3',
    token_type: 'bearer',
  })

  answer(401, { error: 'invalid_client' })
  await expect(
    requestToken(url, {}, client, { grant_type: 'refresh_token', refresh_token: 'r' }),
  ).rejects.toThrow('the token endpoint answered 401: {"error":"invalid_client"}')

  answer(200, '<html>login</html>', 'text/html')
  await expect(
    requestToken(url, {}, client, { grant_type: 'refresh_token', refresh_token: 'r' }),
  ).rejects.toThrow(/answered something other than a token: <html>/)

  await expect(
    requestToken('http://127.0.0.1:1/token', {}, client, { grant_type: 'refresh_token', refresh_token: 'r' }),
  ).rejects.toThrow(/^the token endpoint http:\/\/127.0.0.1:1\/token could not be reached: /)
})
