import type { FastifyDynamicSwaggerOptions } from '@fastify/swagger'
import type { FastifyInstance, FastifySchema, RouteOptions } from 'fastify'

import { errors } from './schemas.ts'
import type { ScopeRequirement } from '../keys/scopes.ts'

/**
 * openapi.yaml is generated from the route schemas by @fastify/swagger (`npm run openapi` writes
 * it, test/http/openapi.test.ts fails when the committed file differs). What is here is what no
 * single route says: the document's head, and the answers every route shares because they come
 * from the layers in front of the handler (content type, authentication and scope, body limit,
 * the error handler).
 */

const description = [
  "Nango's records, sync and connection API, self-hosted. Every route except /health, /ready and",
  "/openapi.yaml needs `Authorization: Bearer <secret key>`; the scopes listed under an operation's",
  '`security` are alternatives (any one is enough, and a granted scope ending in `:*` covers every',
  'scope that starts with its prefix). Errors always have the StdError shape. A request whose',
  'Content-Type is not application/json is refused with 415 before authentication. Query parameters',
  'not listed for an operation (on most operations: any) are a 400 `invalid_query_params`, except on',
  'POST /sync/pause and /sync/start, which ignore the query string as Nango does.',
].join(' ')

const TAGS = [
  { name: 'meta', description: 'Liveness, readiness and this document; no key needed.' },
  {
    name: 'connections',
    description: "Connections of the key's environment, with their metadata and credentials.",
  },
  { name: 'environment', description: "The key's environment." },
  {
    name: 'integrations',
    description:
      "The environment's integrations: provider, display name and the integration's own app credentials.",
  },
  {
    name: 'records',
    description:
      'Records saved by syncs, per connection, model and variant; the connection is named in the Connection-Id and Provider-Config-Key headers.',
  },
  {
    name: 'syncs',
    description: "The sync definitions found in SYNCSTORE_INTEGRATIONS_DIR, and each connection's syncs.",
  },
]

/** Answers the layers in front of every handler give, added where a route does not describe them. */
const SHARED = errors(401, 403, 413, 415, '5XX')

function withSharedAnswers(schema: FastifySchema | undefined, route: RouteOptions): FastifySchema {
  const config = route.config as { scope?: ScopeRequirement; public?: boolean } | undefined
  const scope = config?.scope
  const anyOf = scope === undefined ? [] : typeof scope === 'string' ? [scope] : scope
  const own = (schema?.response ?? {}) as Record<string, unknown>
  const response: Record<string, unknown> = {}
  const add = (status: string, answer: unknown) => {
    response[status] = own[status] ?? answer
  }
  for (const [status, answer] of Object.entries(own)) if (/^2/.test(status)) response[status] = answer
  if (own['400']) add('400', own['400'])
  if (anyOf.length > 0) {
    add('401', SHARED[401])
    add('403', SHARED[403])
  }
  for (const [status, answer] of Object.entries(own)) if (!(status in response)) response[status] = answer
  if (schema?.body) add('413', SHARED[413])
  add('415', SHARED[415])
  add('5XX', SHARED['5XX'])
  return {
    ...schema,
    security: anyOf.map((s) => ({ bearerAuth: [s] })),
    response: Object.fromEntries(Object.entries(response).sort(([a], [b]) => a.localeCompare(b))),
  }
}

export const openApiOptions: FastifyDynamicSwaggerOptions = {
  openapi: {
    openapi: '3.1.0',
    info: { title: 'syncstore API', version: '0.1.0', description },
    servers: [{ url: 'http://localhost:3003', description: 'Local server' }],
    security: [{ bearerAuth: [] }],
    tags: TAGS,
    components: {
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'UUID v4',
          description:
            "A secret key of one environment (`syncstore keys create`, or NANGO_SECRET_KEY_<ENV>). The key only ever sees its own environment's data.",
        },
      },
    },
  },
  // 3.1 is JSON Schema 2020-12: `const` needs no rewriting as a one-value enum.
  convertConstToEnum: false,
  // A shared schema (one added with addSchema, like StdError) is a component named by its $id.
  refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
  transform: ({ schema, url, route }) => ({ schema: withSharedAnswers(schema, route), url }),
  // The head first, then the paths, then the components they refer to.
  transformObject: (document) => {
    if (!('openapiObject' in document)) throw new Error('openApiOptions describe an OpenAPI document')
    const doc = document.openapiObject
    const { openapi, info, servers, security, tags, paths, components, ...rest } = doc
    return { openapi, info, servers, security, tags, paths, components, ...rest } as typeof doc
  },
}

/** openapi.yaml as `npm run openapi` writes it and GET /openapi.yaml serves it. */
export function openApiYaml(app: FastifyInstance): string {
  return `# Generated from the route schemas by \`npm run openapi\`; edit the schemas, not this file.\n${app.swagger({ yaml: true })}`
}
