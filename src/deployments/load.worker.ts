import { pathToFileURL } from 'node:url'
import { parentPort, workerData } from 'node:worker_threads'

import type { LoadedDefinition } from '../syncs/definitions.ts'
import { toJsonSchema } from './json-schema.ts'

/**
 * Worker task: imports each bundle (its top-level code runs here, never in the server) and sends
 * back what can be cloned: everything but `exec`, which stays in the bundle. Zod models (and
 * Nango's `metadata` and `checkpoint` schemas) become JSON Schema here, once per deployment.
 */
export type LoadResult = { error: string } | { definition: LoadedDefinition; extra: Record<string, unknown> }

/** Nango's fields that syncstore keeps and shows without using them yet. */
const KEPT = ['version', 'endpoints', 'scopes', 'webhookSubscriptions'] as const
/** Nango's schemas of the connection's metadata and of the sync's checkpoint, kept as JSON Schema. */
const SCHEMAS = ['metadata', 'checkpoint'] as const

/** What Nango's createAction, createOnEvent and createFunction tag their definitions with. */
const NOT_SYNCS: Record<string, string> = {
  action: 'createAction',
  onEvent: 'createOnEvent',
  function: 'createFunction',
}

function load(mod: { default?: unknown }): LoadResult {
  // A CommonJS file's `export default` arrives as { default: ... } under another default.
  const value = (mod.default as { default?: unknown } | undefined)?.default ?? mod.default
  if (value === null || typeof value !== 'object') {
    return { error: 'must default-export createSync({...}) or a plain object' }
  }
  const def = value as Record<string, unknown>
  const other = typeof def.type === 'string' ? NOT_SYNCS[def.type] : undefined
  if (other) return { error: `is a ${other}(...), not a sync: only createSync files in syncs/ are deployed` }
  const extra: Record<string, unknown> = {}
  for (const key of KEPT) if (def[key] !== undefined) extra[key] = JSON.parse(JSON.stringify(def[key]))
  for (const key of SCHEMAS) {
    if (def[key] === undefined) continue
    try {
      extra[key] = toJsonSchema(def[key])
    } catch (err) {
      return { error: `${key}: could not be converted to JSON Schema: ${(err as Error).message}` }
    }
  }
  let models: unknown = def.models ?? null
  if (models !== null && typeof models === 'object' && !Array.isArray(models)) {
    const converted: Record<string, unknown> = {}
    for (const [name, schema] of Object.entries(models)) {
      try {
        converted[name] = toJsonSchema(schema)
      } catch (err) {
        return { error: `model ${name}: could not be converted to JSON Schema: ${(err as Error).message}` }
      }
    }
    models = converted
  }
  return {
    definition: {
      description: def.description,
      frequency: def.frequency,
      models: JSON.parse(JSON.stringify(models)) as unknown,
      autoStart: def.autoStart,
      syncType: def.syncType,
      trackDeletes: def.trackDeletes,
      hasExec: typeof def.exec === 'function',
    },
    extra,
  }
}

const files = (workerData as { files: string[] }).files
const results: LoadResult[] = []
for (const file of files) {
  try {
    results.push(load((await import(pathToFileURL(file).href)) as { default?: unknown }))
  } catch (err) {
    results.push({ error: `could not be loaded: ${(err as Error).message}` })
  }
}
parentPort!.postMessage(results)
