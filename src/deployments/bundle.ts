import { createHash } from 'node:crypto'
import path from 'node:path'

import { build } from 'esbuild'

/** One sync file and everything it imports, as one ES module, named by the sha256 of its code. */
export interface Bundle {
  hash: string
  code: string
}

/**
 * Imports left to the worker that runs the bundle: `syncstore` (resolved to this package there)
 * and Node's built-in modules (esbuild leaves those alone on the node platform). Everything else
 * the file imports, relative or an installed package, is inlined.
 */
const PROVIDED = ['syncstore']

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
 * so the same sources give the same hash wherever they are deployed from.
 */
export async function bundleSync(file: string, root: string): Promise<Bundle> {
  let code: string
  try {
    const result = await build({
      entryPoints: [file],
      absWorkingDir: path.resolve(root),
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      external: PROVIDED,
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
  return { hash: createHash('sha256').update(code).digest('hex'), code }
}
