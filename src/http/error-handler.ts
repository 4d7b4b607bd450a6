import { maxHeaderSize, type ServerResponse, STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'

import type { ConnectionError, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

import { DecryptionError } from '../crypto.ts'
import { isUnavailable, sqlState } from '../db/errors.ts'
import { HttpError } from '../errors.ts'
import { invalidRequest, type RequestPart, VALIDATION_CODES } from './errors.ts'
import { ajvErrorsToIssues } from '../validation.ts'

/**
 * The one place errors become responses. Client errors keep their message; anything unexpected
 * is logged with its stack and answered with a generic 500 that names the request id.
 */
export function registerErrorHandling(app: FastifyInstance, bodyLimitBytes: number): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const http = toHttpError(error, request, bodyLimitBytes)
    if (http) {
      // A 503 (database down, server busy) is a condition, not a bug: one line each, no stack,
      // or an outage would write a stack trace for every request it refuses.
      if (http.statusCode === 503) request.log.warn({ code: http.code }, 'request refused: %s', http.message)
      else if (http.statusCode >= 500) request.log.error({ err: error }, 'request failed: %s', http.code)
      if (http.statusCode === 401) void reply.header('WWW-Authenticate', 'Bearer')
      return reply.code(http.statusCode).send(http.toBody())
    }
    request.log.error({ err: error }, 'unhandled error')
    return reply.code(500).send({
      error: { code: 'server_error', message: `An unexpected error occurred (request id ${request.id})` },
    })
  })

  // RFC 9112 section 3.2: an HTTP/1.1 request without Host is a 400. Node's own check answers it
  // with an empty body, so app.ts turns that off (`http.requireHostHeader`) and this answers it.
  app.addHook('onRequest', (request, _reply, done) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      return done(new HttpError(400, 'invalid_request', 'An HTTP/1.1 request must have a Host header'))
    }
    done()
  })

  // Node answers these two before any route, with an empty body or none at all.
  app.server.on('checkExpectation', (_request, response: ServerResponse) => {
    const body = errorBody('expectation_failed', 'Only "Expect: 100-continue" is supported')
    response.writeHead(417, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(body) })
    response.end(body)
  })
  app.server.on('connect', (_request, socket: Socket) => {
    writeRawError(socket, 405, 'method_not_allowed', 'CONNECT is not supported')
  })

  app.setNotFoundHandler({}, (request, reply) =>
    reply
      .code(404)
      .send({ error: { code: 'not_found', message: `Route ${request.method} ${request.url} not found` } }),
  )
}

/**
 * Fastify's router answers a URL it cannot decode (bad percent-encoding) or a path parameter over
 * maxParamLength by itself, bypassing the error handler; this gives those answers the one error body.
 * Passed as the `frameworkErrors` server option.
 */
export function frameworkErrors(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const status = error.statusCode ?? 500
  void reply
    .code(status)
    .send({ error: { code: status < 500 ? 'invalid_uri_params' : 'server_error', message: error.message } })
}

const JSON_TYPE = 'application/json; charset=utf-8'
const errorBody = (code: string, message: string) => JSON.stringify({ error: { code, message } })

/**
 * What Node's HTTP parser rejects never becomes a request, so the error handler never sees it:
 * headers over 16 KB (Node's maxHeaderSize), bytes a header or path may not hold, bad chunked
 * framing, Content-Length and Transfer-Encoding that disagree, a request that took longer than
 * requestTimeout. Node, or Fastify's default, would answer with a body of its own; this writes the
 * one error body on the socket and closes it (the parser cannot find the next request), and, as
 * Node does, writes nothing when a response on this socket has already started.
 * Passed as the `clientErrorHandler` server option.
 */
export function clientErrorHandler(error: ConnectionError, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  // Node's own test: `_httpMessage` is the response the socket is writing, if any.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage
  if (!socket.writable || inFlight?.headersSent) {
    socket.destroy()
    return
  }
  const [status, code, message] = clientErrorAnswer(error)
  writeRawError(socket, status, code, message)
}

function clientErrorAnswer(error: ConnectionError): [number, string, string] {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return [
        431,
        'request_header_fields_too_large',
        `Request headers are larger than ${maxHeaderSize} bytes`,
      ]
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return [413, 'request_too_large', 'Chunk extensions are too large']
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return [408, 'request_timeout', 'The request was not received in time']
  }
  // llhttp's reason names the fault ("Invalid header value char"); it never echoes the input.
  const reason = (error as { reason?: unknown }).reason
  return [
    400,
    'invalid_request',
    `Malformed HTTP request: ${typeof reason === 'string' ? reason : error.message}`,
  ]
}

/** A whole response on a socket no request owns, then the end of the socket, as Node does it. */
function writeRawError(socket: Socket, status: number, code: string, message: string): void {
  const body = errorBody(code, message)
  socket.write(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: ${JSON_TYPE}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  )
  socket.destroy()
}

function toHttpError(
  error: FastifyError,
  request: FastifyRequest,
  bodyLimitBytes: number,
): HttpError | undefined {
  if (error instanceof HttpError) return error
  if (error.validation) {
    const part = (error.validationContext ?? 'body') as RequestPart
    return invalidRequest(part, ajvErrorsToIssues(error.validation as never))
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      // A route may take more than the server-wide limit (a deployment carries every bundle).
      const limit = request.routeOptions.bodyLimit ?? bodyLimitBytes
      return new HttpError(413, 'request_too_large', `Request body is larger than ${limit} bytes`)
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new HttpError(415, 'invalid_content_type', 'Content-Type header must be application/json')
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new HttpError(400, 'invalid_body', 'Request body size did not match Content-Length')
  }
  if (error instanceof DecryptionError) {
    return new HttpError(500, 'decryption_failed', error.message)
  }
  if (isUnavailable(error)) {
    return new HttpError(
      503,
      'database_unavailable',
      'The database is unavailable; try again shortly',
      undefined,
      {
        cause: error,
      },
    )
  }
  // Text Postgres can never store: a NUL (22021 in text, 22P05 in jsonb) or a lone UTF-16
  // surrogate (22P02 in jsonb). Reported against the part of the request that carries it; a 22P02
  // that no input explains stays a 500.
  const state = sqlState(error)
  if (state === '22021' || state === '22P05' || state === '22P02') {
    const part = unstorablePart(request) ?? (state === '22P02' ? undefined : 'body')
    if (part) {
      return new HttpError(400, VALIDATION_CODES[part], 'Text must be valid Unicode without NUL characters')
    }
  }
  const status = error.statusCode
  if (status !== undefined && status >= 400 && status < 500) {
    return new HttpError(status, 'invalid_request', error.message)
  }
  return undefined
}

// A surrogate half without its other half.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
const unstorable = (text: string) => text.includes('\0') || LONE_SURROGATE.test(text)

function unstorablePart(request: FastifyRequest): RequestPart | undefined {
  const parts: [RequestPart, unknown][] = [
    ['querystring', request.query],
    ['params', request.params],
    ['body', request.body],
  ]
  return parts.find(([, value]) => hasUnstorableText(value))?.[0]
}

/** Bodies are at most MAX_JSON_DEPTH (src/json.ts) deep, so the recursion is bounded. */
function hasUnstorableText(value: unknown): boolean {
  if (typeof value === 'string') return unstorable(value)
  if (value === null || typeof value !== 'object') return false
  return Object.entries(value).some(([key, child]) => unstorable(key) || hasUnstorableText(child))
}
