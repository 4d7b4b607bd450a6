import { pathToFileURL } from 'node:url'
import { parentPort, workerData } from 'node:worker_threads'

import type { LoadedDefinition } from '../syncs/definitions.ts'

/**
 * Worker task: imports each bundle (its top-level code runs here, never in the server) and sends
 * back what can be cloned: everything but `exec`, which stays in the bundle.
 */
export type LoadResult = { error: string } | { definition: LoadedDefinition; extra: Record<string, unknown> }

/** Nango's fields that syncstore keeps and shows without using them yet. */
const KEPT = ['version', 'endpoints', 'scopes', 'webhookSubscriptions'] as const

const files = (workerData as { files: string[] }).files
const results: LoadResult[] = []
for (const file of files) {
  try {
    const mod = (await import(pathToFileURL(file).href)) as { default?: unknown }
    // A CommonJS file's `export default` arrives as { default: ... } under another default.
    const value = (mod.default as { default?: unknown } | undefined)?.default ?? mod.default
    if (value === null || typeof value !== 'object') {
      results.push({ error: 'must default-export createSync({...}) or a plain object' })
      continue
    }
    const def = value as Record<string, unknown>
    const extra: Record<string, unknown> = {}
    for (const key of KEPT) if (def[key] !== undefined) extra[key] = JSON.parse(JSON.stringify(def[key]))
    results.push({
      definition: {
        description: def.description,
        frequency: def.frequency,
        models: JSON.parse(JSON.stringify(def.models ?? null)) as unknown,
        autoStart: def.autoStart,
        syncType: def.syncType,
        trackDeletes: def.trackDeletes,
        hasExec: typeof def.exec === 'function',
      },
      extra,
    })
  } catch (err) {
    results.push({ error: `could not be loaded: ${(err as Error).message}` })
  }
}
parentPort!.postMessage(results)
