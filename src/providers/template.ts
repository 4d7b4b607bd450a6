/**
 * Provider templates, as Nango's providers.yaml writes them: `${connectionConfig.subdomain}`,
 * `${credentials.username}`, `${metadata.region}`, `${accessToken}`, `${apiKey}`. A value may
 * offer alternatives, `https://${connectionConfig.hostname} || https://amplitude.com`: the first
 * whose variables are all known is taken.
 */

/** What a template's variables name: `connectionConfig`, `credentials`, `metadata`, `accessToken`... */
export type TemplateValues = Record<string, unknown>

/** A template names a variable the connection does not have. */
export class MissingVariableError extends Error {
  override name = 'MissingVariableError'
  constructor(
    readonly variable: string,
    what: string,
  ) {
    super(`${what} needs \${${variable}}, which the connection does not have`)
  }
}

const VARIABLE = /\$\{\s*([^{}\s]+)\s*\}/g

/** The names a template uses (every alternative's). */
export function variablesOf(template: string): string[] {
  return [...template.matchAll(VARIABLE)].map((m) => m[1]!)
}

/**
 * The template with its variables replaced, or MissingVariableError naming the first variable
 * missing from the first alternative. `what` says where the template is used, for that message.
 */
export function interpolate(template: string, values: TemplateValues, what: string): string {
  const alternatives = template.split(/\s+\|\|\s+/)
  let firstMissing: string | undefined
  for (const alternative of alternatives) {
    let missing: string | undefined
    const out = alternative.replace(VARIABLE, (_, name: string) => {
      const value = lookup(values, name)
      if (value === undefined) {
        missing ??= name
        return ''
      }
      return value
    })
    if (missing === undefined) return out.trim()
    firstMissing ??= missing
  }
  throw new MissingVariableError(firstMissing!, what)
}

/** `a.b.c` in the values, as a string; undefined when absent, null, empty or not a scalar. */
function lookup(values: TemplateValues, path: string): string | undefined {
  let current: unknown = values
  for (const key of path.split('.')) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, key)) return undefined
    current = (current as Record<string, unknown>)[key]
  }
  if (typeof current === 'string') return current === '' ? undefined : current
  if (typeof current === 'number' || typeof current === 'boolean') return String(current)
  return undefined
}
