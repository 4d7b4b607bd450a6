import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

import type { Sealer } from '../crypto.ts'
import type { Db } from '../db/connect.ts'
import { described, EmptyQuery, errors } from '../http/schemas.ts'
import { listVariables } from './variables-store.ts'

export interface EnvironmentRoutesOptions {
  db: Db
  sealer: Sealer
}

export const environmentRoutes: FastifyPluginAsyncTypebox<EnvironmentRoutesOptions> = async (
  app,
  { db, sealer },
) => {
  app.get(
    '/environment-variables',
    {
      config: { scope: 'environment:variables:read' },
      schema: {
        tags: ['environment'],
        summary: "List the environment's variables (decrypted), sorted by name",
        operationId: 'getEnvironmentVariables',
        querystring: EmptyQuery,
        response: {
          200: described(
            "A bare array, like Nango's.",
            Type.Array(Type.Object({ name: Type.String(), value: Type.String() })),
          ),
          ...errors(400, 401, 403, 415),
        },
      },
    },
    async (request) => listVariables(db.kysely, sealer, request.principal.environmentId),
  )
}
