import { readFile } from 'node:fs/promises'

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sql } from 'kysely'
import { Type } from 'typebox'

import type { Db } from '../db/connect.ts'
import { errors } from './schemas.ts'

const OPENAPI_FILE = new URL('../../openapi.yaml', import.meta.url)

/** Liveness, readiness and the API description: the only routes that need no key. */
export const metaRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async (app, { db }) => {
  const openapi = await readFile(OPENAPI_FILE, 'utf8')

  app.get(
    '/health',
    { config: { public: true }, schema: { response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/ready',
    {
      config: { public: true },
      schema: { response: { 200: Type.Object({ status: Type.Literal('ready') }), ...errors(503) } },
    },
    async () => {
      // Any failure here (pool exhausted, Postgres down) is mapped to 503 by the error handler.
      await sql`SELECT 1`.execute(db.kysely)
      return { status: 'ready' as const }
    },
  )

  app.get('/openapi.yaml', { config: { public: true } }, async (_request, reply) =>
    reply.type('application/yaml; charset=utf-8').send(openapi),
  )
}
