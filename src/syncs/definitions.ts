import type { Ajv } from 'ajv'
import { Type } from 'typebox'

import type { Pagination } from '../runtime/protocol.ts'
import { parseFrequency } from '../scheduler/frequency.ts'
import { validateJson } from '../validation.ts'

/**
 * What a sync is: a file `<folder>/<provider_config_key>/syncs/<name>.{ts,js,mjs}` default-exporting
 * createSync({...}) or a plain object, deployed to an environment (src/deployments/) and read back
 * from the database by every instance. An optional `<provider_config_key>/integration.json`
 * describes the external API (see IntegrationConfig).
 */
export interface SyncDefinition {
  integration: string
  name: string
  /** the file it was deployed from, relative to the deployed folder */
  file: string
  description: string
  /** as written, e.g. "every hour" */
  frequency: string
  frequencyMs: number
  /** model name -> JSON Schema of its records */
  models: Record<string, object>
  autoStart: boolean
  syncType: 'full' | 'incremental'
  trackDeletes: boolean
  /** sha256 of the bundled module that runs */
  bundleHash: string
  /** fields kept and shown, not used (Nango's version, endpoints, scopes...) */
  extra: Record<string, unknown>
  deployedAt: Date
}

const IntegrationConfigSchema = Type.Object(
  {
    provider: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    display_name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    /** Where nango.proxy / nango.get send requests; over the provider's (src/providers/) */
    base_url: Type.Optional(Type.String({ format: 'uri' })),
    /** Sent on every proxied request, over the provider's; values may hold templates (`${metadata.x}`) */
    headers: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.String())),
    /** How the connection's credentials are sent; by default from the credentials' type */
    auth: Type.Optional(
      Type.Object(
        {
          in: Type.Union([Type.Literal('header'), Type.Literal('query')]),
          name: Type.String({ minLength: 1 }),
          /** e.g. "Bearer {token}", "{apiKey}" */
          format: Type.Optional(Type.String()),
        },
        { additionalProperties: false },
      ),
    ),
    /** nango.paginate's default, in Nango's provider `proxy.paginate` shape; a call's own wins */
    pagination: Type.Optional(
      Type.Object(
        {
          type: Type.Union([Type.Literal('cursor'), Type.Literal('link'), Type.Literal('offset')]),
          limit: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.String({ minLength: 1 })])),
          limit_name_in_request: Type.Optional(Type.String({ minLength: 1 })),
          response_path: Type.Optional(Type.String({ minLength: 1 })),
          in_body: Type.Optional(Type.Boolean()),
          cursor_path_in_response: Type.Optional(Type.String({ minLength: 1 })),
          cursor_name_in_request: Type.Optional(Type.String({ minLength: 1 })),
          link_rel_in_response_header: Type.Optional(Type.String({ minLength: 1 })),
          link_path_in_response_body: Type.Optional(Type.String({ minLength: 1 })),
          offset_name_in_request: Type.Optional(Type.String({ minLength: 1 })),
          offset_start_value: Type.Optional(Type.Integer()),
          offset_calculation_method: Type.Optional(
            Type.Union([Type.Literal('per-page'), Type.Literal('by-response-size')]),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)

export interface IntegrationConfig {
  provider?: string
  display_name?: string
  base_url?: string
  headers?: Record<string, string>
  auth?: { in: 'header' | 'query'; name: string; format?: string }
  pagination?: Pagination
}

export interface Integration {
  key: string
  provider: string
  displayName: string
  config: IntegrationConfig
  syncs: SyncDefinition[]
  createdAt: Date
  updatedAt: Date
}

/** An environment's deployed integrations and syncs, as one request or run sees them. */
export interface Definitions {
  integrations: Map<string, Integration>
  find(integration: string, name: string): SyncDefinition | undefined
}

export function definitionsOf(integrations: Map<string, Integration>): Definitions {
  return {
    integrations,
    find: (integration, name) => integrations.get(integration)?.syncs.find((s) => s.name === name),
  }
}

export const INTEGRATION_KEY = /^[a-zA-Z0-9~:.@ _-]{1,255}$/
export const SYNC_NAME = /^[a-zA-Z0-9_-]{1,255}$/
const MODEL_NAME = /^[A-Z][a-zA-Z0-9_]+$/

/** The first problem of an integration.json, or undefined when it is valid. */
export function integrationConfigProblem(config: unknown): string | undefined {
  const issue = validateJson(IntegrationConfigSchema, config)[0]
  return issue && `${issue.path.join('.') || '(root)'}: ${issue.message}`
}

/** What loading a bundle in a worker tells about it: everything but `exec`, which stays in the bundle. */
export interface LoadedDefinition {
  description?: unknown
  frequency?: unknown
  models?: unknown
  autoStart?: unknown
  syncType?: unknown
  trackDeletes?: unknown
  hasExec: boolean
}

export type CheckedDefinition = Omit<SyncDefinition, 'bundleHash' | 'deployedAt' | 'extra' | 'file'>

/**
 * Checks what a definition file exported; returns the definition, or the problems (each a
 * sentence a user can act on).
 */
export function checkDefinition(
  where: { integration: string; name: string },
  d: LoadedDefinition,
  schemaChecker: Ajv,
): { definition: CheckedDefinition; problems?: undefined } | { problems: string[] } {
  const problems: string[] = []
  const problem = (message: string) => problems.push(message)
  if (!d.hasExec) problem('exec must be a function: exec(nango) { ... }')
  if (typeof d.description !== 'string' || d.description.trim() === '') {
    problem('description must be a non-empty string')
  }
  const frequency = typeof d.frequency === 'string' ? parseFrequency(d.frequency) : undefined
  if (!frequency) {
    problem(
      `frequency ${JSON.stringify(d.frequency)} is not valid: use e.g. "every hour", "every 30 minutes", "2h" (30 s to 365 days)`,
    )
  }
  const models = d.models
  if (
    models === null ||
    typeof models !== 'object' ||
    Array.isArray(models) ||
    Object.keys(models).length === 0
  ) {
    problem('models must map at least one model name to a JSON Schema')
  } else {
    for (const [name, schema] of Object.entries(models)) {
      if (!MODEL_NAME.test(name)) {
        problem(`model name "${name}" must start with an upper-case letter, then letters, digits or "_"`)
      }
      if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
        problem(`model ${name}: its schema must be a JSON Schema object (a TypeBox Type.Object is one)`)
      } else if (!schemaChecker.validateSchema(schema)) {
        problem(`model ${name}: not a valid JSON Schema: ${schemaChecker.errorsText(schemaChecker.errors)}`)
      }
    }
  }
  for (const flag of ['autoStart', 'trackDeletes'] as const) {
    if (d[flag] !== undefined && typeof d[flag] !== 'boolean') problem(`${flag} must be true or false`)
  }
  if (d.syncType !== undefined && d.syncType !== 'full' && d.syncType !== 'incremental') {
    problem('syncType must be "full" or "incremental"')
  }
  if (problems.length > 0) return { problems }
  const definition: CheckedDefinition = {
    integration: where.integration,
    name: where.name,
    description: d.description as string,
    frequency: d.frequency as string,
    frequencyMs: frequency!.ms,
    models: models as Record<string, object>,
    autoStart: d.autoStart !== false,
    syncType: (d.syncType as 'full' | 'incremental' | undefined) ?? 'full',
    trackDeletes: d.trackDeletes === true,
  }
  return { definition }
}
