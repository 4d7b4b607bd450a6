import net from 'node:net'
import { performance } from 'node:perf_hooks'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { startTestApp, type TestApp } from '../helpers/app.ts'

/**
 * SPEC section 7, "hostile input": every answer to a bad request is the StdError body with a 4xx,
 * including what Node's HTTP parser rejects before any route, and no request costs more than linear
 * time in its size. Requests go over raw sockets, so the bytes are exactly the hostile ones and the
 * answer is what a client sees. Nothing here depends on the database, so it runs once.
 */

interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
}

const SOCKET_TIMEOUT_MS = 5_000

/** The first response in `data`, once it is complete (by Content-Length, or `closed`). */
function parseResponse(data: Buffer, closed: boolean): RawResponse | undefined {
  const text = data.toString('latin1')
  const end = text.indexOf('\r\n\r\n')
  if (end === -1) return undefined
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n')
  const headers = Object.fromEntries(
    lines.map((line) => [
      line.slice(0, line.indexOf(':')).toLowerCase(),
      line.slice(line.indexOf(':') + 1).trim(),
    ]),
  )
  const body = data.subarray(end + 4)
  const length = Number(headers['content-length'])
  if (Number.isNaN(length) ? !closed : body.length < length) return undefined
  return {
    status: Number(statusLine!.split(' ')[1]),
    headers,
    body: body.subarray(0, Number.isNaN(length) ? body.length : length).toString('utf8'),
  }
}

/** Sends `request` on a new socket (half-closing it after when `end`) and reads one response. */
function send(port: number, request: string | Buffer, { end = false } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    const chunks: Buffer[] = []
    const settle = (closed: boolean, why?: string) => {
      const response = parseResponse(Buffer.concat(chunks), closed)
      if (!response && !closed && !why) return
      socket.destroy()
      if (response) resolve(response)
      else {
        reject(
          new Error(`${why ?? 'closed'} without a response: ${Buffer.concat(chunks).toString('latin1')}`),
        )
      }
    }
    socket.setTimeout(SOCKET_TIMEOUT_MS, () => settle(false, `no response in ${SOCKET_TIMEOUT_MS} ms`))
    socket.on('connect', () => (end ? socket.end(request) : socket.write(request)))
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      settle(false)
    })
    // A reset after the response still leaves the response.
    socket.on('error', () => {})
    socket.on('close', () => settle(true))
  })
}

function expectStdError(res: RawResponse, label: string): { code: string; message: string } {
  const seen = `${label}: ${res.status} ${res.body}`
  expect(res.status, seen).toBeGreaterThanOrEqual(400)
  expect(res.status, seen).toBeLessThan(500)
  expect(res.headers['content-type'], seen).toMatch(/^application\/json/)
  const body = JSON.parse(res.body)
  expect(Object.keys(body), seen).toEqual(['error'])
  expect(body.error, seen).toMatchObject({ code: expect.any(String), message: expect.any(String) })
  for (const key of Object.keys(body.error)) expect(['code', 'message', 'errors'], seen).toContain(key)
  return body.error
}

const CRLF = '\r\n'
/** A request from its request line, header lines and body (no Content-Length is added). */
const http11 = (requestLine: string, headers: string[], body = '') =>
  `${requestLine}${CRLF}${headers.map((h) => h + CRLF).join('')}${CRLF}${body}`

describe.skipIf(process.env.SYNCSTORE_TEST_DB === 'postgres')('hostile input', () => {
  let t: TestApp
  let port: number
  let auth: string
  beforeAll(async () => {
    t = await startTestApp({ listen: true })
    port = Number(new URL(t.url).port)
    auth = `Authorization: Bearer ${t.keys.dev}`
  })
  afterAll(() => t?.close())

  /** A complete request with a key, a JSON (or `type`) body and its Content-Length. */
  const withKey = (
    method: string,
    path: string,
    body?: string,
    type = 'application/json',
    extra: string[] = [],
  ) =>
    http11(
      `${method} ${path} HTTP/1.1`,
      [
        'Host: localhost',
        auth,
        ...extra,
        ...(body === undefined
          ? []
          : [`Content-Type: ${type}`, `Content-Length: ${Buffer.byteLength(body)}`]),
      ],
      body,
    )

  describe('unknown keys cost linear time', () => {
    /** `{"provider_config_key":...,"unknown_key_0":0,"unknown_key_1":1,...}` of about `bytes` bytes. */
    function unknownKeys(bytes: number, inCredentials = false): string {
      const members: string[] = []
      let size = 100
      for (let i = 0; size < bytes; i++) {
        members.push(`"unknown_key_${i}":${i}`)
        size += members.at(-1)!.length + 1
      }
      const head = '"provider_config_key":"hostile","connection_id":"c"'
      return inCredentials
        ? `{${head},"credentials":{"type":"API_KEY","apiKey":"k",${members.join(',')}}}`
        : `{${head},${members.join(',')}}`
    }

    async function post(body: string): Promise<{ ms: number; status: number; error: unknown }> {
      const started = performance.now()
      const res = await fetch(`${t.url}/connections`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.keys.dev}`, 'content-type': 'application/json' },
        body,
      })
      const json = (await res.json()) as { error: unknown }
      return { ms: performance.now() - started, status: res.status, error: json.error }
    }

    /** The fastest of three, the least noisy figure on a shared machine. */
    async function fastest(body: string) {
      const runs = []
      for (let i = 0; i < 3; i++) runs.push(await post(body))
      return runs.sort((a, b) => a.ms - b.ms)[0]!
    }

    it('answers 100 KB and 1 MB of unknown keys with a 400 in linear time, and serves /health meanwhile', async () => {
      const small = unknownKeys(100_000)
      const large = unknownKeys(1_000_000)
      expect(Buffer.byteLength(large)).toBeLessThan(t.config.bodyLimitBytes)
      await post(unknownKeys(1_000)) // warm up: the route's validator is compiled on first use

      const smallRun = await fastest(small)
      const largeRun = await fastest(large)
      for (const run of [smallRun, largeRun]) {
        expect(run.status).toBe(400)
        expect(run.error).toMatchObject({
          code: 'invalid_body',
          errors: [{ code: 'unrecognized_keys', path: [], message: expect.stringMatching(/ and \d+ more$/) }],
        })
      }

      // /health, asked every 10 ms while the 1 MB body is sent, parsed and validated: the server runs
      // in this process, so a request that blocked the event loop would hold up the ones in flight.
      const timedHealth = async () => {
        const started = performance.now()
        const res = await fetch(`${t.url}/health`)
        await res.arrayBuffer()
        expect(res.status).toBe(200)
        return performance.now() - started
      }
      const asked: Promise<number>[] = [timedHealth()]
      const sampler = setInterval(() => asked.length < 200 && asked.push(timedHealth()), 10)
      const concurrent = await post(large).finally(() => clearInterval(sampler))
      const health = await Promise.all(asked)

      const ratio = largeRun.ms / smallRun.ms
      console.log(
        `unknown keys: ${small.length} bytes in ${smallRun.ms.toFixed(1)} ms, ` +
          `${large.length} bytes in ${largeRun.ms.toFixed(1)} ms (x${ratio.toFixed(1)}; ` +
          `${concurrent.ms.toFixed(1)} ms alongside /health); ` +
          `/health meanwhile: ${health.length} requests, slowest ${Math.max(...health).toFixed(1)} ms`,
      )
      expect(largeRun.ms).toBeLessThan(1_000)
      expect(ratio).toBeLessThan(25)
      expect(health.length).toBeGreaterThan(0)
      expect(Math.max(...health)).toBeLessThan(1_000)
    })

    it('answers 1 MB of unknown keys inside a union (credentials) with a 400 in under a second', async () => {
      const large = unknownKeys(1_000_000, true)
      expect(Buffer.byteLength(large)).toBeLessThan(t.config.bodyLimitBytes)
      await post(unknownKeys(1_000, true))
      const run = await fastest(large)
      console.log(`unknown keys in credentials: ${large.length} bytes in ${run.ms.toFixed(1)} ms`)
      expect(run.status).toBe(400)
      expect(run.error).toMatchObject({
        code: 'invalid_body',
        errors: [{ code: 'unrecognized_keys', path: ['credentials'] }],
      })
      // Checked against every auth type it was 9 errors a key and about 2 s.
      expect(run.ms).toBeLessThan(1_000)
    })
  })

  describe('malformed HTTP gets the one error body', () => {
    const get = (headers: string[], path = '/health') =>
      http11(`GET ${path} HTTP/1.1`, ['Host: localhost', ...headers])
    const chunked = (chunks: string) =>
      http11(
        'POST /connections HTTP/1.1',
        ['Host: localhost', auth, 'Content-Type: application/json', 'Transfer-Encoding: chunked'],
        chunks,
      )
    const post = (headers: string[], body: string) =>
      http11(
        'POST /connections HTTP/1.1',
        ['Host: localhost', 'Content-Type: application/json', ...headers],
        body,
      )

    const cases: [string, () => string, number?][] = [
      ['a 17 KB header', () => get([`X-Big: ${'a'.repeat(17 * 1024)}`]), 431],
      ['3,000 headers', () => get(Array.from({ length: 3_000 }, (_, i) => `X-Header-${i}: ${i}`)), 431],
      ['a 17 KB request line', () => get([], `/health?${'a'.repeat(17 * 1024)}`), 431],
      ['a NUL in a header value', () => get(['X-A: a\0b']), 400],
      ['a control byte in a header value', () => get(['X-A: a\x01b']), 400],
      ['a NUL in a header name', () => get(['X-\0A: b']), 400],
      ['a space in a header name', () => get(['X A: b']), 400],
      ['a header line without a colon', () => get(['Nonsense']), 400],
      ['a folded header line', () => get(['X-A: a', ' folded']), 400],
      ['a NUL in the path', () => http11('GET /hea\0lth HTTP/1.1', ['Host: localhost']), 400],
      ['a control byte in the path', () => http11('GET /hea\x01lth HTTP/1.1', ['Host: localhost']), 400],
      ['a bad chunk size', () => chunked('zz\r\n{}\r\n0\r\n\r\n'), 400],
      // Node reports this one only after the body it read was handed on, so the route may answer first.
      ['a chunk longer than its size', () => chunked('2\r\n{"a":1}\r\n0\r\n\r\n')],
      ['chunk extensions over 16 KB', () => chunked(`2;ext=${'a'.repeat(20_000)}\r\n{}\r\n0\r\n\r\n`), 413],
      [
        'Content-Length and Transfer-Encoding',
        () => post(['Content-Length: 2', 'Transfer-Encoding: chunked'], '2\r\n{}\r\n0\r\n\r\n'),
        400,
      ],
      ['two different Content-Lengths', () => post(['Content-Length: 2', 'Content-Length: 3'], '{} '), 400],
      ['two equal Content-Lengths', () => post(['Content-Length: 2', 'Content-Length: 2'], '{}'), 400],
      ['a Content-Length that is not a number', () => post(['Content-Length: two'], '{}'), 400],
      ['a negative Content-Length', () => post(['Content-Length: -2'], '{}'), 400],
      ['Transfer-Encoding: gzip', () => post(['Transfer-Encoding: gzip'], '{}'), 400],
      ['no Host header', () => http11('GET /health HTTP/1.1', []), 400],
      ['an invalid method token', () => http11('G@T /health HTTP/1.1', ['Host: localhost']), 400],
      ['an unknown method', () => http11('FROB /health HTTP/1.1', ['Host: localhost']), 400],
      // Node takes `GET /health` with no version for HTTP/0.9 and answers it: not malformed.
      ['a request line that is only a method', () => 'GET\r\n\r\n', 400],
      ['an empty request target', () => http11('GET  HTTP/1.1', ['Host: localhost']), 400],
      ['an HTTP version that does not exist', () => http11('GET /health HTTP/7.3', ['Host: localhost']), 400],
      ['a bare LF before the headers', () => 'GET /health HTTP/1.1\nHost: localhost\r\n\r\n', 400],
      ['garbage', () => 'This is not HTTP at all\r\n\r\n', 400],
      ['a TLS ClientHello', () => '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + '\x00'.repeat(64), 400],
      ['CONNECT', () => http11('CONNECT example.com:443 HTTP/1.1', ['Host: example.com:443']), 405],
      ['Expect: something other than 100-continue', () => get(['Expect: the-unexpected']), 417],
      [
        'a body over the limit, by its Content-Length',
        () => post([auth, 'Content-Length: 2000000'], '{}'),
        413,
      ],
    ]

    it.each(cases)('%s', async (label, request, status) => {
      const res = await send(port, Buffer.from(request(), 'latin1'))
      expectStdError(res, label)
      if (status) expect(res.status, `${label}: ${res.body}`).toBe(status)
    })

    it('a body cut short by the client', async () => {
      const res = await send(port, post([auth, 'Content-Length: 100'], '{"a":'), { end: true })
      expect(expectStdError(res, 'cut short').code).toBe('invalid_request')
    })

    it('routes with bad percent-encoding and an overlong path parameter', async () => {
      for (const [path, status] of [
        ['/connections/%E0%A4%A?provider_config_key=x', 400],
        [`/connections/${'a'.repeat(600)}?provider_config_key=x`, 414],
        ['/%', 400],
      ] as const) {
        const res = await send(port, withKey('GET', path))
        expectStdError(res, path)
        expect(res.status).toBe(status)
      }
    })
  })

  it('sweeps hostile requests over the real routes', async () => {
    const records = ['Connection-Id: c', 'Provider-Config-Key: hostile']
    const jsonRoutes: [string, string, string[]][] = [
      ['POST', '/connections', []],
      ['POST', '/connections/metadata', []],
      ['PATCH', '/connections/metadata', []],
      ['PATCH', '/records/prune', records],
      ['POST', '/sync/trigger', []],
      ['POST', '/sync/pause', []],
      ['POST', '/sync/start', []],
      ['PUT', '/sync/update-connection-frequency', []],
      ['POST', '/sync/nightly/variant/v1', []],
      ['DELETE', '/sync/nightly/variant/v1', []],
    ]
    const deep = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`
    const bodies = [
      '{"a":',
      'not json',
      '',
      'null',
      '[]',
      '"text"',
      '1e400',
      '{}',
      deep,
      `[${'['.repeat(100_000)}`,
      '{"__proto__":{"admin":true}}',
      '{"constructor":{"prototype":{"admin":true}}}',
      '{"model":"Contact","until_cursor":"x","limit":1e400}',
      '{"model":"Contact","until_cursor":"x","limit":-1}',
      '{"model":"Contact","until_cursor":"x","limit":0.5}',
      '{"model":"Contact","until_cursor":"x","limit":1e20}',
      '{"model":"Contact","until_cursor":"x","limit":99999999999999999999999999}',
      '{"provider_config_key":"\\ud800","connection_id":"\\u0000"}',
      `{"provider_config_key":"hostile","connection_id":"${'x'.repeat(100_000)}"}`,
      `{"syncs":[${Array(100_000).fill('1').join(',')}],"provider_config_key":"hostile"}`,
      `{"provider_config_key":"hostile","connection_id":"c","metadata":${deep}}`,
    ]
    const types = [
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/xml',
    ]
    const requests: [string, string][] = []
    for (const [method, path, extra] of jsonRoutes) {
      for (const body of bodies) {
        requests.push([
          `${method} ${path} ${body.slice(0, 40)}`,
          withKey(method, path, body, undefined, extra),
        ])
      }
      for (const type of types) {
        requests.push([`${method} ${path} as ${type}`, withKey(method, path, '{}', type, extra)])
      }
      requests.push([
        `${method} ${path} with a body and no Content-Type`,
        http11(`${method} ${path} HTTP/1.1`, ['Host: localhost', auth, ...extra, 'Content-Length: 2'], '{}'),
      ])
    }
    const numbers = ['-1', '0.5', '1e20', '1e400', '99999999999999999999', 'NaN', 'Infinity', '', 'abc']
    for (const n of numbers) {
      for (const path of [
        `/connections?limit=${n}`,
        `/connections?page=${n}`,
        `/connections?limit=10&page=${n}`,
        `/records?model=Contact&limit=${n}`,
      ]) {
        requests.push([`GET ${path}`, withKey('GET', path, undefined, undefined, records)])
      }
    }
    for (const path of [
      '/connections/%00?provider_config_key=hostile',
      '/connections/c',
      '/connections?tags[1]=x',
      '/connections?search=%00',
      `/connections?${'a=1&'.repeat(1_000)}`,
      '/records',
      '/records?model=Contact&ids=' + '&ids=a'.repeat(200),
      '/records?model=Contact&cursor=%FF%FE',
      '/records?model=Contact&modified_after=9999999-01-01T00:00:00Z',
      '/sync/status?syncs=*',
      '/sync/status?syncs=*&provider_config_key=a/b',
      '/environment-variables?x=1',
      '/no/such/route',
    ]) {
      requests.push([`GET ${path}`, withKey('GET', path, undefined, undefined, records)])
    }
    requests.push([
      'GET /connections without a key',
      http11('GET /connections HTTP/1.1', ['Host: localhost']),
    ])
    requests.push([
      'GET /connections with a bad key',
      http11('GET /connections HTTP/1.1', ['Host: localhost', 'Authorization: Bearer nope']),
    ])
    requests.push([
      'GET /connections with Basic',
      http11('GET /connections HTTP/1.1', ['Host: localhost', 'Authorization: Basic eDp5']),
    ])

    for (const [label, request] of requests) expectStdError(await send(port, request), label)
    console.log(
      `hostile sweep: ${requests.length} requests over ${jsonRoutes.length} JSON routes and the GET routes, all 4xx StdError`,
    )
  }, 120_000)
})
