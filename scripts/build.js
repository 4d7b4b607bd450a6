// `npm run build`, and `prepare` (so `npm install` and `npm ci` run it): compiles src/ to dist/ with
// tsconfig.build.json and stamps it with the sources it came from (bin/source-stamp.js). Without
// TypeScript installed (a production install, --omit=dev) there is nothing to compile with, and the
// server runs its sources through tsx as before.
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
writeFileSync(STAMP_FILE, stamp)
