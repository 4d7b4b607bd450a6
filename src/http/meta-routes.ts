import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sql } from 'kysely'
import { Type } from 'typebox'

import type { Db } from '../db/connect.ts'
import { openApiYaml } from './openapi.ts'
import { described, errors } from './schemas.ts'

/** Liveness, readiness and the API description: the only routes that need no key. */
export const metaRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  app.get(
    '/health',
    {
      config: { public: true },
      schema: {
        tags: ['meta'],
        summary: 'Liveness',
        operationId: 'getHealth',
        response: { 200: described('The process is up.', Type.Object({ status: Type.Literal('ok') })) },
      },
    },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/ready',
    {
      config: { public: true },
      schema: {
        tags: ['meta'],
        summary: 'Readiness (the database answers)',
        operationId: 'getReady',
        response: {
          200: described('The database is reachable.', Type.Object({ status: Type.Literal('ready') })),
          ...errors(503),
        },
      },
    },
    async () => {
      // Any failure here (pool exhausted, Postgres down) is mapped to 503 by the error handler.
      await sql`SELECT 1`.execute(db.kysely)
      return { status: 'ready' as const }
    },
  )

  app.get(
    '/openapi.yaml',
    {
      config: { public: true },
      schema: {
        tags: ['meta'],
        summary: 'This document',
        operationId: 'getOpenApi',
        response: {
          200: {
            description: 'The OpenAPI description of this server, as served.',
            content: { 'application/yaml': { schema: Type.String() } },
          },
        },
      },
    },
    async (_request, reply) => reply.type('application/yaml; charset=utf-8').send(openApiYaml(app)),
  )
}
