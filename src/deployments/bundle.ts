import { createHash } from 'node:crypto'
import { realpath } from 'node:fs/promises'
import path from 'node:path'

import { build } from 'esbuild'

import { importProblem, importsPlugin, type ImportsSeen } from './imports.ts'

/** One sync file and everything it imports, as one ES module, named by the sha256 of its code. */
export interface Bundle {
  hash: string
  code: string
}

/**
 * A bundled module that reaches CommonJS code calls `require` for Node's built-ins; an ES module
 * has none, so the bundle makes one first.
 */
const REQUIRE_SHIM =
  "import { createRequire as __syncstoreCreateRequire } from 'node:module';\n" +
  'const require = __syncstoreCreateRequire(import.meta.url);'

export class BundleError extends Error {
  override name = 'BundleError'
}

/**
 * Bundles `file` with esbuild. Paths in the output are relative to `root` (the deployed folder),
 * so the same sources give the same hash wherever they are deployed from. The file's relative
 * imports and the packages installed beside it are inlined; the modules syncstore provides and
 * Node's built-ins stay imports, resolved by the worker that loads the bundle (imports.ts says
 * which, and what a file written for Nango may import).
 */
export async function bundleSync(file: string, root: string): Promise<Bundle> {
  let code: string
  const seen: ImportsSeen = { nango: false, notAllowed: [], missing: [] }
  // esbuild names importers by their real path (symlinks followed).
  const realRoot = await realpath(root)
  try {
    const result = await build({
      entryPoints: [file],
      absWorkingDir: path.resolve(root),
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      plugins: [importsPlugin(realRoot, seen)],
      banner: { js: REQUIRE_SHIM },
      logLevel: 'silent',
      // Stack traces of a failing run name the team's own functions.
      keepNames: true,
    })
    code = result.outputFiles[0]!.text
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] })
      .errors
    if (!errors?.length) throw err
    const first = errors[0]!
    const where = first.location ? ` (${first.location.file}:${first.location.line})` : ''
    throw new BundleError(`could not be bundled: ${first.text}${where}`)
  }
  const problem = importProblem(seen, path.relative(realRoot, await realpath(file)))
  if (problem) throw new BundleError(problem)
  return { hash: createHash('sha256').update(code).digest('hex'), code }
}
