#!/usr/bin/env node
// The `syncstore` command. It runs the compiled JavaScript in dist/ (built by `npm install`, see
// scripts/build.js) while dist/ matches the sources, and the TypeScript sources through tsx
// otherwise (a checkout being edited, or an install without TypeScript). Compiled, the server
// starts sooner and holds less memory: no module hooks thread, nothing transformed at start.
import { existsSync, readFileSync } from 'node:fs'

import { sourceStamp, STAMP_FILE } from './source-stamp.js'

const compiled = existsSync(STAMP_FILE) && readFileSync(STAMP_FILE, 'utf8') === sourceStamp()
let main
if (compiled) {
  // Commands run the bundle (scripts/build.js), which starts in 0.65-0.73 s where tsc's modules
  // take 1.02-1.03 s. The server runs tsc's modules: it starts once, and bundled it spent more CPU
  // on each GET /records (2.5-2.6 ms against 1.7-1.8 ms for a page of 100, third round of 1,000).
  ;({ main } = await import(process.argv[2] === 'serve' ? '../dist/main.js' : '../dist/cli.js'))
} else {
  const { register } = await import('tsx/esm/api')
  register()
  ;({ main } = await import('../src/main.ts'))
}
try {
  // For `serve`, 0 means "listening"; the process then lives until a signal and exits through
  // its shutdown handler. Any other code (bad configuration, busy database) is the exit code.
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  console.error(err)
  process.exitCode = 1
}
