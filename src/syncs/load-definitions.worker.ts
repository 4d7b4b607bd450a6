import { pathToFileURL } from 'node:url'
import { parentPort, workerData } from 'node:worker_threads'

import type { DefinitionFile, RawDefinition } from './definitions.ts'

/**
 * Worker task: imports each definition file (its top-level code runs here, never in the server)
 * and sends back what can be cloned: everything but `exec`, which stays in the file.
 */
const files = (workerData as { files: DefinitionFile[] }).files
const results: RawDefinition[] = []
for (const file of files) {
  try {
    const mod = (await import(pathToFileURL(file.file).href)) as { default?: unknown }
    // A CommonJS file's `export default` arrives as { default: ... } under another default.
    const value = (mod.default as { default?: unknown } | undefined)?.default ?? mod.default
    if (value === null || typeof value !== 'object') {
      results.push({ ...file, error: 'must default-export createSync({...}) or a plain object' })
      continue
    }
    const def = value as Record<string, unknown>
    results.push({
      ...file,
      definition: {
        description: def.description,
        frequency: def.frequency,
        models: JSON.parse(JSON.stringify(def.models ?? null)) as unknown,
        autoStart: def.autoStart,
        syncType: def.syncType,
        trackDeletes: def.trackDeletes,
        hasExec: typeof def.exec === 'function',
      },
    })
  } catch (err) {
    results.push({ ...file, error: `could not be loaded: ${(err as Error).message}` })
  }
}
parentPort!.postMessage(results)
