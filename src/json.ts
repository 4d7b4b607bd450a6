/**
 * Checks applied to every JSON value that reaches storage or a handler: bodies, imported
 * records and records saved by sync functions.
 */

// Real API payloads nest a handful of levels; 64 leaves room for unusual ones while keeping every
// recursive walk (deep merge, stringify, Postgres jsonb) far from a stack overflow.
const MAX_JSON_DEPTH = 64

/**
 * Returns why `value` is unacceptable, or null. Rejects nesting deeper than `maxDepth` and
 * prototype-pollution keys (`__proto__`, or `constructor` holding `prototype`), which JSON.parse
 * keeps as ordinary keys but a later merge or Object.assign would not.
 */
export function jsonProblem(value: unknown, maxDepth = MAX_JSON_DEPTH): string | null {
  const stack: [unknown, number][] = [[value, 1]]
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!
    if (node === null || typeof node !== 'object') continue
    if (depth > maxDepth) return `JSON is nested more than ${maxDepth} levels deep`
    if (Array.isArray(node)) {
      for (const item of node) stack.push([item, depth + 1])
      continue
    }
    for (const key of Object.keys(node)) {
      const child = (node as Record<string, unknown>)[key]
      if (key === '__proto__') return 'JSON must not contain a "__proto__" key'
      if (key === 'constructor' && child !== null && typeof child === 'object' && 'prototype' in child) {
        return 'JSON must not contain a "constructor.prototype" key'
      }
      stack.push([child, depth + 1])
    }
  }
  return null
}

/** A JSON object (not an array or null). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * JSON with object keys sorted at every level: equal for values that only differ in key order
 * (Postgres' jsonb reorders keys, so a value read back is compared this way).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    isPlainObject(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  )
}
