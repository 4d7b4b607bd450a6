// The first module of every worker thread or child process that touches user code (sync
// definitions). It makes TypeScript loadable (tsx) where needed and makes the modules syncstore
// provides to sync files ("syncstore", "nango", "zod"... see resolve-hooks.js) resolve from a file
// anywhere on disk, for ES modules (a resolve hook) and for CommonJS (require), then hands over to
// the task module named in workerData (a thread's) or in SYNCSTORE_WORKER (a child process's, JSON).
import Module, { register } from 'node:module'
import { fileURLToPath } from 'node:url'
import { workerData as threadData } from 'node:worker_threads'

const workerData = threadData ?? JSON.parse(process.env.SYNCSTORE_WORKER)

register('./resolve-hooks.js', import.meta.url)
// TypeScript is needed for a task run from the sources (`.ts`), or one that loads the team's files
// (`typescript`); a compiled sync worker runs bundles, which are JavaScript, and so saves the module
// hooks thread tsx would start (about 30 MB). Registered after ours, tsx resolves first and passes
// the bare specifiers it does not know on to our hook.
if (workerData.task.endsWith('.ts') || workerData.typescript) {
  const { register: registerTsx } = await import('tsx/esm/api')
  registerTsx()
  // And for CommonJS: a .ts file in a folder without "type": "module" is loaded by require(), which
  // without tsx's hooks falls back to require(esm) of the same file and fails ("in a cycle").
  const { register: registerTsxCjs } = await import('tsx/cjs/api')
  registerTsxCjs()
}

const { OWN, FROM_SYNCSTORE } = await import('./resolve-hooks.js')
// Looked up from here, as if this package required them.
const OWN_PATHS = [fileURLToPath(new URL('.', import.meta.url))]
const resolveFilename = Module._resolveFilename
Module._resolveFilename = function (request, parent, isMain, options) {
  if (Object.hasOwn(OWN, request)) return fileURLToPath(OWN[request])
  if (FROM_SYNCSTORE.test(request)) {
    return resolveFilename.call(this, request, parent, isMain, { ...options, paths: OWN_PATHS })
  }
  return resolveFilename.call(this, request, parent, isMain, options)
}

await import(workerData.task)
