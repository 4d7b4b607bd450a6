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
  // Commands run the bundle (scripts/build.js): `environments list` takes 0.59-0.64 s where tsc's
  // modules take 1.04-1.33 s. The server runs tsc's modules: it starts once, and from a bundle in
  // one file it spent more CPU on each GET /records (see scripts/build.js).
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
