// What the compiled dist/ was built from: a hash of every file under src/ (names and contents).
// bin/syncstore.js runs dist/ only while src/ still hashes the same, so an edited checkout never
// runs stale JavaScript: it runs its sources through tsx until `npm run build`. Hashing the ~150
// files took 10-15 ms warm and up to 100 ms on a cold start here, against a start of seconds.
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'

const SOURCE_DIR = path.join(import.meta.dirname, '..', 'src')
export const STAMP_FILE = path.join(import.meta.dirname, '..', 'dist', '.source-stamp')

export function sourceStamp() {
  const hash = createHash('sha256')
  const files = readdirSync(SOURCE_DIR, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort()
  for (const file of files) {
    hash.update(path.relative(SOURCE_DIR, file)).update('\0').update(readFileSync(file))
  }
  return hash.digest('hex')
}
