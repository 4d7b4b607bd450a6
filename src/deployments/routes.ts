import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Kysely } from 'kysely'

import type { Database } from '../db/database.ts'
import { notFound } from '../errors.ts'
import { described, errorResponse, errors } from '../http/schemas.ts'
import type { Principal } from '../keys/store.ts'
import {
  findFunction,
  findFunctionCode,
  integrationExists,
  listFunctions,
  NO_FUNCTION,
  NO_INTEGRATION,
  removeFunction,
} from './functions.ts'
import {
  DeleteFunctionQuery,
  FunctionCode,
  FunctionDeleted,
  FunctionItem,
  FunctionList,
  FunctionParams,
  FunctionQuery,
  FunctionsParams,
  FunctionsQuery,
} from './schemas.ts'

/**
 * Nango's functions API (packages/server/lib/controllers/integrations/uniqueKey/functions and
 * controllers/shared/integrations/functions): what is deployed to the key's environment, with
 * Nango's scopes, status codes and messages. A function is a deployed sync here.
 */

const NOT_FOUND = errorResponse(
  '`not_found`: "Integration does not exist" (none with this unique key in the key\'s environment) ' +
    'or "Function does not exist" (no deployed function of that name and type).',
)

/** Who a deployment made through the API is recorded as (`syncstore deployments list`). */
export const deployer = (principal: Principal) =>
  principal.keyId ? `api key ${principal.keyId}` : `NANGO_SECRET_KEY of ${principal.environment}`

export const functionRoutes: FastifyPluginAsyncTypebox<{ db: Kysely<Database> }> = async (app, { db }) => {
  app.get(
    '/integrations/:uniqueKey/functions',
    {
      config: { scope: 'environment:functions:list' },
      schema: {
        tags: ['syncs'],
        summary: "List an integration's deployed functions",
        description:
          "Nango's listing, sorted by name, a page at a time; `pagination.total` counts every match " +
          'whatever the page. Only syncs are deployed here, so `type=action` or `type=on-event` lists none.',
        operationId: 'listFunctions',
        params: FunctionsParams,
        querystring: FunctionsQuery,
        response: {
          200: described('A page of functions.', FunctionList),
          ...errors(400, 401, 403),
          404: errorResponse('`not_found` "Integration does not exist".'),
        },
      },
    },
    async (request) => {
      const environmentId = request.principal.environmentId
      const { uniqueKey } = request.params
      const { type, search } = request.query
      const page = request.query.page ?? 0
      const limit = request.query.limit ?? 20
      if (!(await integrationExists(db, environmentId, uniqueKey))) {
        throw notFound('not_found', NO_INTEGRATION)
      }
      const { rows, total } = await listFunctions(db, environmentId, uniqueKey, {
        type,
        search: search?.trim(),
        limit,
        offset: page * limit,
      })
      return { data: rows, pagination: { total, page, limit } }
    },
  )

  app.get(
    '/integrations/:uniqueKey/functions/:name',
    {
      config: { scope: 'environment:functions:read' },
      schema: {
        tags: ['syncs'],
        summary: 'Get a deployed function',
        description: "Nango's shape: the function under `data`, as the listing shows it.",
        operationId: 'getFunction',
        params: FunctionParams,
        querystring: FunctionQuery,
        response: {
          200: described('The function.', FunctionItem),
          ...errors(400, 401, 403),
          404: NOT_FOUND,
        },
      },
    },
    async (request) => {
      const environmentId = request.principal.environmentId
      const { uniqueKey, name } = request.params
      if (!(await integrationExists(db, environmentId, uniqueKey))) {
        throw notFound('not_found', NO_INTEGRATION)
      }
      const data = await findFunction(db, environmentId, uniqueKey, name, request.query.type)
      if (!data) throw notFound('not_found', NO_FUNCTION)
      return { data }
    },
  )

  app.get(
    '/integrations/:uniqueKey/functions/:name/code',
    {
      config: { scope: 'environment:functions:read' },
      schema: {
        tags: ['syncs'],
        summary: "Get a deployed function's code",
        description:
          'The code that runs: the bundled module stored by the deployment (the sync file with its ' +
          'local imports). Nango answers with the TypeScript source it keeps beside the bundle.',
        operationId: 'getFunctionCode',
        params: FunctionParams,
        querystring: FunctionQuery,
        response: {
          200: described('The function type and code.', FunctionCode),
          ...errors(400, 401, 403),
          404: errorResponse(
            "`not_found`: \"Integration '<uniqueKey>' not found\" or \"Function '<name>' not found for " +
              "integration '<uniqueKey>'\".",
          ),
        },
      },
    },
    async (request) => {
      const environmentId = request.principal.environmentId
      const { uniqueKey, name } = request.params
      if (!(await integrationExists(db, environmentId, uniqueKey))) {
        throw notFound('not_found', `Integration '${uniqueKey}' not found`)
      }
      const code = await findFunctionCode(db, environmentId, uniqueKey, name, request.query.type)
      if (!code) throw notFound('not_found', `Function '${name}' not found for integration '${uniqueKey}'`)
      return code
    },
  )

  app.delete(
    '/integrations/:uniqueKey/functions/:name',
    {
      config: { scope: 'environment:functions:delete' },
      schema: {
        tags: ['syncs'],
        summary: 'Remove a deployed function',
        description:
          "Removes the sync from the environment's deployment, as deploying a folder without it would, " +
          'in one transaction: a deployment is recorded (source `DELETE /integrations/<uniqueKey>/functions/<name>`), ' +
          "every connection's sync of that name stops (schedule deleted, waiting runs cancelled; a " +
          'running one finishes) and its records are kept. Deploying the sync again brings it back. ' +
          'Where we differ from Nango on purpose: Nango refuses to delete functions deployed from a ' +
          'folder (`function_managed_by_deploy`); here every function is, and this removes it.',
        operationId: 'deleteFunction',
        params: FunctionParams,
        querystring: DeleteFunctionQuery,
        response: {
          200: described('The function is removed.', FunctionDeleted),
          ...errors(400, 401, 403),
          404: NOT_FOUND,
        },
      },
    },
    async (request) => {
      const { uniqueKey, name } = request.params
      await removeFunction(
        db,
        request.principal.environmentId,
        { integration: uniqueKey, name, type: request.query.type },
        {
          deployedBy: deployer(request.principal),
          source: `DELETE /integrations/${uniqueKey}/functions/${name}`,
        },
      )
      return { data: { success: true as const } }
    },
  )
}
