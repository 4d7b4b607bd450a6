import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Worker } from 'node:worker_threads'

import { Ajv } from 'ajv'

import { ownModule, WORKER_ENTRY } from '../paths.ts'
import {
  type CheckedDefinition,
  checkDefinition,
  INTEGRATION_KEY,
  type IntegrationConfig,
  integrationConfigProblem,
  SYNC_NAME,
} from '../syncs/definitions.ts'
import { type Bundle, BundleError, bundleSync } from './bundle.ts'
import type { LoadResult } from './load.worker.ts'

/**
 * Reading an integrations folder for a deployment: each integration folder, its integration.json,
 * and each sync file bundled with its imports and checked by loading the bundle in a worker.
 */
export interface FolderSync extends CheckedDefinition {
  /** relative to the deployed folder */
  file: string
  /** the file's source, before bundling */
  source: string
  bundle: Bundle
  extra: Record<string, unknown>
}

export interface FolderIntegration {
  key: string
  provider: string
  displayName: string
  config: IntegrationConfig
  syncs: FolderSync[]
}

/**
 * A file that cannot be deployed, and why. With `integration` (and `name`), what is deployed under
 * that integration (or that sync) stays as it was: a broken file never replaces a working version.
 * With `wholeFolder`, nothing of that folder was read, so nothing deployed is removed.
 */
export interface Refusal {
  file: string
  reason: string
  integration?: string
  name?: string
  wholeFolder?: boolean
}

export interface Folder {
  integrations: Map<string, FolderIntegration>
  refused: Refusal[]
}

const EXTENSIONS = ['.ts', '.js', '.mjs']
/** Folders that hold no integration: build output, installed packages, tooling (dot-folders too). */
const NOT_INTEGRATIONS = new Set(['node_modules', 'build', 'dist'])

/**
 * Nango's older format (nango.yaml, and `fetchData` functions without their settings) is not
 * loaded; Nango's CLI converts a folder to the current format in one command.
 */
const OLD_FORMAT =
  "Nango's old nango.yaml format, which syncstore does not load: convert the folder with " +
  '`npx nango migrate-to-zero-yaml` (run inside it)'

/**
 * What loading some bundles found when they were deployed before: a bundle's definition is fixed
 * by its code, so a deployment need not load a bundle whose hash is already deployed.
 */
export type KnownBundles = (hashes: readonly string[]) => Promise<Map<string, LoadResult>>

/** Reads the integrations in `dirs` (a missing folder holds none). */
export async function readFolders(dirs: readonly string[], known?: KnownBundles): Promise<Folder> {
  const integrations = new Map<string, FolderIntegration>()
  const refused: Refusal[] = []
  const pending: { integration: FolderIntegration; name: string; file: string; root: string }[] = []
  for (const dir of dirs) {
    const yaml = path.join(dir, 'nango.yaml')
    if (await isFile(yaml)) {
      refused.push({ file: yaml, reason: OLD_FORMAT, wholeFolder: true })
      continue
    }
    for (const key of await integrationFolders(dir)) {
      const folder = path.join(dir, key)
      if (!INTEGRATION_KEY.test(key)) {
        refused.push({ file: folder, reason: `"${key}" is not a valid provider config key` })
        continue
      }
      if (integrations.has(key)) {
        refused.push({ file: folder, reason: `integration "${key}" is in two integration folders` })
        continue
      }
      const config = await readIntegrationConfig(folder)
      if ('reason' in config) {
        refused.push({ file: path.join(folder, 'integration.json'), reason: config.reason, integration: key })
        continue
      }
      const integration: FolderIntegration = {
        key,
        provider: config.provider ?? key,
        displayName: config.display_name ?? key,
        config,
        syncs: [],
      }
      integrations.set(key, integration)
      for (const file of await syncFiles(folder, key, refused)) {
        pending.push({ integration, root: dir, ...file })
      }
    }
  }

  const bundled: { target: (typeof pending)[number]; bundle: Bundle; source: string }[] = []
  for (const target of pending) {
    try {
      const bundle = await bundleSync(target.file, target.root)
      bundled.push({ target, bundle, source: await readFile(target.file, 'utf8') })
    } catch (err) {
      if (!(err instanceof BundleError)) throw err
      refused.push({
        file: target.file,
        reason: err.message,
        integration: target.integration.key,
        name: target.name,
      })
    }
  }
  // Only bundles never deployed are loaded: restarting on an unchanged folder starts no worker.
  const before = known ? await known([...new Set(bundled.map((b) => b.bundle.hash))]) : new Map()
  const unknown = bundled.filter((b) => !before.has(b.bundle.hash))
  const results = await loadInWorker(unknown.map((b) => b.bundle))
  const loaded = new Map(unknown.map((b, i) => [b, results[i]!]))
  const schemaChecker = new Ajv({ strict: false })
  bundled.forEach((entry) => {
    const { target, bundle } = entry
    const where = { integration: target.integration.key, name: target.name }
    const refuse = (reason: string) => refused.push({ file: target.file, reason, ...where })
    const result = before.get(bundle.hash) ?? loaded.get(entry)!
    if ('error' in result) return refuse(result.error)
    const checked = checkDefinition(where, result.definition, schemaChecker)
    if (checked.problems) return refuse(checked.problems.join('; '))
    target.integration.syncs.push({
      ...checked.definition,
      file: path.relative(target.root, target.file),
      source: entry.source,
      bundle,
      extra: result.extra,
    })
  })
  return { integrations, refused }
}

/** The folders in `dir` that may be integrations, symlinked ones included, sorted. */
async function integrationFolders(dir: string): Promise<string[]> {
  let entries
  try {
    entries = await readdir(dir, { withFileTypes: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const keys: string[] = []
  for (const e of entries) {
    if (e.name.startsWith('.') || NOT_INTEGRATIONS.has(e.name)) continue
    const isFolder = e.isDirectory() || (e.isSymbolicLink() && (await isDirectory(path.join(dir, e.name))))
    if (isFolder) keys.push(e.name)
  }
  return keys.sort()
}

async function isDirectory(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  )
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  )
}

async function readIntegrationConfig(folder: string): Promise<IntegrationConfig | { reason: string }> {
  let text: string
  try {
    text = await readFile(path.join(folder, 'integration.json'), 'utf8')
  } catch {
    return {}
  }
  let config: unknown
  try {
    config = JSON.parse(text)
  } catch (err) {
    return { reason: `not valid JSON: ${(err as Error).message}` }
  }
  const problem = integrationConfigProblem(config)
  return problem ? { reason: problem } : (config as IntegrationConfig)
}

async function syncFiles(
  folder: string,
  integration: string,
  refused: Refusal[],
): Promise<{ name: string; file: string }[]> {
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
      refused.push({ file, reason: `sync name "${name}" may only use letters, digits, "_" and "-"` })
    } else if (byName.has(name)) {
      refused.push({
        file,
        reason: `sync "${name}" is also defined in ${byName.get(name)}`,
        integration,
        name,
      })
    } else {
      byName.set(name, file)
    }
  }
  return [...byName].map(([name, file]) => ({ name, file }))
}

/**
 * A worker keeps every module it imported, so one imports at most this many bundles: a bundle
 * with its own copy of a package (a team's zod 3, say) holds about 1 MB of heap once loaded, and
 * 1,396 of them in one worker exhausted its memory.
 */
const BUNDLES_PER_LOADER = 200

function loadFiles(files: string[]): Promise<LoadResult[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_ENTRY, {
      // The task is `.ts` run from the sources, `.js` compiled into dist/; either way the worker loads
      // the team's TypeScript files.
      workerData: {
        task: ownModule('deployments/load.worker').href,
        files,
        typescript: true,
      },
    })
    worker.once('message', (results: LoadResult[]) => {
      resolve(results)
      void worker.terminate()
    })
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`the definition loader exited with code ${code}`)))
  })
}

/** Imports the bundles in worker threads, so their top-level code never runs in the server. */
export async function loadInWorker(bundles: Bundle[]): Promise<LoadResult[]> {
  if (bundles.length === 0) return []
  const dir = await mkdtemp(path.join(os.tmpdir(), 'syncstore-deploy-'))
  try {
    const files = await Promise.all(
      bundles.map(async (b, i) => {
        // One file per entry, not per hash: two identical files must each be checked.
        const file = path.join(dir, `${i}-${b.hash}.mjs`)
        await writeFile(file, b.code)
        return file
      }),
    )
    const results: LoadResult[] = []
    for (let i = 0; i < files.length; i += BUNDLES_PER_LOADER) {
      results.push(...(await loadFiles(files.slice(i, i + BUNDLES_PER_LOADER))))
    }
    return results
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
