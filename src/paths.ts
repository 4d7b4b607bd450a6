import path from 'node:path'

// Where the package's files are, taken from this module at the top of src/: its URL is in src/ when
// the sources run, in dist/ when tsc's output runs, and a chunk in dist/ when the commands' bundle
// (scripts/build.js) runs, one folder below the package root in every case. A path relative to a
// deeper module would miss in the bundle, where a module has the URL of the chunk it went into.

/** The package's root folder (migrations/, examples/ and package.json are in it). */
export const PACKAGE_ROOT = new URL('../', import.meta.url)

/**
 * A module of this package by its path under src/ without extension (`runtime/sync.worker`), as the
 * running code has it: the `.ts` source, or tsc's `.js` in dist/ (which the bundle leaves in place
 * for worker threads and processes, each loading its own modules).
 */
export function ownModule(name: string): URL {
  return new URL(`${name}${path.extname(import.meta.url)}`, new URL('./', import.meta.url))
}

/** The first module of every worker thread (deployment checks) and process (sync runs) that runs sync code (see its header). */
export const WORKER_ENTRY = new URL('./runtime/worker-entry.js', import.meta.url)
