import { createHash } from 'node:crypto'

import { Ajv } from 'ajv'

import type { FieldIssue } from '../errors.ts'
import { type CheckedDefinition, checkDefinition } from '../syncs/definitions.ts'
import type { Bundle } from './bundle.ts'
import { loadInWorker } from './folder.ts'

/**
 * What Nango's CLI (`nango deploy`, 0.71.x: packages/cli/lib/zeroYaml/deploy.ts) sends for each
 * createSync file, made into what syncstore deploys: the compiled bundle, checked by loading it in
 * a worker as a folder's files are, with the settings the CLI read from the file.
 */

/** One `flowConfigs[]` entry, as far as syncstore reads it (the route's schema has every field). */
export interface NangoFlow {
  type: 'sync' | 'action'
  syncName: string
  providerConfigKey: string
  models: string[]
  runs: string | null
  version?: string
  auto_start?: boolean
  track_deletes?: boolean
  sync_type?: 'incremental' | 'full'
  metadata?: { description?: string; scopes?: string[] }
  endpoints?: unknown[]
  webhookSubscriptions?: string[]
  models_json_schema?: { definitions: Record<string, Record<string, unknown>> }
  features?: string[]
  fileBody: { js: string; ts: string }
}

/** A sync ready to be written: its bundle, its checked settings, and what is kept beside them. */
export interface PreparedSync extends CheckedDefinition {
  /** the file it came from, as Nango names it (`<integration>/syncs/<name>.ts`) */
  file: string
  /** the TypeScript the CLI sent beside its build */
  source: string
  bundle: Bundle
  /** Nango's fields kept and shown (endpoints, scopes, metadata schema...), without `version` */
  extra: Record<string, unknown>
  /** the version the CLI asked for (its --version, or the file's `version`), if any */
  version: string | undefined
  /** the model names, in the CLI's order, for the reply */
  modelNames: string[]
}

/**
 * The CLI compiles each file to CommonJS (esbuild, `format: 'cjs'`): `module.exports.default` is
 * the definition, and the packages a function may import (`zod`, and `nango`, `url`, `crypto`...)
 * stay `require(...)` calls. What a run imports is an ES module whose default export is the
 * definition, so the bundle is wrapped: `module`, `exports` and a `require` (whose `nango`, `zod`,
 * `soap` and `unzipper` resolve to syncstore's in the worker: src/runtime/worker-entry.js) are made
 * for it, all on its first line, so the CLI's inline source map still lines up.
 */
function moduleFromCommonJs(js: string): Bundle {
  const code =
    "import { createRequire as __ssRequire } from 'node:module'; " +
    "import { fileURLToPath as __ssPath } from 'node:url'; " +
    'const module = { exports: {} }; ' +
    '(function (exports, require, module, __filename, __dirname) {' +
    js +
    '\n}).call(module.exports, module.exports, __ssRequire(import.meta.url), module, ' +
    "__ssPath(import.meta.url), __ssPath(new URL('.', import.meta.url)));\n" +
    'export default module.exports.default ?? module.exports;\n'
  return { hash: createHash('sha256').update(code).digest('hex'), code }
}

/**
 * Prepares every flow, or says what is wrong with each that cannot be deployed (with its place in
 * the body): a bundle that does not load or is not a sync, or settings syncstore refuses (as it
 * refuses them in a folder).
 */
export async function prepareFlows(
  flows: readonly NangoFlow[],
): Promise<{ syncs: PreparedSync[]; problems: FieldIssue[] }> {
  const problems: FieldIssue[] = []
  const problem = (i: number, message: string) =>
    problems.push({ code: 'custom', message, path: ['flowConfigs', String(i)] })
  const seen = new Set<string>()
  flows.forEach((flow, i) => {
    const key = `${flow.providerConfigKey}/${flow.syncName}`
    if (seen.has(key)) problem(i, `${key} is in flowConfigs twice`)
    seen.add(key)
  })
  if (problems.length > 0) return { syncs: [], problems }

  const bundles = flows.map((flow) => moduleFromCommonJs(flow.fileBody.js))
  const loaded = await loadInWorker(bundles)
  const schemaChecker = new Ajv({ strict: false })
  const syncs: PreparedSync[] = []
  flows.forEach((flow, i) => {
    const where = { integration: flow.providerConfigKey, name: flow.syncName }
    const result = loaded[i]!
    if ('error' in result) return problem(i, `${where.integration}/${where.name} ${result.error}`)
    const checked = checkDefinition(
      where,
      {
        // The settings as the CLI read them from the file (and as Nango stores them); the bundle
        // says only whether it loads and has an exec.
        description: flow.metadata?.description,
        frequency: flow.runs,
        models: modelsOf(flow) ?? result.definition.models,
        autoStart: flow.auto_start,
        syncType: flow.sync_type,
        trackDeletes: flow.track_deletes,
        hasExec: result.definition.hasExec,
      },
      schemaChecker,
    )
    if (checked.problems) {
      return problem(i, `${where.integration}/${where.name}: ${checked.problems.join('; ')}`)
    }
    const { version: _fromFile, ...extra } = result.extra
    if (flow.features?.length) extra.features = flow.features
    syncs.push({
      ...checked.definition,
      file: `${where.integration}/syncs/${where.name}.ts`,
      source: flow.fileBody.ts,
      bundle: bundles[i]!,
      extra,
      version: flow.version || undefined,
      modelNames: flow.models,
    })
  })
  return { syncs, problems }
}

/**
 * The models' JSON Schemas the CLI converted from zod (draft-07, one self-contained schema per
 * model, as syncstore converts them), or undefined when it sent none (an older CLI).
 */
function modelsOf(flow: NangoFlow): Record<string, unknown> | undefined {
  const definitions = flow.models_json_schema?.definitions
  if (!definitions) return undefined
  return Object.fromEntries(flow.models.map((name) => [name, definitions[name]]))
}
