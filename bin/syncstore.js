#!/usr/bin/env node
// The `syncstore` command. TypeScript sources run through tsx, which also loads users' sync
// definitions written in TypeScript; there is no separate build step to forget.
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../src/main.ts')
try {
  // For `serve`, 0 means "listening"; the process then lives until a signal and exits through
  // its shutdown handler. Any other code (bad configuration, busy database) is the exit code.
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  console.error(err)
  process.exitCode = 1
}
