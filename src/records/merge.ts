import { isPlainObject } from '../json.ts'

/**
 * batchUpdate's merge: objects merge key by key, recursively; arrays and scalars in the update
 * replace what was there. Inputs have passed jsonProblem, so no key can reach a prototype.
 */
export function deepMerge(
  base: Record<string, unknown>,
  update: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(update)) {
    const current = out[key]
    out[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value
  }
  return out
}
