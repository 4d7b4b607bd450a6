import { expect } from 'vitest'

import type { CliResult } from './process.ts'

/**
 * A CLI failure as users see it: the exit code, nothing on stdout, and exactly one `error: ...`
 * line on stderr (no stack trace) that matches `pattern`. Returns that line.
 */
export function expectOneLineError(result: CliResult, code: number, pattern: RegExp): string {
  expect(result.code, result.stderr).toBe(code)
  expect(result.stdout).toBe('')
  const lines = result.stderr.trimEnd().split('\n')
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatch(/^error: /)
  expect(lines[0]).toMatch(pattern)
  return lines[0]!
}
