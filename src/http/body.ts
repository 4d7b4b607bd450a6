import type { FastifyInstance } from 'fastify'

import { jsonProblem } from '../json.ts'
import { HttpError } from '../errors.ts'

/**
 * JSON in, JSON out. A request that declares any other Content-Type is refused with 415 before
 * authentication, as Nango's jsonContentTypeMiddleware does (GET included). Bodies are parsed
 * after authentication, and rejected when malformed, too deep or carrying prototype keys.
 */
export function registerJsonBodies(app: FastifyInstance): void {
  // Hooks on every request are callback-style: an async one costs a promise and a tick each time.
  app.addHook('onRequest', (request, _reply, done) => {
    const type = request.headers['content-type']
    if (
      request.is404 ||
      type === undefined ||
      type.trimStart().toLowerCase().startsWith('application/json')
    ) {
      return done()
    }
    done(new HttpError(415, 'invalid_content_type', 'Content-Type header must be application/json'))
  })

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    // The Node client sends `Content-Type: application/json` with no body on GET and DELETE.
    if (body === '') return done(null, undefined)
    let value: unknown
    try {
      value = JSON.parse(body as string)
    } catch (err) {
      return done(new HttpError(400, 'invalid_json', (err as Error).message))
    }
    const problem = jsonProblem(value)
    if (problem) return done(new HttpError(400, 'invalid_body', problem))
    done(null, value)
  })
}
