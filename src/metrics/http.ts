import type { FastifyInstance } from 'fastify'

import type { Metrics } from './metrics.ts'

/**
 * Times every request of the app by its route pattern (`/records`, `/connections/:connectionId`),
 * never the URL, so the label values stay as few as the routes; a URL that matches no route counts
 * as `unmatched`. A root-level hook, like the auth hook (src/http/auth.ts), so it sees every route.
 */
export function registerRequestMetrics(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', (request, reply, done) => {
    metrics.observeRequest(
      request.method,
      request.routeOptions.url ?? 'unmatched',
      reply.statusCode,
      reply.elapsedTime / 1000,
    )
    done()
  })
}
