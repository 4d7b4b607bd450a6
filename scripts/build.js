// `npm run build`, and `prepare` (so `npm install` and `npm ci` run it): compiles src/ to dist/ with
// tsconfig.build.json, bundles src/main.ts into dist/cli.js (and its chunks) for the short-lived
// commands, and stamps dist/ with the sources it came from (bin/source-stamp.js). Without
// TypeScript installed (a production install, --omit=dev) there is nothing to compile with, and
// the server runs its sources through tsx as before.
import { execFileSync } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

import { sourceStamp, STAMP_FILE } from '../bin/source-stamp.js'

const root = path.join(import.meta.dirname, '..')
let tsc
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
} catch {
  console.log('syncstore: TypeScript is not installed, so dist/ is not built; the sources run through tsx.')
  process.exit(0)
}
// Taken before compiling: a source edited meanwhile no longer matches the stamp.
const stamp = sourceStamp()
rmSync(path.join(root, 'dist'), { recursive: true, force: true })
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' })

// The commands other than `serve` bundled: loading tsc's ~170 modules and the ~1,500 files of their
// packages (typebox and kysely alone are ~1,000) took 750 ms of every command's start (README,
// Performance). Split into chunks, so the server's half (`serve` is a dynamic import) stays out of
// a command's way and no module is wrapped for lazy evaluation: in one file, esbuild turned every
// module's constants into variables set by an init function, and a server run from it spent about
// 45% more CPU on a GET /records page (not shown to be why). `serve` and worker threads keep tsc's
// modules (bin/syncstore.js, src/paths.ts); chunks sit in dist/ itself, at the depth src/paths.ts
// expects.
// Left as imports: packages with native or wasm parts or worker threads of their own, and those
// sync functions share with syncstore (zod, soap, unzipper).
const { build } = await import('esbuild')
await build({
  entryPoints: { cli: path.join(root, 'src', 'main.ts') },
  outdir: path.join(root, 'dist'),
  chunkNames: 'cli-[name]-[hash]',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.19',
  sourcemap: true,
  logLevel: 'warning',
  external: [
    '@electric-sql/pglite',
    'esbuild',
    'pg',
    'pg-native',
    'pino',
    'pino-pretty',
    'soap',
    'tsx',
    'unzipper',
    'zod',
    'zod/*',
    'zod-to-json-schema',
  ],
  // The bundled CommonJS packages call require(); ES modules have none of their own.
  banner: {
    js: "import { createRequire as __syncstoreRequire } from 'node:module';\nconst require = __syncstoreRequire(import.meta.url);",
  },
})
writeFileSync(STAMP_FILE, stamp)
