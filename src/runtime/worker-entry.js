// The first module of every worker thread that touches user code (sync definitions). It makes
// TypeScript loadable (tsx) and makes `import ... from 'syncstore'` resolve to this package from a
// definition file anywhere on disk, for ES modules (a resolve hook) and for CommonJS files (a
// folder without "type": "module"), then hands over to the task module named in workerData.
import Module, { register } from 'node:module'
import { fileURLToPath } from 'node:url'
import { workerData } from 'node:worker_threads'

// Registered before tsx, so tsx resolves first and passes bare "syncstore" on to this hook.
register('./resolve-hooks.js', import.meta.url)
const { register: registerTsx } = await import('tsx/esm/api')
registerTsx()
// And for CommonJS: a .ts file in a folder without "type": "module" is loaded by require(), which
// without tsx's hooks falls back to require(esm) of the same file and fails ("in a cycle").
const { register: registerTsxCjs } = await import('tsx/cjs/api')
registerTsxCjs()

const INDEX = fileURLToPath(new URL('../index.ts', import.meta.url))
const resolveFilename = Module._resolveFilename
Module._resolveFilename = function (request, ...rest) {
  return resolveFilename.call(this, request === 'syncstore' ? INDEX : request, ...rest)
}

await import(workerData.task)
