import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Kysely } from 'kysely'
import { type Static, Type } from 'typebox'

import type { Database } from '../db/database.ts'
import { HttpError } from '../errors.ts'
import {
  described,
  EmptyQuery,
  errorResponse,
  JsonObject,
  ProviderConfigKey,
  Strict,
  SyncName,
} from '../http/schemas.ts'
import { applyNangoDeploy } from './nango-deploy.ts'
import { type DeployMode, planNangoDeploy } from './nango-plan.ts'
import { prepareFlows } from './nango-flows.ts'
import { deployer } from './routes.ts'

/**
 * What Nango's CLI calls to deploy createSync files (`nango deploy <env>`, nango 0.71.x:
 * packages/cli/lib/zeroYaml/deploy.ts): the plan, then the deployment, with the bodies, scope
 * (`environment:deploy`) and answers of Nango's server (packages/server/lib/controllers/sync/
 * deploy/{postConfirmation,postDeploy,validation}.ts), in the key's environment.
 */

/**
 * Nango takes bodies up to its NANGO_SERVER_PUBLIC_BODY_LIMIT (75 MB by default) on these: a
 * deployment carries every compiled function, each with its inline source map (tens of KB).
 */
const DEPLOY_BODY_LIMIT_BYTES = 75 * 1024 * 1024

const Endpoint = Type.Union([
  Strict({
    method: Type.Union(['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].map((m) => Type.Literal(m))),
    path: Type.String(),
    group: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  }),
  Strict(
    Object.fromEntries(
      ['GET', 'POST', 'PATCH', 'PUT', 'DELETE'].map((m) => [m, Type.Optional(Type.String())]),
    ),
  ),
])

const FlowConfig = Strict({
  type: Type.Union([Type.Literal('sync'), Type.Literal('action')], {
    description: 'Only syncs are deployed here: a flow of type `action` is refused.',
  }),
  syncName: SyncName,
  providerConfigKey: ProviderConfigKey,
  models: Type.Array(Type.String({ minLength: 1, maxLength: 255 })),
  runs: Type.Union([Type.String(), Type.Null()], { description: 'The frequency, e.g. "every hour".' }),
  version: Type.Optional(Type.String()),
  auto_start: Type.Optional(Type.Boolean()),
  track_deletes: Type.Optional(Type.Boolean()),
  sync_type: Type.Optional(Type.Union([Type.Literal('incremental'), Type.Literal('full')])),
  attributes: Type.Optional(JsonObject),
  metadata: Type.Optional(
    Strict({
      scopes: Type.Optional(Type.Array(Type.String({ maxLength: 255 }))),
      description: Type.Optional(Type.String({ maxLength: 2000 })),
    }),
  ),
  model_schema: Type.Optional(Type.Unknown()),
  input: Type.Optional(Type.Unknown({ description: "The metadata model's name." })),
  endpoints: Type.Optional(Type.Array(Endpoint)),
  webhookSubscriptions: Type.Optional(Type.Array(Type.String({ maxLength: 255 }))),
  models_json_schema: Type.Optional(
    Type.Object(
      { definitions: Type.Record(Type.String(), JsonObject) },
      { description: "Each model's JSON Schema (draft-07), as the CLI converted it from zod: stored." },
    ),
  ),
  features: Type.Optional(Type.Array(Type.Literal('checkpoints'))),
  fileBody: Strict({
    js: Type.String({
      description: 'The compiled CommonJS bundle (`module.exports.default` is the definition): what runs.',
    }),
    ts: Type.String({ description: "The entry file's source." }),
  }),
})

const ScriptsByProvider = Type.Array(
  Strict({ providerConfigKey: ProviderConfigKey, scripts: Type.Array(JsonObject) }),
  { description: 'On-event scripts: not deployed here, so any script is refused.' },
)

const common = {
  flowConfigs: Type.Array(FlowConfig),
  onEventScriptsByProvider: Type.Optional(ScriptsByProvider),
  postConnectionScriptsByProvider: Type.Optional(ScriptsByProvider),
  jsonSchema: Type.Optional(JsonObject),
  reconcile: Type.Boolean({
    description: 'On deploy: remove the deployed syncs the deployment does not name.',
  }),
  debug: Type.Boolean(),
  deployMode: Type.Optional(
    Type.Union([Type.Literal('all'), Type.Literal('single'), Type.Literal('integration')], {
      description:
        '`all` (default): the deployment is the whole environment; `integration`: the first ' +
        "flow's integration; `single`: one function, nothing removed.",
    }),
  ),
  singleDeployMode: Type.Optional(Type.Boolean({ description: 'Older CLIs: `deployMode: single`.' })),
  sdkVersion: Type.Optional(Type.String({ pattern: '[0-9]+\\.[0-9]+\\.[0-9]+-(zero|yaml)' })),
  source: Type.Optional(Type.Union([Type.Literal('standalone'), Type.Literal('repo')])),
}
const ConfirmationBody = Strict(common)
const DeployBody = Strict({ ...common, nangoYamlBody: Type.String() })

const SlimSync = Type.Object({
  name: Type.String(),
  providerConfigKey: Type.String(),
  connections: Type.Integer({ description: "The integration's connections." }),
  auto_start: Type.Boolean(),
})
const SlimFunction = Type.Object({ name: Type.String(), providerConfigKey: Type.String() })
const SlimOnEvent = Type.Object({
  name: Type.String(),
  providerConfigKey: Type.String(),
  event: Type.String(),
})
const Plan = Type.Object({
  newSyncs: Type.Array(SlimSync),
  updatedSyncs: Type.Array(SlimSync),
  deletedSyncs: Type.Array(SlimSync),
  newActions: Type.Array(SlimFunction),
  updatedActions: Type.Array(SlimFunction),
  deletedActions: Type.Array(SlimFunction),
  deletedModels: Type.Array(Type.String()),
  newOnEventScripts: Type.Array(SlimOnEvent),
  updatedOnEventScripts: Type.Array(SlimOnEvent),
  deletedOnEventScripts: Type.Array(SlimOnEvent),
})
const Deployed = Type.Array(
  Type.Object({
    name: Type.String(),
    version: Type.String(),
    providerConfigKey: Type.String(),
    type: Type.Literal('sync'),
    models: Type.Array(Type.String()),
  }),
)

const REFUSED = errorResponse(
  '`invalid_body`: the body does not match, or a flow cannot be deployed (an action or on-event ' +
    'script; a bundle that does not load or is not a sync; settings syncstore refuses), with one ' +
    '`errors` item per problem.',
)
const TOO_LARGE = errorResponse('`request_too_large`: the body exceeds 75 MiB.')

export const nangoDeployRoutes: FastifyPluginAsyncTypebox<{ db: Kysely<Database> }> = async (app, { db }) => {
  app.post(
    '/sync/deploy/confirmation',
    {
      config: { scope: 'environment:deploy' },
      bodyLimit: DEPLOY_BODY_LIMIT_BYTES,
      schema: {
        tags: ['syncs'],
        summary: 'Plan a deployment (nango deploy)',
        description:
          "What deploying these functions would change in the key's environment, as Nango's CLI shows " +
          'it before deploying: a sync not deployed yet is new, a deployed one updated, and (unless ' +
          '`deployMode` is `single`) the deployed syncs the body does not name are deleted. Each ' +
          'bundle is loaded and checked here already, so a broken one fails before anything is asked.',
        operationId: 'postDeployConfirmation',
        querystring: EmptyQuery,
        body: ConfirmationBody,
        response: {
          200: described('The plan; actions and on-event scripts are always empty.', Plan),
          400: REFUSED,
          413: TOO_LARGE,
        },
      },
    },
    async (request) => {
      const syncs = await prepared(request.body)
      return planNangoDeploy(db, request.principal.environmentId, syncs, modeOf(request.body))
    },
  )

  app.post(
    '/sync/deploy',
    {
      config: { scope: 'environment:deploy' },
      bodyLimit: DEPLOY_BODY_LIMIT_BYTES,
      schema: {
        tags: ['syncs'],
        summary: 'Deploy functions (nango deploy)',
        description:
          "Deploys the syncs to the key's environment in one transaction, as `syncstore deploy` does: " +
          'their bundles and settings stored, a deployment recorded (source `nango deploy (sdk ' +
          '<sdkVersion>)`) when anything changed, syncs created for existing connections, and with ' +
          '`reconcile` the deployed syncs the body does not name removed (their syncs stop, records ' +
          'kept). An integration the environment lacks is created, its provider named by its key ' +
          '(Nango answers `unknown_provider_config`). Versions: the one sent, else the deployed one ' +
          'plus one when the sync changed.',
        operationId: 'postDeploy',
        querystring: EmptyQuery,
        body: DeployBody,
        response: {
          200: described('Every deployed sync, with its version.', Deployed),
          400: REFUSED,
          413: TOO_LARGE,
        },
      },
    },
    async (request) => {
      const syncs = await prepared(request.body)
      const { deployed } = await applyNangoDeploy(db, request.principal.environmentId, syncs, {
        mode: modeOf(request.body),
        reconcile: request.body.reconcile,
        deployedBy: deployer(request.principal),
        source: `nango deploy (sdk ${request.body.sdkVersion ?? 'unknown'})`,
      })
      return deployed
    },
  )
}

type Body = Static<typeof ConfirmationBody>

function modeOf(body: Body): DeployMode {
  return body.deployMode ?? (body.singleDeployMode ? 'single' : 'all')
}

/** The body's syncs, bundled and checked; a 400 naming each flow that cannot be deployed. */
async function prepared(body: Body) {
  const issues = [
    ...body.flowConfigs.flatMap((flow, i) =>
      flow.type === 'sync'
        ? []
        : [
            {
              path: ['flowConfigs', String(i)],
              message:
                `${flow.providerConfigKey}/${flow.syncName} is an action: syncstore runs syncs only ` +
                '(deploy the syncs alone with `nango deploy <env> --sync <name>`)',
            },
          ],
    ),
    ...(['onEventScriptsByProvider', 'postConnectionScriptsByProvider'] as const).flatMap((field) =>
      (body[field] ?? []).flatMap((p, i) =>
        p.scripts.length === 0
          ? []
          : [
              {
                path: [field, String(i)],
                message: `${p.providerConfigKey} has on-event scripts, which syncstore does not run`,
              },
            ],
      ),
    ),
  ].map((issue) => ({ code: 'custom', ...issue }))
  if (issues.length > 0) throw refused(issues)
  const { syncs, problems } = await prepareFlows(body.flowConfigs)
  if (problems.length > 0) throw refused(problems)
  return syncs
}

function refused(issues: { code: string; message: string; path: string[] }[]): HttpError {
  // Nango's CLI prints only the message of a failed deployment: it names every problem.
  return new HttpError(
    400,
    'invalid_body',
    `Cannot deploy: ${issues.map((i) => i.message).join('; ')}`,
    issues,
  )
}
