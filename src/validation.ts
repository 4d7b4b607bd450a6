import { Ajv, type ErrorObject } from 'ajv'
import addFormats from 'ajv-formats'
import type { FieldIssue } from './errors.ts'

/**
 * Route schemas are TypeBox (plain JSON Schema), validated by Ajv. Two instances:
 * - query strings, path params and headers arrive as text, so scalars are coerced and a single
 *   repeated key (`ids=a`) becomes an array;
 * - bodies are JSON and are never coerced.
 * Neither removes unknown keys: a strict schema rejects them, as Nango's `.strict()` zod schemas do.
 */
export function createAjv(coerce: boolean): Ajv {
  const ajv = new Ajv({
    coerceTypes: coerce ? 'array' : false,
    useDefaults: true,
    removeAdditional: false,
    allErrors: true,
    // `discriminator` unions (oneOf told apart by a tag) validate only the branch their tag names.
    discriminator: true,
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
        message: `Unrecognized key: "${unknownKey(e)}"`,
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
    case 'discriminator': // the tag is missing or names no branch
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
 * A response lists at most this many issues, and an unknown-keys message this many keys: Ajv
 * reports every failing item, so a 1 MB body of `"syncs":[1,1,...]` has 500,000 issues, which would
 * take seconds to describe and a 38 MB response; no client reads past the first few.
 */
const MAX_ISSUES = 100
const LISTED_KEYS = 100

/**
 * Ajv errors to Nango-style issues. A failed union is reported through the one branch whose
 * discriminating constant matched (like zod's discriminatedUnion), or else once as `invalid_union`
 * rather than with one error per branch. Unknown keys at one path are grouped like zod groups them;
 * each group's message is built once, at the end (rebuilding it per key took 37 s for 40,000 keys).
 */
export function ajvErrorsToIssues(errors: readonly ErrorObject[]): FieldIssue[] {
  const issues: FieldIssue[] = []
  const unknownKeys = new Map<string, { issue: FieldIssue; keys: string[]; count: number }>()
  for (const e of resolveUnions(errors)) {
    const unknown = e.keyword === 'additionalProperties'
    const group = unknown ? unknownKeys.get(e.instancePath) : undefined
    if (group) {
      group.count++
      if (group.keys.length < LISTED_KEYS) group.keys.push(unknownKey(e))
      continue
    }
    if (issues.length === MAX_ISSUES) continue
    const issue = issueOf(e)
    if (unknown) unknownKeys.set(e.instancePath, { issue, keys: [unknownKey(e)], count: 1 })
    issues.push(issue)
  }
  for (const { issue, keys, count } of unknownKeys.values()) {
    if (count > 1) issue.message = unrecognizedKeys(keys, count)
  }
  return issues
}

const unknownKey = (e: ErrorObject) =>
  String((e.params as { additionalProperty: unknown }).additionalProperty)

function unrecognizedKeys(listed: readonly string[], count: number): string {
  const more = count > listed.length ? ` and ${count - listed.length} more` : ''
  return `Unrecognized keys: ${listed.map((k) => `"${k}"`).join(', ')}${more}`
}

/**
 * Ajv appends a union's error right after the errors of its failed branches, so those are the run
 * of errors just before it whose schema path and instance path lie under the union's (the instance
 * path tells apart the items of an array of unions). One pass with a stack: an error is looked at
 * once per union enclosing it, and unions nest only as deep as the schema, so this is linear in the
 * number of errors. (Our schemas use no `$ref`, whose errors would carry the referenced path.)
 */
function resolveUnions(errors: readonly ErrorObject[]): ErrorObject[] {
  const resolved: ErrorObject[] = []
  for (const e of errors) {
    if (e.keyword !== 'anyOf' && e.keyword !== 'oneOf') {
      resolved.push(e)
      continue
    }
    let start = resolved.length
    while (start > 0 && isInside(resolved[start - 1]!, e)) start--
    const branch = matchingBranch(e, resolved, start)
    if (branch === undefined) {
      resolved.length = start
      resolved.push(e)
      continue
    }
    let kept = start
    for (let i = start; i < resolved.length; i++) {
      if (branchOf(resolved[i]!, e) === branch) resolved[kept++] = resolved[i]!
    }
    resolved.length = kept
  }
  return resolved
}

const isUnder = (path: string, parent: string) =>
  path.startsWith(parent) && (path.length === parent.length || path[parent.length] === '/')

const isInside = (e: ErrorObject, union: ErrorObject) =>
  e.schemaPath.length > union.schemaPath.length &&
  isUnder(e.schemaPath, union.schemaPath) &&
  isUnder(e.instancePath, union.instancePath)

/** Which branch of `union` (its index in the schema path) an error inside it comes from. */
function branchOf(e: ErrorObject, union: ErrorObject): string {
  const from = union.schemaPath.length + 1
  const to = e.schemaPath.indexOf('/', from)
  return e.schemaPath.slice(from, to === -1 ? undefined : to)
}

/** The one failed branch whose constants all matched, if the union has several failed branches. */
function matchingBranch(union: ErrorObject, errors: ErrorObject[], start: number): string | undefined {
  const failed = new Set<string>()
  const constMismatch = new Set<string>()
  for (let i = start; i < errors.length; i++) {
    const branch = branchOf(errors[i]!, union)
    failed.add(branch)
    if (errors[i]!.keyword === 'const') constMismatch.add(branch)
  }
  if (failed.size < 2) return undefined
  const matching = [...failed].filter((branch) => !constMismatch.has(branch))
  return matching.length === 1 ? matching[0] : undefined
}
