import { readdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { Worker } from 'node:worker_threads'

import { Ajv } from 'ajv'
import { Type } from 'typebox'

import { validateJson } from '../validation.ts'
import { parseFrequency } from '../scheduler/frequency.ts'

/**
 * Sync definitions live in files: `<integrations dir>/<provider_config_key>/syncs/<name>.{ts,js,mjs}`,
 * each default-exporting createSync({...}) or a plain object. An optional
 * `<provider_config_key>/integration.json` describes the external API (see IntegrationConfig).
 */
export interface SyncDefinition {
  integration: string
  name: string
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
}

const IntegrationConfigSchema = Type.Object(
  {
    provider: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    display_name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    /** Where nango.proxy / nango.get send requests */
    base_url: Type.Optional(Type.String({ format: 'uri' })),
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
  },
  { additionalProperties: false },
)

export interface IntegrationConfig {
  provider?: string
  display_name?: string
  base_url?: string
  auth?: { in: 'header' | 'query'; name: string; format?: string }
}

export interface Integration {
  key: string
  config: IntegrationConfig
  syncs: SyncDefinition[]
  /** when the folder was created, for GET /integrations */
  createdAt: Date
  updatedAt: Date
}

export interface Definitions {
  integrations: Map<string, Integration>
  find(integration: string, name: string): SyncDefinition | undefined
}

export class DefinitionError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid sync definitions:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'DefinitionError'
  }
}

export interface DefinitionFile {
  integration: string
  name: string
  file: string
}

/** What the loader worker sends back for one file. */
export type RawDefinition = DefinitionFile &
  (
    | { error: string; definition?: undefined }
    | { error?: undefined; definition: Record<string, unknown> & { hasExec: boolean } }
  )

const INTEGRATION_KEY = /^[a-zA-Z0-9~:.@ _-]{1,255}$/
const SYNC_NAME = /^[a-zA-Z0-9_-]{1,255}$/
const MODEL_NAME = /^[A-Z][a-zA-Z0-9_]+$/
const EXTENSIONS = ['.ts', '.js', '.mjs']

export function emptyDefinitions(): Definitions {
  return buildDefinitions(new Map())
}

function buildDefinitions(integrations: Map<string, Integration>): Definitions {
  return {
    integrations,
    find: (integration, name) => integrations.get(integration)?.syncs.find((s) => s.name === name),
  }
}

/**
 * Reads every definition under the given folders (a missing folder means none); throws
 * DefinitionError naming each bad file and what is wrong with it.
 */
export async function loadDefinitions(dirs: readonly string[]): Promise<Definitions> {
  const problems: string[] = []
  const integrations = new Map<string, Integration>()
  const files: DefinitionFile[] = []
  for (const dir of dirs) {
    let entries: string[] = []
    try {
      entries = (await readdir(dir, { withFileTypes: true }))
        .filter((e) => e.isDirectory())
        .map((e) => e.name)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    for (const key of entries.sort()) {
      if (key.startsWith('.') || key === 'node_modules') continue
      const folder = path.join(dir, key)
      if (!INTEGRATION_KEY.test(key)) {
        problems.push(`${folder}: "${key}" is not a valid provider config key`)
        continue
      }
      if (integrations.has(key)) {
        problems.push(`${folder}: integration "${key}" is defined in two integration folders`)
        continue
      }
      const info = await stat(folder)
      integrations.set(key, {
        key,
        config: await readIntegrationConfig(folder, problems),
        syncs: [],
        createdAt: info.birthtime.getTime() > 0 ? info.birthtime : info.mtime,
        updatedAt: info.mtime,
      })
      files.push(...(await syncFiles(folder, key, problems)))
    }
  }
  const schemas = new Ajv({ strict: false })
  for (const raw of await importInWorker(files)) {
    const def = validate(raw, problems, schemas)
    if (def) integrations.get(def.integration)!.syncs.push(def)
  }
  if (problems.length > 0) throw new DefinitionError(problems)
  return buildDefinitions(integrations)
}

async function readIntegrationConfig(folder: string, problems: string[]): Promise<IntegrationConfig> {
  const file = path.join(folder, 'integration.json')
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    return {}
  }
  try {
    const config = JSON.parse(text) as unknown
    const issues = validateJson(IntegrationConfigSchema, config)
    if (issues[0]) problems.push(`${file}: ${issues[0].path.join('.') || '(root)'}: ${issues[0].message}`)
    return config as IntegrationConfig
  } catch (err) {
    problems.push(`${file}: not valid JSON: ${(err as Error).message}`)
    return {}
  }
}

async function syncFiles(folder: string, integration: string, problems: string[]): Promise<DefinitionFile[]> {
  let names: string[]
  try {
    names = await readdir(path.join(folder, 'syncs'))
  } catch {
    return []
  }
  const byName = new Map<string, string>()
  for (const entry of names.sort()) {
    const ext = path.extname(entry)
    if (!EXTENSIONS.includes(ext) || entry.endsWith('.d.ts')) continue
    const file = path.join(folder, 'syncs', entry)
    const name = path.basename(entry, ext)
    if (!SYNC_NAME.test(name)) {
      problems.push(`${file}: sync name "${name}" may only use letters, digits, "_" and "-"`)
    } else if (byName.has(name)) {
      problems.push(`${file}: sync "${name}" is also defined in ${byName.get(name)}`)
    } else {
      byName.set(name, file)
    }
  }
  return [...byName].map(([name, file]) => ({ integration, name, file }))
}

/** Imports the files in a worker thread, so their top-level code never runs in the server. */
function importInWorker(files: DefinitionFile[]): Promise<RawDefinition[]> {
  if (files.length === 0) return Promise.resolve([])
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('../runtime/worker-entry.js', import.meta.url), {
      workerData: { task: new URL('./load-definitions.worker.ts', import.meta.url).href, files },
    })
    worker.once('message', (results: RawDefinition[]) => {
      resolve(results)
      void worker.terminate()
    })
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`definition loader exited with code ${code}`)))
  })
}

function validate(raw: RawDefinition, problems: string[], schemaChecker: Ajv): SyncDefinition | undefined {
  const where = raw.file
  if (raw.error !== undefined) {
    problems.push(`${where}: ${raw.error}`)
    return undefined
  }
  const d = raw.definition
  const before = problems.length
  const problem = (message: string) => problems.push(`${where}: ${message}`)
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
  if (problems.length > before) return undefined
  return {
    integration: raw.integration,
    name: raw.name,
    file: raw.file,
    description: d.description as string,
    frequency: d.frequency as string,
    frequencyMs: frequency!.ms,
    models: models as Record<string, object>,
    autoStart: d.autoStart !== false,
    syncType: (d.syncType as 'full' | 'incremental' | undefined) ?? 'full',
    trackDeletes: d.trackDeletes === true,
  }
}
