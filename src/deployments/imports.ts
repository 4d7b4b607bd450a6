import { readFile } from 'node:fs/promises'
import { createRequire, isBuiltin } from 'node:module'
import path from 'node:path'

import type { Plugin } from 'esbuild'

/**
 * What a sync file may import, decided while it is bundled (an esbuild plugin over its bare
 * imports and those of its helpers; packages' own imports are theirs).
 *
 * A file that imports `nango` is written for Nango, and may import exactly what Nango's CLI lets
 * it import (its compile step refuses anything else): `nango`, `nango/experimental`, `zod`, `url`,
 * `crypto` (and their `node:` forms), `soap`, `unzipper`, `botbuilder`. syncstore's own format
 * (`syncstore`, or a plain object) keeps what it always had: Node's built-ins and any package
 * installed beside the files, bundled in.
 *
 * Where each one comes from:
 * - `syncstore`, `nango`, `nango/experimental`: always syncstore's, left as imports that the
 *   worker resolves (src/runtime/resolve-hooks.js, which says why even an installed `nango`);
 * - `zod` (and its subpaths), `soap`, `unzipper`: syncstore's own, left as imports the worker
 *   resolves, so nothing need be installed beside a Nango folder; but a copy the team installed
 *   wins when it is another major version than syncstore's (zod 3, say), and is bundled in. A
 *   copy of the same major version is not: semver says syncstore's serves it, and bundling zod
 *   (190 KB) into every sync of a folder made 1,396 template syncs take minutes to deploy and
 *   exhaust the loader's memory (each bundle its own zod). Nango's runner, likewise, runs every
 *   function on its own zod 4 whatever the team installed;
 * - any other package the team installed beside its files: that copy, bundled in;
 * - `botbuilder`: only when the team installs it (syncstore does not carry the Bot Framework).
 */

const NANGO_IMPORTS = [
  'nango',
  'nango/experimental',
  'zod',
  'url',
  'node:url',
  'crypto',
  'node:crypto',
  'soap',
  'unzipper',
  'botbuilder',
]
/** Also Nango's `zod` package, so allowed: its versioned entry points (zod/v3, zod/v4, zod/mini). */
const ZOD_SUBPATH = /^zod\/[a-z0-9/-]+$/
/** Resolved by the worker to this package's modules. */
const SYNCSTORE_MODULES = new Set(['syncstore', 'nango', 'nango/experimental'])
/** Resolved by the worker to syncstore's installed copies (the same list as resolve-hooks.js). */
const PROVIDED = /^(zod(\/.*)?|soap|unzipper)$/

/** A bare import of the team's files, and the file (relative to the deployed folder) that has it. */
interface Found {
  specifier: string
  importer: string
}

export interface ImportsSeen {
  /** the file or one of its helpers imports `nango`: Nango's rules apply */
  nango: boolean
  /** imports Nango does not allow */
  notAllowed: Found[]
  /** packages neither installed beside the files nor provided by syncstore */
  missing: Found[]
}

/** Marks the resolution this plugin asks esbuild for, so the plugin does not answer it itself. */
const PROBE = { probe: true }

export function importsPlugin(root: string, seen: ImportsSeen): Plugin {
  return {
    name: 'syncstore-imports',
    setup(build) {
      const majors: Majors = new Map()
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        // Our probe below resolves the default way.
        if (args.pluginData === PROBE) return undefined
        const specifier = args.path
        const probe = () =>
          build.resolve(specifier, {
            kind: args.kind,
            importer: args.importer,
            resolveDir: args.resolveDir,
            pluginData: PROBE,
          })
        // A package's own imports are its business. One it cannot resolve (an optional peer, as
        // unzipper's S3 client) stays an import: it fails only if that code runs, as in Node.
        if (args.importer.includes(`${path.sep}node_modules${path.sep}`)) {
          if (isBuiltin(specifier) || (await probe()).errors.length === 0) return undefined
          return { path: specifier, external: true }
        }
        const found = { specifier, importer: path.relative(root, args.importer) }
        if (SYNCSTORE_MODULES.has(specifier)) {
          if (specifier !== 'syncstore') seen.nango = true
          return { path: specifier, external: true }
        }
        const allowed = NANGO_IMPORTS.includes(specifier) || ZOD_SUBPATH.test(specifier)
        if (!allowed) seen.notAllowed.push(found)
        // esbuild leaves Node's built-ins as imports on the node platform.
        if (isBuiltin(specifier)) return undefined
        const installed = await probe()
        if (installed.errors.length === 0) {
          const ours = PROVIDED.test(specifier) && (await sameMajor(majors, specifier, installed.path))
          return ours ? { path: specifier, external: true } : undefined
        }
        if (!PROVIDED.test(specifier)) seen.missing.push(found)
        return { path: specifier, external: true }
      })
    },
  }
}

const ownRequire = createRequire(import.meta.url)

/** package.json -> its major version, read once per bundle */
type Majors = Map<string, Promise<string | undefined>>

/** The major version of the package `name` whose file `file` is, from its package.json. */
function majorOf(majors: Majors, name: string, file: string): Promise<string | undefined> {
  const marker = `${path.sep}node_modules${path.sep}${name}${path.sep}`
  const at = file.lastIndexOf(marker)
  if (at < 0) return Promise.resolve(undefined)
  const manifest = path.join(file.slice(0, at + marker.length), 'package.json')
  let major = majors.get(manifest)
  if (!major) {
    major = readFile(manifest, 'utf8').then(
      (text) => (JSON.parse(text) as { version?: string }).version?.split('.')[0],
      () => undefined,
    )
    majors.set(manifest, major)
  }
  return major
}

/** Whether the team's copy of a package syncstore provides is the same major version as syncstore's. */
async function sameMajor(majors: Majors, specifier: string, installedFile: string): Promise<boolean> {
  const name = specifier.split('/')[0]!
  const theirs = await majorOf(majors, name, installedFile)
  const ours = await majorOf(majors, name, ownRequire.resolve(`${name}/package.json`))
  return theirs !== undefined && theirs === ours
}

/** Why the bundle cannot be deployed, or undefined. */
export function importProblem(seen: ImportsSeen, entry: string): string | undefined {
  const where = (f: Found) =>
    f.importer === entry ? `"${f.specifier}"` : `"${f.specifier}" (in ${f.importer})`
  const list = (found: Found[]) => [...new Set(found.map(where))].join(', ')
  if (seen.nango && seen.notAllowed.length > 0) {
    return (
      `imports ${list(seen.notAllowed)}, which sync functions cannot import ` +
      '(allowed: nango, zod, url, crypto, soap, unzipper, botbuilder)'
    )
  }
  if (seen.missing.length > 0) {
    return `imports ${list(seen.missing)}, which is not installed beside the integrations (npm install it there)`
  }
  return undefined
}
