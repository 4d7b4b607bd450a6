import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { FastifySchemaCompiler } from 'fastify'

import type { FieldIssue } from './errors.ts'

/**
 * Route schemas are TypeBox (plain JSON Schema), validated by Ajv. Two instances:
 * - query strings, path params and headers arrive as text, so scalars are coerced and a single
 *   repeated key (`ids=a`) becomes an array;
 * - bodies are JSON and are never coerced.
 * Neither removes unknown keys: a strict schema rejects them, as Nango's `.strict()` zod schemas do.
 */
function createAjv(coerce: boolean): Ajv {
  const ajv = new Ajv({
    coerceTypes: coerce ? 'array' : false,
    useDefaults: true,
    removeAdditional: false,
    allErrors: true,
    verbose: true,
    strict: false,
  })
  addFormats.default(ajv)
  return ajv
}

/** Validates a JSON value (a CLI argument, say) exactly as a request body would be. */
export function validateJson(schema: object, value: unknown): FieldIssue[] {
  const validate = createAjv(false).compile(schema)
  return validate(value) ? [] : ajvErrorsToIssues(validate.errors ?? [])
}

export function createValidatorCompiler(): FastifySchemaCompiler<unknown> {
  const textual = createAjv(true)
  const json = createAjv(false)
  return ({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? json : textual
    return ajv.compile(schema as object) as ValidateFunction
  }
}

const received = (value: unknown): string =>
  value === undefined ? 'undefined' : value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value

function pathOf(instancePath: string): string[] {
  return instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
}

function issueOf(e: ErrorObject): FieldIssue {
  const path = pathOf(e.instancePath)
  const p = e.params as Record<string, unknown>
  const schemaType = (e.parentSchema as { type?: string } | undefined)?.type
  switch (e.keyword) {
    case 'required': {
      const prop = String(p.missingProperty)
      const parent = e.parentSchema as { properties?: Record<string, { type?: string }> } | undefined
      const expected = parent?.properties?.[prop]?.type ?? 'value'
      return {
        code: 'invalid_type',
        message: `Invalid input: expected ${expected}, received undefined`,
        path: [...path, prop],
      }
    }
    case 'additionalProperties':
      return {
        code: 'unrecognized_keys',
        message: `Unrecognized key: "${String(p.additionalProperty)}"`,
        path,
      }
    case 'type':
      return {
        code: 'invalid_type',
        message: `Invalid input: expected ${String(p.type)}, received ${received(e.data)}`,
        path,
      }
    case 'minimum':
    case 'exclusiveMinimum':
      return {
        code: 'too_small',
        message: `Too small: expected number to be ${p.comparison}${p.limit}`,
        path,
      }
    case 'maximum':
    case 'exclusiveMaximum':
      return { code: 'too_big', message: `Too big: expected number to be ${p.comparison}${p.limit}`, path }
    case 'minLength':
      return {
        code: 'too_small',
        message: `Too small: expected string to have >=${p.limit} characters`,
        path,
      }
    case 'maxLength':
      return { code: 'too_big', message: `Too big: expected string to have <=${p.limit} characters`, path }
    case 'minItems':
      return { code: 'too_small', message: `Too small: expected array to have >=${p.limit} items`, path }
    case 'maxItems':
      return { code: 'too_big', message: `Too big: expected array to have <=${p.limit} items`, path }
    case 'minProperties':
      return { code: 'too_small', message: `Too small: expected object to have >=${p.limit} keys`, path }
    case 'maxProperties':
      return { code: 'too_big', message: `Too big: expected object to have <=${p.limit} keys`, path }
    case 'pattern':
      return { code: 'invalid_format', message: `Invalid string: must match pattern /${p.pattern}/`, path }
    case 'format':
      return { code: 'invalid_format', message: `Invalid ${String(p.format)}`, path }
    case 'enum': {
      const allowed = (p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join('|')
      return { code: 'invalid_value', message: `Invalid option: expected one of ${allowed}`, path }
    }
    case 'const':
      return {
        code: 'invalid_value',
        message: `Invalid input: expected ${JSON.stringify(p.allowedValue)}`,
        path,
      }
    case 'anyOf':
    case 'oneOf':
      return { code: 'invalid_union', message: 'Invalid input', path }
    default:
      return {
        code: schemaType ? `invalid_${schemaType}` : 'invalid_value',
        message: e.message ?? 'Invalid input',
        path,
      }
  }
}

/**
 * Ajv errors to Nango-style issues. A failed union is reported through the one branch whose
 * discriminating constant matched (like zod's discriminatedUnion), or else once as `invalid_union`
 * rather than with one error per branch. Unknown keys at one path are grouped like zod groups them.
 */
export function ajvErrorsToIssues(errors: readonly ErrorObject[]): FieldIssue[] {
  const issues: FieldIssue[] = []
  const unknownKeys = new Map<string, { issue: FieldIssue; keys: string[] }>()
  for (const e of resolveUnions(errors)) {
    const issue = issueOf(e)
    if (e.keyword === 'additionalProperties') {
      const key = String((e.params as { additionalProperty: unknown }).additionalProperty)
      const group = unknownKeys.get(e.instancePath)
      if (group) {
        group.keys.push(key)
        group.issue.message = `Unrecognized keys: ${group.keys.map((k) => `"${k}"`).join(', ')}`
        continue
      }
      unknownKeys.set(e.instancePath, { issue, keys: [key] })
    }
    issues.push(issue)
  }
  return issues
}

function resolveUnions(errors: readonly ErrorObject[]): ErrorObject[] {
  const union = errors.find((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf')
  if (!union) return [...errors]
  const prefix = `${union.schemaPath}/`
  const inside = errors.filter((e) => e.schemaPath.startsWith(prefix))
  const outside = errors.filter((e) => e !== union && !e.schemaPath.startsWith(prefix))
  const branches = new Map<string, ErrorObject[]>()
  for (const e of inside) {
    const branch = e.schemaPath.slice(prefix.length).split('/')[0]!
    branches.set(branch, [...(branches.get(branch) ?? []), e])
  }
  const matching = [...branches.values()].filter((errs) => !errs.some((e) => e.keyword === 'const'))
  const chosen = matching.length === 1 && branches.size > 1 ? resolveUnions(matching[0]!) : [union]
  return [...resolveUnions(outside), ...chosen]
}
