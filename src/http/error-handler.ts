import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

import { DecryptionError } from '../crypto.ts'
import { isUnavailable, sqlState } from '../db/errors.ts'
import { HttpError, invalidRequest, type RequestPart, VALIDATION_CODES } from './errors.ts'
import { ajvErrorsToIssues } from './validation.ts'

/**
 * The one place errors become responses. Client errors keep their message; anything unexpected
 * is logged with its stack and answered with a generic 500 that names the request id.
 */
export function registerErrorHandling(app: FastifyInstance, bodyLimitBytes: number): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const http = toHttpError(error, request, bodyLimitBytes)
    if (http) {
      if (http.statusCode >= 500) request.log.error({ err: error }, 'request failed: %s', http.code)
      if (http.statusCode === 401) void reply.header('WWW-Authenticate', 'Bearer')
      return reply.code(http.statusCode).send(http.toBody())
    }
    request.log.error({ err: error }, 'unhandled error')
    return reply.code(500).send({
      error: { code: 'server_error', message: `An unexpected error occurred (request id ${request.id})` },
    })
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
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new HttpError(413, 'request_too_large', `Request body is larger than ${bodyLimitBytes} bytes`)
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
